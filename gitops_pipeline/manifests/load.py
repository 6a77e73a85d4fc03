"""Load Kubernetes objects from the YAML files under a pipeline's paths."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

import yaml

from gitops_pipeline.errors import ManifestError

# libyaml's loader parses about eight times faster than the pure-Python one; PyYAML ships both.
SAFE_LOADER: type[yaml.SafeLoader] = getattr(yaml, "CSafeLoader", yaml.SafeLoader)

YAML_SUFFIXES = (".yaml", ".yml")


@dataclass(frozen=True)
class Manifest:
    """One Kubernetes object and where it came from (a file relative to the repo root, or a
    generator of a `.flux.yaml`)."""

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


def yaml_error(source: str, exc: yaml.YAMLError) -> ManifestError:
    """One line naming the source, the line (when PyYAML knows it) and the problem."""
    mark = getattr(exc, "problem_mark", None)
    line = f":{mark.line + 1}" if mark is not None else ""
    problem = getattr(exc, "problem", None) or "invalid YAML"
    return ManifestError(f"{source}{line}: {problem}")


def parse_documents(text: str, source: str) -> list[Manifest]:
    """The Kubernetes objects in a multi-document YAML text; `kind: List` is expanded.

    Empty and non-Kubernetes documents are skipped, as Flux v1 does, so values files and the
    like may sit next to manifests.
    """
    try:
        docs = list(yaml.load_all(text, Loader=SAFE_LOADER))
    except yaml.YAMLError as exc:
        raise yaml_error(source, exc) from None
    found: list[Manifest] = []
    for doc in docs:
        if (
            isinstance(doc, dict)
            and doc.get("kind") == "List"
            and isinstance(doc.get("items"), list)
        ):
            found.extend(
                Manifest(item, source) for item in doc["items"] if _is_kubernetes_object(item)
            )
        elif _is_kubernetes_object(doc):
            found.append(Manifest(doc, source))
    return found


def resolve_path(root: Path, entry: str) -> Path:
    """The configured path `entry`, resolved; it must exist inside the (resolved) `root`."""
    base = (root / entry).resolve()
    if not base.is_relative_to(root):
        raise ManifestError(f"path {entry!r} is outside the repository")
    if not base.exists():
        raise ManifestError(f"path {entry!r} does not exist in the repository")
    return base


def yaml_files(root: Path, base: Path) -> set[Path]:
    """The `*.yaml`/`*.yml` files at or under `base` that stay inside `root`, outside `.git`."""
    candidates = [base] if base.is_file() else sorted(base.rglob("*"))
    return {
        p
        for p in candidates
        if p.is_file()
        and p.suffix in YAML_SUFFIXES
        and p.resolve().is_relative_to(root)  # a symlink must not lead out of the tree
        and ".git" not in p.relative_to(root).parts
    }


def load_files(root: Path, files: Iterable[Path]) -> list[Manifest]:
    """The objects in `files` (sorted by path), each sourced by its path relative to `root`."""
    found: list[Manifest] = []
    for path in sorted(files):
        relative = str(path.relative_to(root))
        try:
            text = path.read_text()
        except UnicodeDecodeError:
            raise ManifestError(f"{relative}: not UTF-8 text") from None
        found.extend(parse_documents(text, relative))
    return found


def load_blobs(files: Mapping[str, bytes]) -> list[Manifest]:
    """Like `load_paths`, over file contents keyed by their path in the repository."""
    manifests: list[Manifest] = []
    for relative in sorted(files, key=PurePosixPath):
        if not relative.endswith(YAML_SUFFIXES):
            continue
        try:
            text = files[relative].decode()
        except UnicodeDecodeError:
            raise ManifestError(f"{relative}: not UTF-8 text") from None
        manifests.extend(parse_documents(text, relative))
    reject_duplicates(manifests)
    return manifests


def reject_duplicates(manifests: Iterable[Manifest]) -> None:
    """Raise on the first (namespace, kind, name) seen twice, naming both sources."""
    seen: dict[tuple[str, str, str], str] = {}
    for manifest in manifests:
        other = seen.get(manifest.identity)
        if other is not None:
            raise ManifestError(
                f"{manifest.ref} is defined twice: in {other} and in {manifest.source}"
            )
        seen[manifest.identity] = manifest.source


def load_paths(root: Path, paths: list[str]) -> list[Manifest]:
    """Every Kubernetes object in `*.yaml`/`*.yml` under `paths`, in a stable order.

    Empty and non-Kubernetes documents are skipped; the same (namespace, kind, name) twice is an
    error naming both files.
    """
    root = root.resolve()
    files: set[Path] = set()
    for entry in paths:
        files.update(yaml_files(root, resolve_path(root, entry)))
    manifests = load_files(root, files)
    reject_duplicates(manifests)
    return manifests
