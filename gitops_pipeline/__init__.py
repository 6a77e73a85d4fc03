"""gitops-pipeline: a GitOps operator in the spirit of Flux v1, on Celery and Redis."""

__version__ = "0.1.0"
