"""Method adapters: one module per method, each registered in `harness.registry.METHODS`."""
