"""Garbage collection: delete what this pipeline applied before and Git no longer has.

Candidates come from the pipeline's record of applied objects (kept in Redis by the caller),
so no cluster-wide scan is needed. A candidate is deleted only when the live object still
carries this pipeline's label and the very checksum this pipeline applied; an ignored object,
one marked `sync_only`, or one whose checksum differs (someone else changed or re-applied it)
is kept with a warning.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import NotFoundError, ResourceNotFoundError

from gitops_pipeline.cluster.apply import (
    CHECKSUM_ANNOTATION,
    PIPELINE_LABEL,
    REQUEST_TIMEOUT,
    Applied,
    BeforeBatch,
    api_message,
    ignore_mode,
    rank,
)


@dataclass
class GcResult:
    deleted: list[str] = field(default_factory=list)
    would_delete: list[str] = field(default_factory=list)
    kept: dict[str, str] = field(default_factory=dict)
    gone: list[str] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)


def collect(
    dynamic: DynamicClient,
    pipeline: str,
    candidates: Mapping[str, Applied],
    *,
    dry_run: bool,
    before_batch: BeforeBatch | None = None,
) -> GcResult:
    """Delete `candidates` (ref -> what was applied) in reverse rank order, as they qualify."""
    result = GcResult()
    ordered = sorted(candidates.items(), key=lambda item: -rank(item[1].kind))
    if ordered and before_batch is not None and not dry_run:
        before_batch()
    for ref, applied in ordered:
        try:
            resource = dynamic.resources.get(api_version=applied.api_version, kind=applied.kind)
            live: dict[str, Any] = resource.get(
                name=applied.name, namespace=applied.namespace, _request_timeout=REQUEST_TIMEOUT
            ).to_dict()
        except (NotFoundError, ResourceNotFoundError):
            result.gone.append(ref)
            continue
        except ApiException as exc:
            result.errors[ref] = api_message(exc)
            continue
        meta = live.get("metadata") or {}
        reason = _reason_to_keep(live, meta, pipeline, applied)
        if reason:
            result.kept[ref] = reason
            continue
        if dry_run:
            result.would_delete.append(ref)
            continue
        try:
            resource.delete(
                name=applied.name, namespace=applied.namespace, _request_timeout=REQUEST_TIMEOUT
            )
            result.deleted.append(ref)
        except NotFoundError:
            result.gone.append(ref)
        except ApiException as exc:
            result.errors[ref] = api_message(exc)
    return result


def _reason_to_keep(
    live: dict[str, Any], meta: dict[str, Any], pipeline: str, applied: Applied
) -> str:
    mode = ignore_mode(live)
    if mode:
        return f"not deleted: annotated ignore={mode}"
    if (meta.get("labels") or {}).get(PIPELINE_LABEL) != pipeline:
        return "not deleted: no longer labelled as this pipeline's"
    if (meta.get("annotations") or {}).get(CHECKSUM_ANNOTATION) != applied.checksum:
        return "not deleted: changed since this pipeline applied it (checksum differs)"
    return ""
