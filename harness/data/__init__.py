"""Dataset loaders: one module per on-disk format, registered in `harness.registry.DATASETS`."""
