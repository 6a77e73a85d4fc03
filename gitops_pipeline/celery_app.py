"""The Celery application: queues, routing, reliability settings, logging and presence hooks."""

from __future__ import annotations

import logging
from typing import Any

import redis
from celery import Celery, bootsteps, signals
from kombu.entity import Exchange, Queue

from gitops_pipeline import presence, runtime
from gitops_pipeline.config import Settings
from gitops_pipeline.logsetup import configure_logging, current_pipeline, current_task_id

QUEUES = ("sync", "scan", "automation", "default")
_log = logging.getLogger(__name__)

app = Celery(
    "gitops_pipeline",
    include=[
        "gitops_pipeline.tasks.sync",
        "gitops_pipeline.tasks.scan",
        "gitops_pipeline.tasks.automation",
        "gitops_pipeline.tasks.operations",
    ],
)


def celery_config(settings: Settings) -> dict[str, Any]:
    """Every Celery setting the operator relies on, derived from validated settings."""
    transport = {
        "visibility_timeout": settings.visibility_timeout,
        "global_keyprefix": f"{settings.key_prefix}celery:",
        "socket_timeout": 10,
        "socket_connect_timeout": 3,
    }
    return {
        "broker_url": settings.redis_url,
        "result_backend": settings.redis_url,
        "broker_transport_options": transport,
        "result_backend_transport_options": transport,
        "broker_connection_retry_on_startup": True,
        "task_serializer": "json",
        "result_serializer": "json",
        "event_serializer": "json",
        "accept_content": ["json"],
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "task_soft_time_limit": settings.tasks.soft_time_limit,
        "task_time_limit": settings.tasks.hard_time_limit,
        # One direct exchange per queue, so a message lands in exactly one queue.
        "task_queues": [
            Queue(name, Exchange(name, type="direct"), routing_key=name) for name in QUEUES
        ],
        "task_default_queue": "default",
        "task_default_exchange": "default",
        "task_default_routing_key": "default",
        "task_routes": {f"{queue}.*": {"queue": queue} for queue in QUEUES if queue != "default"},
        "worker_send_task_events": True,
        "task_send_sent_event": True,
        "worker_hijack_root_logger": False,
        "result_expires": 24 * 3600,
        "timezone": "UTC",
        "beat_scheduler": "redbeat.RedBeatScheduler",
        "redbeat_redis_url": settings.redis_url,
        "redbeat_key_prefix": f"{settings.key_prefix}redbeat:",
        "redbeat_lock_timeout": 60,
    }


_bound_to: tuple[str, str] | None = None


def configure(settings: Settings) -> Celery:
    """Point the app (and this process's runtime) at `settings`.

    Celery caches its broker connections, so a process is bound to one Redis and key prefix;
    later calls may change anything else (e.g. the pipelines) but not those two.
    """
    global _bound_to
    binding = (settings.redis_url, settings.key_prefix)
    if _bound_to is not None and _bound_to != binding:
        raise RuntimeError(f"the Celery app is already bound to {_bound_to}, not {binding}")
    _bound_to = binding
    runtime.init(settings)
    app.conf.update(celery_config(settings))
    return app


@signals.setup_logging.connect
def _setup_logging(**_: Any) -> None:
    settings = runtime.settings()
    configure_logging(settings.log_format, settings.log_level)


@signals.task_prerun.connect
def _bind_log_context(
    task_id: str | None = None, args: tuple[Any, ...] | None = None, **_: Any
) -> None:
    """Every log line of a task names its id and, for pipeline tasks, the pipeline.

    Pipeline tasks take the pipeline name as their last positional argument.
    """
    current_task_id.set(task_id or "-")
    last = args[-1] if args else None
    known = {p.name for p in runtime.settings().pipelines}
    current_pipeline.set(last if isinstance(last, str) and last in known else "-")


@signals.task_postrun.connect
def _unbind_log_context(**_: Any) -> None:
    current_task_id.set("-")
    current_pipeline.set("-")


class _Presence(bootsteps.StartStopStep):  # type: ignore[misc]
    """Keeps `<prefix>worker:<hostname>` fresh while this worker consumes (see `presence`).

    It runs on the consumer's timer, like Celery's own event heartbeats, which `start_worker`
    in tests turns off; so readiness does not depend on event heartbeats being enabled.
    """

    requires = ("celery.worker.consumer.tasks:Tasks",)

    def __init__(self, parent: Any, **kwargs: Any) -> None:
        super().__init__(parent, **kwargs)
        self._tref: Any = None

    def start(self, c: Any) -> None:
        self._announce(c)
        self._tref = c.timer.call_repeatedly(presence.INTERVAL, self._announce, (c,))

    def stop(self, c: Any) -> None:
        if self._tref is not None:
            c.timer.cancel(self._tref)
            self._tref = None
        try:
            presence.withdraw(runtime.redis_client(), runtime.keys().prefix, c.hostname)
        except redis.RedisError as exc:
            _log.warning("could not withdraw worker %s: %s", c.hostname, exc)

    shutdown = stop

    def _announce(self, c: Any) -> None:
        queues = [queue.name for queue in c.task_consumer.queues]
        try:
            presence.announce(runtime.redis_client(), runtime.keys().prefix, c.hostname, queues)
        except redis.RedisError as exc:
            _log.warning("could not announce worker %s: %s", c.hostname, exc)


app.steps["consumer"].add(_Presence)
