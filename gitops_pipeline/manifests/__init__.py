"""Manifests: load YAML and run `.flux.yaml` generators over a checked-out tree.

Plain Python: no cluster, git or Celery access.
"""
