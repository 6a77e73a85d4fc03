"""Behaviour shared by every pipeline task: retry on transient errors, report failures."""

from __future__ import annotations

import logging
from typing import Any

from celery import Task

from gitops_pipeline import events, runtime
from gitops_pipeline.errors import TransientError

log = logging.getLogger(__name__)


def pipeline_of(args: tuple[Any, ...], kwargs: dict[str, Any]) -> str | None:
    """The pipeline a task ran for: its `pipeline` keyword or its last positional argument."""
    pipeline = kwargs.get("pipeline") or (args[-1] if args else None)
    return pipeline if isinstance(pipeline, str) else None


class PipelineTask(Task):  # type: ignore[misc]
    """A task whose last positional argument is the pipeline name.

    Transient errors are retried with bounded exponential backoff; anything that still fails
    becomes an `error` event and a `failed` sync status, so bad input never goes unseen.
    """

    autoretry_for = (TransientError,)
    max_retries = 4
    retry_backoff = 2
    retry_backoff_max = 60
    retry_jitter = True

    def on_failure(
        self,
        exc: BaseException,
        task_id: str,
        args: tuple[Any, ...],
        kwargs: dict[str, Any],
        einfo: Any,
    ) -> None:
        pipeline = pipeline_of(args, kwargs)
        if pipeline is None:
            return
        stage = self.name.rsplit(".", 1)[-1]
        message = f"{stage} failed: {exc}"
        log.error(message)
        client = runtime.redis_client()
        keys = runtime.keys()
        client.hset(keys.sync(pipeline), mapping={"status": "failed", "error": message})
        events.record(client, keys, pipeline, "error", message, stage=stage)
