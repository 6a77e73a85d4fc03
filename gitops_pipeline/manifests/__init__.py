"""Manifests: load YAML from a checked-out tree. Plain Python, no cluster or git access."""
