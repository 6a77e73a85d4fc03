"""Load Kubernetes objects from the YAML files under a pipeline's paths."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from gitops_pipeline.errors import ManifestError

YAML_SUFFIXES = (".yaml", ".yml")


@dataclass(frozen=True)
class Manifest:
    """One Kubernetes object and the file (relative to the repo root) it came from."""

    obj: dict[str, Any]
    source: str

    @property
    def identity(self) -> tuple[str, str, str]:
        meta = self.obj.get("metadata") or {}
        return (str(meta.get("namespace") or ""), str(self.obj["kind"]), str(meta["name"]))

    @property
    def ref(self) -> str:
        namespace, kind, name = self.identity
        return f"{namespace or '<default>'}:{kind}/{name}"


def _is_kubernetes_object(doc: object) -> bool:
    return (
        isinstance(doc, dict)
        and isinstance(doc.get("apiVersion"), str)
        and isinstance(doc.get("kind"), str)
        and isinstance(doc.get("metadata"), dict)
        and isinstance(doc["metadata"].get("name"), str)
    )


def _documents(path: Path, root: Path) -> list[Manifest]:
    relative = str(path.relative_to(root))
    try:
        docs = list(yaml.safe_load_all(path.read_text()))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        line = f":{mark.line + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or "invalid YAML"
        raise ManifestError(f"{relative}{line}: {problem}") from None
    except UnicodeDecodeError:
        raise ManifestError(f"{relative}: not UTF-8 text") from None
    found: list[Manifest] = []
    for doc in docs:
        if (
            isinstance(doc, dict)
            and doc.get("kind") == "List"
            and isinstance(doc.get("items"), list)
        ):
            found.extend(
                Manifest(item, relative) for item in doc["items"] if _is_kubernetes_object(item)
            )
        elif _is_kubernetes_object(doc):
            found.append(Manifest(doc, relative))
    return found


def load_paths(root: Path, paths: list[str]) -> list[Manifest]:
    """Every Kubernetes object in `*.yaml`/`*.yml` under `paths`, in a stable order.

    Empty and non-Kubernetes documents are skipped; the same (namespace, kind, name) twice is an
    error naming both files.
    """
    root = root.resolve()
    manifests: list[Manifest] = []
    seen: dict[tuple[str, str, str], str] = {}
    files: set[Path] = set()
    for entry in paths:
        base = (root / entry).resolve()
        if not base.is_relative_to(root):
            raise ManifestError(f"path {entry!r} is outside the repository")
        if not base.exists():
            raise ManifestError(f"path {entry!r} does not exist in the repository")
        candidates = [base] if base.is_file() else sorted(base.rglob("*"))
        files.update(
            p
            for p in candidates
            if p.is_file()
            and p.suffix in YAML_SUFFIXES
            and p.resolve().is_relative_to(root)  # a symlink must not lead out of the tree
            and ".git" not in p.relative_to(root).parts
        )
    for path in sorted(files):
        for manifest in _documents(path, root):
            other = seen.get(manifest.identity)
            if other is not None:
                raise ManifestError(
                    f"{manifest.ref} is defined twice: in {other} and in {manifest.source}"
                )
            seen[manifest.identity] = manifest.source
            manifests.append(manifest)
    return manifests
