"""Real-service test bed: private Redis, etcd + kube-apiserver and a Docker registry.

Each service runs as a real subprocess in its own session, on free loopback ports, with its
state and logs under a caller-given work directory, and is stopped by process id. Used by the
pytest fixtures (``tests/conftest.py``) and by ``make run`` when no services are configured.

Import the submodules directly (``gitops_pipeline.testbed.redis_server`` etc.); this package
re-exports nothing so that importing it stays cheap.
"""
