"""Apply a `patchUpdated` patch file to generated objects, as Flux v1 did.

Flux v1 applied a Kubernetes strategic merge patch to built-in kinds and a JSON merge patch
(RFC 7386) to everything else (custom resources, whose schema it did not know). The strategic
merge is written here, small and on purpose: no well-kept Python library implements Kubernetes
strategic merge (the official client only sends patches for the API server to apply), and the
server cannot do it for us because generation must work without a cluster.

What is implemented is the part of strategic merge that patch files use:
- maps merge recursively; `null` deletes a key;
- lists with a merge key (containers by `name`, container ports by `containerPort`, Service
  ports by `port`, volume mounts by `mountPath`, ...) merge item by item; other lists are
  replaced whole;
- the directives `$patch: replace | delete | merge`, `$retainKeys` and `$setElementOrder/<list>`
  (the last one appears in patches that Kubernetes' own patch creation writes, as Flux v1's did).
Any other `$` directive is refused rather than applied wrongly.
"""

from __future__ import annotations

import copy
from typing import Any

import yaml

from gitops_pipeline.errors import ManifestError
from gitops_pipeline.manifests.load import SAFE_LOADER, Manifest, yaml_error

BUILTIN_GROUPS = frozenset(
    {
        "",
        "admissionregistration.k8s.io",
        "apps",
        "autoscaling",
        "batch",
        "certificates.k8s.io",
        "coordination.k8s.io",
        "discovery.k8s.io",
        "events.k8s.io",
        "extensions",
        "flowcontrol.apiserver.k8s.io",
        "networking.k8s.io",
        "node.k8s.io",
        "policy",
        "rbac.authorization.k8s.io",
        "scheduling.k8s.io",
        "storage.k8s.io",
    }
)
"""API groups of the kinds Kubernetes' client knows, so strategic merge applies to them."""

_CONTAINER_LISTS = frozenset({"containers", "initContainers", "ephemeralContainers"})
_MERGE_BY_NAME = _CONTAINER_LISTS | {"volumes", "env", "imagePullSecrets"}
_MERGE_BY_FIELD = {"volumeMounts": "mountPath", "volumeDevices": "devicePath"}

FieldPath = tuple[str, ...]
PatchKey = tuple[str, str, str, str]


class _PatchProblem(Exception):
    """A patch that cannot be applied; the caller adds which object and file."""


def _dotted(path: FieldPath) -> str:
    return ".".join(path) or "<top>"


def _merge_key(kind: str, path: FieldPath) -> str | None:
    """The Kubernetes merge key of the list at `path` in an object of `kind`, if it has one."""
    field = path[-1]
    if field in _MERGE_BY_NAME:
        return "name"
    if field in _MERGE_BY_FIELD:
        return _MERGE_BY_FIELD[field]
    if field == "ports":
        if len(path) > 1 and path[-2] in _CONTAINER_LISTS:
            return "containerPort"
        if kind == "Service" and path == ("spec", "ports"):
            return "port"
    return None


def _order(items: list[Any], order: object, key: str | None, path: FieldPath) -> list[Any]:
    """`items` sorted as `$setElementOrder` says; items it does not name keep their place
    after the named ones."""
    if not isinstance(order, list):
        raise _PatchProblem(f"{_dotted(path)}: $setElementOrder must be a list")
    wanted = [entry.get(key) if key and isinstance(entry, dict) else entry for entry in order]

    def rank(item: Any) -> int:
        value = item.get(key) if key and isinstance(item, dict) else item
        return wanted.index(value) if value in wanted else len(wanted)

    return sorted(items, key=rank)


def _merge_list(
    current: list[Any], patch: list[Any], key: str, kind: str, path: FieldPath
) -> list[Any]:
    if not all(isinstance(item, dict) for item in patch):
        raise _PatchProblem(f"{_dotted(path)}: items must be mappings")
    if {"$patch": "replace"} in patch:
        return [_merge_map({}, item, kind, path) for item in patch if item != {"$patch": "replace"}]
    result = list(current)
    for item in patch:
        if key not in item:
            raise _PatchProblem(f"{_dotted(path)}: an item has no merge key {key!r}")
        matches = [
            index
            for index, existing in enumerate(result)
            if isinstance(existing, dict) and existing.get(key) == item[key]
        ]
        if item.get("$patch") == "delete":
            result = [existing for index, existing in enumerate(result) if index not in matches]
        elif matches:
            result[matches[0]] = _merge_map(result[matches[0]], item, kind, path)
        else:
            result.append(_merge_map({}, item, kind, path))
    return result


def _merge_map(
    current: dict[str, Any], patch: dict[str, Any], kind: str, path: FieldPath
) -> dict[str, Any]:
    directive = patch.get("$patch", "merge")
    if directive == "replace":
        return {k: v for k, v in patch.items() if k != "$patch"}
    if directive != "merge":
        raise _PatchProblem(f"{_dotted(path)}: unsupported $patch: {directive!r} here")
    result = dict(current)
    orders: dict[str, object] = {}
    retain: object = None
    for field, value in patch.items():
        if field == "$patch":
            continue
        if field.startswith("$setElementOrder/"):
            orders[field.split("/", 1)[1]] = value
            continue
        if field == "$retainKeys":
            retain = value
            continue
        if field.startswith("$"):
            raise _PatchProblem(f"{_dotted(path)}: unsupported directive {field!r}")
        here = (*path, field)
        existing = result.get(field)
        if value is None or (isinstance(value, dict) and value.get("$patch") == "delete"):
            result.pop(field, None)
        elif isinstance(value, dict):
            result[field] = _merge_map(
                existing if isinstance(existing, dict) else {}, value, kind, here
            )
        elif isinstance(value, list) and (key := _merge_key(kind, here)) is not None:
            result[field] = _merge_list(
                existing if isinstance(existing, list) else [], value, key, kind, here
            )
        else:
            result[field] = value
    for field, order in orders.items():
        if isinstance(result.get(field), list):
            here = (*path, field)
            result[field] = _order(result[field], order, _merge_key(kind, here), here)
    if retain is not None:
        if not isinstance(retain, list):
            raise _PatchProblem(f"{_dotted(path)}: $retainKeys must be a list")
        result = {k: v for k, v in result.items() if k in retain}
    return result


def strategic_merge(original: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """`original` with the strategic merge `patch` applied; neither input is changed.

    Raises `ManifestError` for a patch that cannot be applied (a keyed list item without its
    key, an unsupported directive).
    """
    kind = str(original.get("kind", ""))
    try:
        return _merge_map(copy.deepcopy(original), copy.deepcopy(patch), kind, ())
    except _PatchProblem as exc:
        raise ManifestError(str(exc)) from None


def _json_merge(original: Any, patch: Any) -> Any:
    if not isinstance(patch, dict):
        return patch
    result = dict(original) if isinstance(original, dict) else {}
    for field, value in patch.items():
        if value is None:
            result.pop(field, None)
        else:
            result[field] = _json_merge(result.get(field), value)
    return result


def json_merge(original: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """RFC 7386 JSON merge patch: maps merge, `null` deletes, everything else (lists) replaces.

    Neither input is changed.
    """
    merged: dict[str, Any] = _json_merge(copy.deepcopy(original), copy.deepcopy(patch))
    return merged


def patch_object(original: dict[str, Any], patch: dict[str, Any]) -> dict[str, Any]:
    """Strategic merge for built-in kinds, JSON merge for custom resources (as Flux v1)."""
    group = str(original.get("apiVersion", "")).rpartition("/")[0]
    if group in BUILTIN_GROUPS:
        return strategic_merge(original, patch)
    return json_merge(original, patch)


def _key(obj: dict[str, Any]) -> PatchKey:
    meta = obj.get("metadata")
    meta = meta if isinstance(meta, dict) else {}
    return (
        str(obj.get("apiVersion")),
        str(obj.get("kind")),
        str(meta.get("namespace") or ""),
        str(meta.get("name")),
    )


def _describe(key: PatchKey) -> str:
    api_version, kind, namespace, name = key
    return f"{api_version} {namespace or '<default>'}:{kind}/{name}"


def parse_patches(text: str, source: str) -> dict[PatchKey, dict[str, Any]]:
    """The documents of a patch file by (apiVersion, kind, namespace, name); empty documents
    are skipped, anything else that is not an object patch is an error."""
    try:
        docs = list(yaml.load_all(text, Loader=SAFE_LOADER))
    except yaml.YAMLError as exc:
        raise yaml_error(source, exc) from None
    patches: dict[PatchKey, dict[str, Any]] = {}
    for number, doc in enumerate(docs, start=1):
        if doc is None:
            continue
        meta = doc.get("metadata") if isinstance(doc, dict) else None
        if not (
            isinstance(doc, dict)
            and isinstance(doc.get("apiVersion"), str)
            and isinstance(doc.get("kind"), str)
            and isinstance(meta, dict)
            and isinstance(meta.get("name"), str)
        ):
            raise ManifestError(
                f"{source}: document {number} is not an object patch "
                "(it needs apiVersion, kind and metadata.name)"
            )
        key = _key(doc)
        if key in patches:
            raise ManifestError(f"{source}: {_describe(key)} is patched twice")
        patches[key] = doc
    return patches


def apply_patches(manifests: list[Manifest], text: str, source: str) -> list[Manifest]:
    """`manifests` with the patch file `text` (named `source`) applied.

    Each patch is matched to the object with the same apiVersion, kind, namespace and name; a
    patch that matches none is an error naming it, since it would otherwise be silently lost.
    Patched objects keep their place and say in their source that they were patched.
    """
    patches = parse_patches(text, source)
    patched: list[Manifest] = []
    for manifest in manifests:
        key = _key(manifest.obj)
        patch = patches.pop(key, None)
        if patch is None:
            patched.append(manifest)
            continue
        try:
            obj = patch_object(manifest.obj, patch)
        except ManifestError as exc:
            raise ManifestError(f"{source}: cannot patch {_describe(key)}: {exc}") from None
        if _key(obj) != key:
            raise ManifestError(
                f"{source}: the patch for {_describe(key)} changes its apiVersion, kind, "
                "namespace or name"
            )
        patched.append(Manifest(obj, f"{manifest.source}, patched by {source}"))
    if patches:
        unmatched = next(iter(patches))
        raise ManifestError(
            f"{source}: the patch for {_describe(unmatched)} matches no generated object"
        )
    return patched
