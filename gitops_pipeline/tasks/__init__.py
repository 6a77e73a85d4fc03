"""Celery tasks: thin glue between the queues and the domain packages."""
