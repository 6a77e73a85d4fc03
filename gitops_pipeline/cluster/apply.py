"""Server-side apply of a rendered set: ranked, concurrent within a rank, fenced, policy-checked.

Every applied object carries the pipeline's label and a checksum annotation of its rendered
content; garbage collection (`cluster/gc.py`) relies on both.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from kubernetes.client.exceptions import ApiException
from kubernetes.dynamic import DynamicClient
from kubernetes.dynamic.exceptions import ResourceNotFoundError

FIELD_MANAGER = "gitops-pipeline"
REQUEST_TIMEOUT = 30.0
CRD_ESTABLISHED_TIMEOUT = 30.0
BATCH_SIZE = 50  # objects written between two fencing checks
PIPELINE_LABEL = "gitops-pipeline.io/pipeline"
CHECKSUM_ANNOTATION = "gitops-pipeline.io/checksum"
IGNORE_ANNOTATIONS = ("fluxcd.io/ignore", "flux.weave.works/ignore")

# Flux v1's ordering: what others depend on goes first.
_RANKS: list[set[str]] = [
    {"Namespace"},
    {
        "CustomResourceDefinition",
        "ServiceAccount",
        "ClusterRole",
        "Role",
        "PersistentVolume",
        "Service",
    },
    {
        "ResourceQuota",
        "LimitRange",
        "Secret",
        "ConfigMap",
        "RoleBinding",
        "ClusterRoleBinding",
        "PersistentVolumeClaim",
        "Ingress",
    },
    {
        "Deployment",
        "DaemonSet",
        "StatefulSet",
        "ReplicaSet",
        "Job",
        "CronJob",
        "Pod",
        "ReplicationController",
    },
]

BeforeBatch = Callable[[], None]


def rank(kind: str) -> int:
    """0 for Namespaces up to len(_RANKS) for everything not listed."""
    for index, kinds in enumerate(_RANKS):
        if kind in kinds:
            return index
    return len(_RANKS)


def object_ref(obj: dict[str, Any]) -> str:
    """`namespace:Kind/name` (`<cluster>:` for cluster-scoped objects), as Flux v1 named them."""
    meta = obj.get("metadata") or {}
    namespace = meta.get("namespace")
    prefix = f"{namespace}:" if namespace else "<cluster>:"
    return f"{prefix}{obj.get('kind')}/{meta.get('name')}"


class Refused(PermissionError):
    """An object outside what the pipeline may write; `ref` names it as placed (namespace
    settled), as every other outcome of a sync is named."""

    def __init__(self, message: str, ref: str) -> None:
        super().__init__(message)
        self.ref = ref


def ignore_mode(obj: dict[str, Any]) -> str:
    """`true` (never touch), `sync_only` (apply, never delete) or `` from the annotations."""
    annotations = (obj.get("metadata") or {}).get("annotations") or {}
    for key in IGNORE_ANNOTATIONS:
        value = str(annotations.get(key, "")).lower()
        if value in ("true", "sync_only"):
            return value
    return ""


def checksum(obj: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(obj, sort_keys=True).encode()).hexdigest()


@dataclass(frozen=True)
class Applied:
    """What is recorded of an applied object, enough to find and garbage-collect it later."""

    api_version: str
    kind: str
    namespace: str | None
    name: str
    checksum: str

    def to_json(self) -> str:
        return json.dumps(self.__dict__)

    @classmethod
    def from_json(cls, text: str) -> Applied:
        return cls(**json.loads(text))


@dataclass
class ApplyResult:
    """One apply pass: applied objects, skipped refs (unchanged or ignored), errors per ref."""

    applied: dict[str, Applied] = field(default_factory=dict)
    unchanged: list[str] = field(default_factory=list)
    ignored: list[str] = field(default_factory=list)
    errors: dict[str, str] = field(default_factory=dict)


def api_message(exc: ApiException) -> str:
    try:
        body = json.loads(str(exc.body))
        parts = [str(exc.status), body.get("reason") or "", body.get("message") or ""]
        return " ".join(part for part in parts if part)
    except (TypeError, ValueError):
        return f"{exc.status} {exc.reason}"


def _default_port_protocols(node: Any) -> None:
    """Write `protocol: TCP` (the API's own default) into ports lists that omit it.

    Server-side apply on older API servers (seen on 1.20) refuses a Service or container port
    without `protocol`, because it is part of the list's merge key; kubectl's client-side apply
    never hit this, so manifests written for Flux v1 commonly omit it.
    """
    if isinstance(node, dict):
        for key, value in node.items():
            if key == "ports" and isinstance(value, list):
                for port in value:
                    if isinstance(port, dict) and ("containerPort" in port or "port" in port):
                        port.setdefault("protocol", "TCP")
            else:
                _default_port_protocols(value)
    elif isinstance(node, list):
        for item in node:
            _default_port_protocols(item)


class Applier:
    """Applies one pipeline's objects to one cluster with the operator's field manager."""

    def __init__(
        self,
        dynamic: DynamicClient,
        pipeline: str,
        default_namespace: str,
        allow_namespaces: Iterable[str] = (),
        concurrency: int = 16,
    ) -> None:
        self._dynamic = dynamic
        self._pipeline = pipeline
        self._default_namespace = default_namespace
        self._allowed = set(allow_namespaces)
        self._concurrency = concurrency

    def _resource(self, obj: dict[str, Any]) -> Any:
        return self._dynamic.resources.get(api_version=obj["apiVersion"], kind=obj["kind"])

    def place(self, obj: dict[str, Any]) -> dict[str, Any]:
        """A copy with the namespace settled and port protocols filled in.

        Raises `ResourceNotFoundError` for a kind the API server does not serve and
        `Refused` (a `PermissionError`) for an object outside `allow_namespaces`.
        """
        resource = self._resource(obj)
        placed: dict[str, Any] = json.loads(json.dumps(obj))
        _default_port_protocols(placed)
        meta = placed.setdefault("metadata", {})
        if resource.namespaced:
            meta.setdefault("namespace", self._default_namespace)
        else:
            meta.pop("namespace", None)
        if self._allowed:
            if not resource.namespaced:
                raise Refused(
                    "cluster-scoped objects are not allowed for this pipeline", object_ref(placed)
                )
            if meta["namespace"] not in self._allowed:
                raise Refused(
                    f"namespace {meta['namespace']!r} is not in allow_namespaces",
                    object_ref(placed),
                )
        return placed

    def refs(self, objects: Iterable[dict[str, Any]]) -> set[str]:
        """The refs `objects` have once placed (their raw refs when they cannot be placed)."""
        found: set[str] = set()
        for obj in objects:
            try:
                found.add(object_ref(self.place(obj)))
            except (ResourceNotFoundError, PermissionError):
                found.add(object_ref(obj))
        return found

    def _mark(self, placed: dict[str, Any]) -> tuple[dict[str, Any], str]:
        """Add the pipeline label and the checksum of the rendered content."""
        digest = checksum(placed)
        meta = placed["metadata"]
        meta.setdefault("labels", {})[PIPELINE_LABEL] = self._pipeline
        meta.setdefault("annotations", {})[CHECKSUM_ANNOTATION] = digest
        return placed, digest

    def _live_ignored(self, placed: list[dict[str, Any]]) -> set[str]:
        """Refs whose live object carries an ignore annotation (one LIST per kind/namespace).

        Lists are read as raw JSON: building the client's wrapper objects for every listed
        item cost more than the applies themselves.
        """
        wanted = {object_ref(obj) for obj in placed}
        scopes = {
            (obj["apiVersion"], obj["kind"], obj["metadata"].get("namespace")) for obj in placed
        }
        ignored: set[str] = set()
        for api_version, kind, namespace in scopes:
            resource = self._dynamic.resources.get(api_version=api_version, kind=kind)
            try:
                response = resource.get(
                    namespace=namespace, serialize=False, _request_timeout=REQUEST_TIMEOUT
                )
                items = json.loads(response.data).get("items") or []
            except (ApiException, ValueError):
                continue  # not allowed to list: Git's annotations still apply
            for item in items:
                item.setdefault("kind", kind)
                ref = object_ref(item)
                if ref in wanted and ignore_mode(item) == "true":
                    ignored.add(ref)
        return ignored

    def _apply_one(self, obj: dict[str, Any]) -> str | None:
        try:
            self._resource(obj).server_side_apply(
                body=obj,
                namespace=obj["metadata"].get("namespace"),
                field_manager=FIELD_MANAGER,
                force_conflicts=True,
                _request_timeout=REQUEST_TIMEOUT,
            )
        except ApiException as exc:
            return api_message(exc)
        except Exception as exc:  # a transport failure for one object must not stop the rest
            return f"{type(exc).__name__}: {exc}"
        return None

    def _wait_established(self, crds: list[dict[str, Any]]) -> None:
        """Wait until applied CRDs serve their kinds, then refresh discovery."""
        resource = self._dynamic.resources.get(
            api_version="apiextensions.k8s.io/v1", kind="CustomResourceDefinition"
        )
        deadline = time.monotonic() + CRD_ESTABLISHED_TIMEOUT
        for crd in crds:
            while time.monotonic() < deadline:
                live = resource.get(name=crd["metadata"]["name"]).to_dict()
                conditions = (live.get("status") or {}).get("conditions") or []
                if any(c["type"] == "Established" and c["status"] == "True" for c in conditions):
                    break
                time.sleep(0.2)
        self._dynamic.resources.invalidate_cache()

    def apply(
        self,
        objects: Iterable[dict[str, Any]],
        previous: dict[str, str] | None = None,
        before_batch: BeforeBatch | None = None,
    ) -> ApplyResult:
        """Apply by rank; one failing object never stops the others.

        `previous` maps refs to the checksums applied last time: objects whose checksum is
        unchanged are skipped (pass None to apply everything, for drift correction).
        `before_batch` runs before every BATCH_SIZE writes; it raises to stop (fencing).
        """
        result = ApplyResult()
        by_rank: dict[int, list[dict[str, Any]]] = {}
        for obj in objects:
            by_rank.setdefault(rank(obj["kind"]), []).append(obj)
        with ThreadPoolExecutor(max_workers=self._concurrency) as pool:
            for level in sorted(by_rank):
                batch = self._prepare(by_rank[level], previous, result)
                for start in range(0, len(batch), BATCH_SIZE):
                    chunk = batch[start : start + BATCH_SIZE]
                    if before_batch is not None:
                        before_batch()
                    self._apply_chunk(pool, chunk, result)
                crds = [o for o, _ in batch if o["kind"] == "CustomResourceDefinition"]
                if crds:
                    self._wait_established(crds)
        return result

    def _apply_chunk(
        self,
        pool: ThreadPoolExecutor,
        chunk: list[tuple[dict[str, Any], str]],
        result: ApplyResult,
    ) -> None:
        objs = [obj for obj, _ in chunk]
        for (obj, digest), error in zip(chunk, pool.map(self._apply_one, objs), strict=True):
            ref = object_ref(obj)
            if error is None:
                meta = obj["metadata"]
                result.applied[ref] = Applied(
                    obj["apiVersion"], obj["kind"], meta.get("namespace"), meta["name"], digest
                )
            else:
                result.errors[ref] = error

    def _prepare(
        self,
        objects: list[dict[str, Any]],
        previous: dict[str, str] | None,
        result: ApplyResult,
    ) -> list[tuple[dict[str, Any], str]]:
        placed: list[dict[str, Any]] = []
        for obj in objects:
            try:
                item = self.place(obj)
            except ResourceNotFoundError:
                result.errors[object_ref(obj)] = (
                    f"unknown kind {obj['kind']} in {obj['apiVersion']}"
                )
                continue
            except Refused as exc:
                result.errors[exc.ref] = f"refused: {exc}"
                continue
            if ignore_mode(item) == "true":
                result.ignored.append(object_ref(item))
                continue
            placed.append(item)
        changed: list[tuple[dict[str, Any], str]] = []
        for item in placed:
            marked, digest = self._mark(item)
            if previous is not None and previous.get(object_ref(marked)) == digest:
                result.unchanged.append(object_ref(marked))
                continue
            changed.append((marked, digest))
        # Only objects about to be written need the live ignore check.
        live_ignored = self._live_ignored([obj for obj, _ in changed]) if changed else set()
        batch: list[tuple[dict[str, Any], str]] = []
        for marked, digest in changed:
            ref = object_ref(marked)
            if ref in live_ignored:
                result.ignored.append(ref)
                continue
            batch.append((marked, digest))
        return batch
