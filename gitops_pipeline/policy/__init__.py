"""Policy: annotations and tag filters that decide which image a workload should run."""
