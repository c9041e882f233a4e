"""Metric modules: each registers a versioned id (`<quantity>@<protocol>`) in `harness.registry.METRICS`."""
