"""Writing a workload's image or annotations back into a checked-out tree, for automation.

`update_image` and `update_policy` find the configured path that defines the workload and
write the change the way that path is kept, as rendering reads it: plain YAML files are edited
in place, a `patchUpdated` `.flux.yaml` gets the change in its patch file, and a
`commandUpdated` one has its updaters run (see `updaters`).

Flux v1 edited files with kubeyaml, a ruamel.yaml round trip. A round trip re-emits the whole
file and quietly reformats what it does not keep (sequence indentation, document markers, long
lines), so a one-tag bump can become a noisy diff. Here PyYAML's composer only *locates* the
nodes to change (its marks are character offsets into the original text) and the new text is
spliced into the original: everything outside the touched lines stays byte for byte, CRLF line
ends included. Every edit is then checked by loading the result, which must equal the original
with exactly the intended change; otherwise nothing is written and the error says to edit by hand
(values that come through YAML aliases or merge keys, say).

With a `patchUpdated` `.flux.yaml`, the change goes into the patch file instead: the workload's
patch document is added or rewritten (in PyYAML's block style, as Flux v1 rewrote patch files),
and the other documents, comments between them and separators stay as they are.
"""

from __future__ import annotations

import contextlib
import copy
import dataclasses
import json
import os
import shutil
import tempfile
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Protocol

import yaml
from yaml.error import Mark
from yaml.nodes import CollectionNode, MappingNode, Node, ScalarNode, SequenceNode

from gitops_pipeline.errors import ManifestError
from gitops_pipeline.manifests.fluxyaml import (
    DEFAULT_TIMEOUT,
    CommandUpdated,
    FluxConfig,
    PatchUpdated,
    patch_file_path,
)
from gitops_pipeline.manifests.generate import generate, path_sources
from gitops_pipeline.manifests.load import (
    SAFE_LOADER,
    Manifest,
    load_files,
    resolve_path,
    yaml_error,
    yaml_files,
)
from gitops_pipeline.manifests.patch import _key as patch_key
from gitops_pipeline.manifests.patch import apply_patches
from gitops_pipeline.manifests.updaters import run_image_updaters, run_policy_updaters
from gitops_pipeline.manifests.workloads import WORKLOAD_KINDS

_CONTAINER_LISTS = ("initContainers", "containers")
_POD_SPEC = ("spec", "template", "spec")
_CRONJOB_POD_SPEC = ("spec", "jobTemplate", "spec", "template", "spec")
_NEW_FILE_MODE = 0o644

_Location = tuple[int, int | None]
"""A document's index in its file, and the index in `items` when the document is a `List`."""


@dataclass(frozen=True)
class WorkloadRef:
    """`namespace:Kind/name`, as fluxctl names workloads."""

    namespace: str
    kind: str
    name: str

    def __str__(self) -> str:
        return f"{self.namespace}:{self.kind}/{self.name}"

    def matches(self, obj: object, default_namespace: str) -> bool:
        """Whether `obj` is this workload; kinds compare case-insensitively, since Flux v1's
        workload ids spell them in lower case (`default:deployment/web`)."""
        if not isinstance(obj, dict) or not isinstance(obj.get("metadata"), dict):
            return False
        meta = obj["metadata"]
        return (
            str(obj.get("kind", "")).lower() == self.kind.lower()
            and meta.get("name") == self.name
            and (meta.get("namespace") or default_namespace) == self.namespace
        )


def parse_workload(ref: str) -> WorkloadRef:
    namespace, colon, rest = ref.partition(":")
    kind, slash, name = rest.partition("/")
    if not (colon and slash and namespace and kind and name):
        raise ManifestError(f"workload {ref!r} is not of the form namespace:Kind/name")
    return WorkloadRef(namespace, kind, name)


def find_workload(
    manifests: Sequence[Manifest], ref: WorkloadRef, default_namespace: str, where: str
) -> int:
    """The index of the one manifest that is `ref`; missing or defined twice is an error."""
    found = [i for i, m in enumerate(manifests) if ref.matches(m.obj, default_namespace)]
    if not found:
        raise ManifestError(f"workload {ref} not found in {where}")
    if len(found) > 1:
        first, second = (manifests[i].source for i in found[:2])
        raise ManifestError(f"workload {ref} is defined twice: in {first} and in {second}")
    return found[0]


# --- locating nodes in the original text -------------------------------------------------------


class _Alias(Node):
    """An alias where it is written: PyYAML's composer returns the anchored node itself, whose
    marks point at the anchor, so editing "through" an alias would edit the anchor."""

    def __init__(self, target: Node, start_mark: Mark, end_mark: Mark) -> None:
        super().__init__(target.tag, target, start_mark, end_mark)


class _Locator(yaml.SafeLoader):
    """The safe loader's composer, also recording where each scalar's own text starts (a
    node's start mark includes its anchor and tag), aliases, and which nodes they share."""

    def __init__(self, stream: str) -> None:
        super().__init__(stream)
        self.scalar_starts: dict[int, int] = {}
        self.aliased: set[int] = set()

    def get_token(self) -> Any:
        token = super().get_token()  # type: ignore[no-untyped-call]
        if isinstance(token, yaml.ScalarToken):
            self.scalar_starts[token.end_mark.index] = token.start_mark.index
        return token

    def compose_node(self, parent: Node | None, index: int) -> Node | None:
        if not self.check_event(yaml.AliasEvent):
            return super().compose_node(parent, index)
        event = self.peek_event()  # type: ignore[no-untyped-call]
        target = super().compose_node(parent, index)
        assert target is not None
        self.aliased.add(id(target))
        return _Alias(target, event.start_mark, event.end_mark)


@dataclass(frozen=True)
class _Edit:
    start: int
    end: int
    text: str


def _line_start(text: str, pos: int) -> int:
    return text.rfind("\n", 0, pos) + 1


def _line_end(text: str, pos: int) -> int:
    """The start of the line after the one `pos` is on (a block scalar ends after its line
    break already)."""
    if pos > 0 and text[pos - 1] == "\n":
        return pos
    newline = text.find("\n", pos)
    return len(text) if newline < 0 else newline + 1


def _last_end(node: Node) -> int:
    """Where the text of `node` really ends. A block collection's own end mark lies at the next
    token after it, past any comments and blank lines that follow; its last leaf's does not."""
    while isinstance(node, CollectionNode) and not node.flow_style and node.value:
        last = node.value[-1]
        node = last[1] if isinstance(node, MappingNode) else last
    return int(node.end_mark.index)


def _splice(text: str, edits: Sequence[_Edit]) -> str:
    bound = len(text)
    for edit in sorted(edits, key=lambda e: (e.start, e.end), reverse=True):
        assert edit.end <= bound, "overlapping edits"
        text = text[: edit.start] + edit.text + text[edit.end :]
        bound = edit.start
    return text


def _reads_as(candidate: str, value: str, *, flow: bool, key: bool) -> bool:
    probe = f"{candidate}: v" if key else f"k: {candidate}"
    if flow:
        probe = "{" + probe + "}"
    try:
        loaded = yaml.safe_load(probe)
    except yaml.YAMLError:
        return False
    return bool(loaded == ({value: "v"} if key else {"k": value}))


def _render(value: str, style: str | None, *, flow: bool = False, key: bool = False) -> str:
    """`value` as a YAML string in `style` (plain: None) if it reads back as that string there,
    else double-quoted (so `true` and `1.10` stay strings)."""
    preferred = {None: value, "'": "'" + value.replace("'", "''") + "'"}.get(style)
    candidates = [json.dumps(value, ensure_ascii=False), json.dumps(value)]
    for candidate in [preferred, *candidates] if preferred is not None else candidates:
        if _reads_as(candidate, value, flow=flow, key=key):
            return candidate
    raise ManifestError(f"cannot write {value!r} as a YAML string")


@dataclass(frozen=True)
class _Tree:
    """One file: its text, composed documents, loaded values and where scalars start."""

    text: str
    source: str
    docs: list[Node]
    values: list[Any]
    scalar_starts: dict[int, int]
    aliased: set[int]

    @classmethod
    def parse(cls, text: str, source: str) -> _Tree:
        loader = _Locator(text)
        try:
            docs: list[Node] = []
            while loader.check_node():
                node = loader.get_node()
                assert node is not None
                docs.append(node)
            values = list(yaml.load_all(text, Loader=SAFE_LOADER))
        except yaml.YAMLError as exc:
            raise yaml_error(source, exc) from None
        finally:
            loader.dispose()
        return cls(text, source, docs, values, loader.scalar_starts, loader.aliased)

    @property
    def newline(self) -> str:
        return "\r\n" if "\r\n" in self.text else "\n"

    def cannot(self, what: str, why: str) -> ManifestError:
        return ManifestError(f"{self.source}: cannot edit {what} in place: {why}; edit it by hand")

    def objects(self) -> Iterator[tuple[_Location, Any]]:
        """Every document's value, and each item of a `kind: List` instead of the list."""
        for index, doc in enumerate(self.values):
            if isinstance(doc, dict) and doc.get("kind") == "List":
                items = doc.get("items")
                if isinstance(items, list):
                    for item_index, item in enumerate(items):
                        yield (index, item_index), item
                    continue
            yield (index, None), doc

    def value_at(self, location: _Location) -> Any:
        index, item = location
        doc = self.values[index]
        return doc if item is None else doc["items"][item]

    def values_with(self, location: _Location, value: Any) -> list[Any]:
        """All documents' values, with the object at `location` replaced by `value`."""
        values = list(self.values)
        index, item = location
        if item is None:
            values[index] = value
        else:
            items = list(values[index]["items"])
            items[item] = value
            values[index] = {**values[index], "items": items}
        return values

    def node_at(self, location: _Location, what: str) -> MappingNode:
        index, item = location
        node: Node | None = self.docs[index]
        if item is not None:
            items = self.follow(self.docs[index], "items", what)
            node = items[1].value[item] if items and isinstance(items[1], SequenceNode) else None
        if not isinstance(node, MappingNode):
            raise self.cannot(what, "it is not written as a mapping")
        return node

    def follow(self, node: Node, key: str, what: str) -> tuple[ScalarNode, Node] | None:
        """The key and value nodes of `key` in the mapping `node`, if it is there.

        A value written as an alias, or anchored and used elsewhere, cannot be edited without
        changing the other uses; nor can a mapping whose missing key may come from a merge key.
        """
        if not isinstance(node, MappingNode):
            raise self.cannot(what, f"the parent of {key!r} is not a mapping")
        for key_node, value in reversed(node.value):
            if isinstance(key_node, ScalarNode) and key_node.value == key:
                if isinstance(value, _Alias) or id(value) in self.aliased:
                    raise self.cannot(what, f"{key!r} is shared through a YAML alias")
                return key_node, value
        if any(isinstance(k, ScalarNode) and k.value == "<<" for k, _ in node.value):
            raise self.cannot(what, f"{key!r} may come from a YAML merge key (<<)")
        return None

    def span(self, node: Node) -> tuple[int, int]:
        """The offsets of a scalar's own text (without anchor or tag)."""
        end = int(node.end_mark.index)
        return self.scalar_starts.get(end, int(node.start_mark.index)), end

    def replace_scalar(self, node: Node, value: str, what: str, *, flow: bool) -> _Edit:
        """Write `value` over the scalar `node`, in its quoting style where that can hold it."""
        if not isinstance(node, ScalarNode):
            raise self.cannot(what, f"line {node.start_mark.line + 1} holds no single value")
        start, end = self.span(node)
        rendered = _render(value, node.style, flow=flow)
        if start == end:  # an empty (null) value right after its colon
            rendered = " " + rendered
        if node.style in ("|", ">"):
            original = self.text[start:end]
            rendered += original[len(original.rstrip(" \r\n")) :]
        return _Edit(start, end, rendered)

    def delete_pair(self, key: Node, value: Node, what: str) -> _Edit:
        """Remove the lines of a block mapping entry."""
        start = _line_start(self.text, key.start_mark.index)
        if self.text[start : key.start_mark.index].strip():
            raise self.cannot(what, f"line {key.start_mark.line + 1} holds more than the entry")
        return _Edit(start, _line_end(self.text, _last_end(value)), "")

    def insert_lines(self, after: Node, lines: Sequence[str]) -> _Edit:
        """New lines (without line ends) after the last line of `after`."""
        pos = _line_end(self.text, _last_end(after))
        prefix = "" if pos == 0 or self.text[pos - 1] == "\n" else self.newline
        return _Edit(pos, pos, prefix + "".join(line + self.newline for line in lines))

    def check(self, new_text: str, expected: list[Any], what: str) -> None:
        """Refuse an edit whose result does not load as exactly the intended values."""
        try:
            loaded = list(yaml.load_all(new_text, Loader=SAFE_LOADER))
        except yaml.YAMLError:
            loaded = None
        if loaded != expected:
            raise self.cannot(what, "the edited file would not load as intended")


def _read(path: Path, source: str) -> str:
    """The file's text exactly, line ends included (`read_text` would translate CRLF)."""
    try:
        return path.read_bytes().decode()
    except UnicodeDecodeError:
        raise ManifestError(f"{source}: not UTF-8 text") from None


def _write(path: Path, text: str) -> None:
    """Replace the file (a symlink's target) in one step, keeping its mode."""
    target = path.resolve()
    fd, temporary = tempfile.mkstemp(dir=target.parent, prefix=f".{target.name}.")
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(text.encode())
        if target.exists():
            shutil.copymode(target, temporary)
        else:
            os.chmod(temporary, _NEW_FILE_MODE)
        os.replace(temporary, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(temporary)
        raise


# --- the changes -------------------------------------------------------------------------------


def _pod_spec_path(kind: str) -> tuple[str, ...]:
    return _CRONJOB_POD_SPEC if kind == "CronJob" else _POD_SPEC


def _dig(obj: Any, path: Sequence[str]) -> Any:
    for step in path:
        obj = obj.get(step) if isinstance(obj, dict) else None
    return obj if isinstance(obj, dict) else {}


def _containers(obj: dict[str, Any]) -> Iterator[tuple[str, dict[str, Any]]]:
    pod = _dig(obj, _pod_spec_path(str(obj.get("kind"))))
    for key in _CONTAINER_LISTS:
        items = pod.get(key)
        for container in items if isinstance(items, list) else []:
            if isinstance(container, dict):
                yield key, container


class _Change(Protocol):
    def apply(self, obj: dict[str, Any], what: str) -> dict[str, Any]:
        """The object with the change made (the same object when there is nothing to do)."""

    def edits(self, tree: _Tree, node: MappingNode, obj: dict[str, Any], what: str) -> list[_Edit]:
        """Text edits making the change to the object `node` (loaded as `obj`) in `tree`."""


@dataclass(frozen=True)
class _ImageChange:
    container: str
    image: str

    def apply(self, obj: dict[str, Any], what: str) -> dict[str, Any]:
        if obj.get("kind") not in WORKLOAD_KINDS:
            raise ManifestError(f"{what} is not a workload ({', '.join(WORKLOAD_KINDS)})")
        named = [c for _, c in _containers(obj) if c.get("name") == self.container]
        if not named:
            have = ", ".join(str(c.get("name")) for _, c in _containers(obj)) or "none"
            raise ManifestError(f"{what} has no container {self.container!r} (it has: {have})")
        if all(c.get("image") == self.image for c in named):
            return obj
        changed = copy.deepcopy(obj)
        for _, container in _containers(changed):
            if container.get("name") == self.container:
                container["image"] = self.image
        return changed

    def edits(self, tree: _Tree, node: MappingNode, obj: dict[str, Any], what: str) -> list[_Edit]:
        pod: Node = node
        for step in _pod_spec_path(str(obj["kind"])):
            found = tree.follow(pod, step, what)
            if found is None:
                raise tree.cannot(what, f"no {step!r} on the way to the pod spec")
            pod = found[1]
        edits = []
        for key in _CONTAINER_LISTS:
            found = tree.follow(pod, key, what)
            if found is None or not isinstance(found[1], SequenceNode):
                continue
            for item in found[1].value:
                edits.extend(self._container_edits(tree, item, what))
        return edits

    def _container_edits(self, tree: _Tree, item: Node, what: str) -> list[_Edit]:
        mapping = item.value if isinstance(item, _Alias) else item
        if not isinstance(mapping, MappingNode):
            return []
        if _scalar(mapping, "name") != self.container:
            return []
        if isinstance(item, _Alias) or id(item) in tree.aliased:
            raise tree.cannot(what, f"container {self.container!r} is shared through a YAML alias")
        image = tree.follow(mapping, "image", what)
        if image is None or not isinstance(image[1], ScalarNode):
            raise tree.cannot(what, f"container {self.container!r} has no image to replace")
        if image[1].value == self.image:
            return []
        return [tree.replace_scalar(image[1], self.image, what, flow=bool(mapping.flow_style))]


def _effective(current: Mapping[str, Any], changes: Mapping[str, str | None]) -> dict[str, Any]:
    """The changes that change something."""
    return {
        k: v
        for k, v in changes.items()
        if (k in current if v is None else k not in current or current[k] != v)
    }


def _annotations(obj: dict[str, Any], what: str) -> dict[str, Any]:
    meta = obj.get("metadata")
    current = meta.get("annotations") if isinstance(meta, dict) else None
    if current is not None and not isinstance(current, dict):
        raise ManifestError(f"{what}: metadata.annotations is not a mapping")
    return current or {}


@dataclass(frozen=True)
class _AnnotationChange:
    changes: Mapping[str, str | None]

    def apply(self, obj: dict[str, Any], what: str) -> dict[str, Any]:
        current = _annotations(obj, what)
        effective = _effective(current, self.changes)
        if not effective:
            return obj
        annotations = dict(current)
        for key, value in effective.items():
            if value is None:
                del annotations[key]
            else:
                annotations[key] = value
        changed = copy.deepcopy(obj)
        if annotations:
            changed["metadata"]["annotations"] = annotations
        else:
            changed["metadata"].pop("annotations", None)
        return changed

    def edits(self, tree: _Tree, node: MappingNode, obj: dict[str, Any], what: str) -> list[_Edit]:
        effective = _effective(_annotations(obj, what), self.changes)
        meta = tree.follow(node, "metadata", what)
        if meta is None or not isinstance(meta[1], MappingNode):
            raise tree.cannot(what, "metadata is not a mapping")
        if meta[1].flow_style:
            return [self._flow_metadata(tree, meta[1], effective, what)]
        pair = tree.follow(meta[1], "annotations", what)
        if pair is None or (isinstance(pair[1], ScalarNode) and pair[1].tag.endswith(":null")):
            return [self._new_block(tree, meta, pair, effective, what)]
        key, annotations = pair
        if not isinstance(annotations, MappingNode):
            raise tree.cannot(what, "metadata.annotations is not a mapping")
        if annotations.flow_style:
            text = self._flow_text(tree, annotations, effective)
            if text is None:
                return [tree.delete_pair(key, annotations, what)]
            return [_Edit(annotations.start_mark.index, annotations.end_mark.index, text)]
        return self._block_edits(tree, key, annotations, effective, what)

    def _block_edits(
        self,
        tree: _Tree,
        key: Node,
        annotations: MappingNode,
        effective: Mapping[str, str | None],
        what: str,
    ) -> list[_Edit]:
        entries = {k.value: (k, v) for k, v in annotations.value if isinstance(k, ScalarNode)}
        indent = " " * annotations.value[0][0].start_mark.column
        edits, added = [], []
        for name, value in effective.items():
            if name in entries and value is None:
                edits.append(tree.delete_pair(*entries[name], what))
            elif name in entries and value is not None:
                edits.append(tree.replace_scalar(entries[name][1], value, what, flow=False))
            elif value is not None:
                added.append(f"{indent}{_render(name, None, key=True)}: {_render(value, None)}")
            else:
                raise tree.cannot(what, f"annotation {name!r} is not written in the mapping")
        removed = sum(1 for v in effective.values() if v is None)
        if removed == len(annotations.value) and not added:
            return [tree.delete_pair(key, annotations, what)]
        if added:
            edits.append(tree.insert_lines(annotations, added))
        return edits

    def _new_block(
        self,
        tree: _Tree,
        meta: tuple[ScalarNode, Node],
        pair: tuple[ScalarNode, Node] | None,
        effective: Mapping[str, str | None],
        what: str,
    ) -> _Edit:
        """An `annotations:` block after the last line of `metadata`, or instead of an
        `annotations:` entry with no value."""
        meta_key, meta_map = meta
        column = meta_map.value[0][0].start_mark.column
        step = column - meta_key.start_mark.column
        lines = [f"{' ' * column}annotations:"] + [
            f"{' ' * (column + (step if step > 0 else 2))}{_render(k, None, key=True)}: "
            f"{_render(v, None)}"
            for k, v in effective.items()
            if v is not None
        ]
        if pair is None:
            return tree.insert_lines(meta_map, lines)
        deleted = tree.delete_pair(*pair, what)
        return dataclasses.replace(deleted, text="".join(line + tree.newline for line in lines))

    def _flow_text(
        self, tree: _Tree, node: MappingNode | None, effective: Mapping[str, str | None]
    ) -> str | None:
        """The flow mapping `node` (or a new one) with the changes; None when left empty."""
        styles = {
            k.value: v.style
            for k, v in (node.value if node else [])
            if isinstance(k, ScalarNode) and isinstance(v, ScalarNode)
        }
        rendered = {
            k: None if v is None else _render(v, styles.get(k), flow=True)
            for k, v in effective.items()
        }
        return _flow_rebuild(tree, node, rendered)

    def _flow_metadata(
        self, tree: _Tree, meta: MappingNode, effective: Mapping[str, str | None], what: str
    ) -> _Edit:
        pair = tree.follow(meta, "annotations", what)
        annotations = pair[1] if pair else None
        if annotations is not None and not isinstance(annotations, MappingNode):
            raise tree.cannot(what, "metadata.annotations is not a mapping")
        text = _flow_rebuild(
            tree, meta, {"annotations": self._flow_text(tree, annotations, effective)}
        )
        assert text is not None  # metadata keeps its name
        return _Edit(meta.start_mark.index, meta.end_mark.index, text)


def _scalar(node: MappingNode, key: str) -> Any:
    """The value of a scalar entry (through an alias), without the checks of `follow`."""
    for key_node, value in reversed(node.value):
        if isinstance(key_node, ScalarNode) and key_node.value == key:
            target = value.value if isinstance(value, _Alias) else value
            return target.value if isinstance(target, ScalarNode) else None
    return None


def _flow_rebuild(
    tree: _Tree, node: MappingNode | None, replace: Mapping[str, str | None]
) -> str | None:
    """A flow mapping's text with the (rendered) values of `replace` put in, or dropped where
    None; other entries keep their text. None when nothing is left."""
    entries: list[str] = []
    done: set[str] = set()
    for key, value in node.value if node else []:
        name = key.value if isinstance(key, ScalarNode) else None
        if isinstance(name, str) and name in replace:
            done.add(name)
            if replace[name] is not None:
                start, end = tree.span(key)
                entries.append(f"{tree.text[start:end]}: {replace[name]}")
        else:
            entries.append(tree.text[key.start_mark.index : value.end_mark.index])
    for name, rendered in replace.items():
        if name not in done and rendered is not None:
            entries.append(f"{_render(name, None, flow=True, key=True)}: {rendered}")
    return "{" + ", ".join(entries) + "}" if entries else None


# --- plain YAML files --------------------------------------------------------------------------


def _edit_files(
    root: Path, paths: list[str], workload: str, change: _Change, default_namespace: str
) -> list[str]:
    ref = parse_workload(workload)
    root = root.resolve()
    files: set[Path] = set()
    for entry in paths:
        files.update(yaml_files(root, resolve_path(root, entry)))
    manifests = load_files(root, files)
    source = manifests[find_workload(manifests, ref, default_namespace, ", ".join(paths))].source
    what = f"workload {ref}"
    tree = _Tree.parse(_read(root / source, source), source)
    locations = [loc for loc, obj in tree.objects() if ref.matches(obj, default_namespace)]
    if len(locations) != 1:
        raise tree.cannot(what, f"{len(locations)} documents in the file name it")
    location = locations[0]
    obj = tree.value_at(location)
    changed = change.apply(obj, what)
    if changed == obj:
        return []
    new_text = _splice(tree.text, change.edits(tree, tree.node_at(location, what), obj, what))
    tree.check(new_text, tree.values_with(location, changed), what)
    _write(root / source, new_text)
    return [source]


def set_container_image(
    root: Path,
    paths: list[str],
    workload: str,
    container: str,
    image: str,
    default_namespace: str,
) -> list[str]:
    """Set the image of `container` (or init container) of `workload` in the YAML files under
    `paths`; returns the files changed (relative to `root`), none if it already ran `image`.

    Only the image value changes; it keeps its quoting style. The workload must be defined
    exactly once under `paths`. Any `.flux.yaml` is disregarded here; `update_image` heeds it.
    """
    return _edit_files(root, paths, workload, _ImageChange(container, image), default_namespace)


def set_annotations(
    root: Path,
    paths: list[str],
    workload: str,
    changes: Mapping[str, str | None],
    default_namespace: str,
) -> list[str]:
    """Add, change (a value of None: remove) annotations of `workload` in the YAML files under
    `paths`; returns the files changed.

    New annotations go after the existing ones (an `annotations:` mapping is added at the end
    of `metadata` when there is none); a changed value keeps its quoting style when it can
    hold the new value; values that would not read back as strings (`true`, `1.10`) are
    double-quoted; an `annotations` mapping left empty is removed.
    """
    return _edit_files(root, paths, workload, _AnnotationChange(changes), default_namespace)


# --- patch files (patchUpdated) ----------------------------------------------------------------


def generated_objects(root: Path, workdir: Path, config: FluxConfig) -> list[Manifest]:
    """What the generators of `config` print for the path `workdir`, before any patch file."""
    directive = config.directive
    if not isinstance(directive, CommandUpdated | PatchUpdated):
        raise ManifestError(f"{config.source}: scanForFiles generates nothing")
    bare = CommandUpdated(generators=directive.generators, updaters=())
    return generate(root, workdir, dataclasses.replace(config, directive=bare))


class _PatchChange(Protocol):
    def __call__(
        self, patch: dict[str, Any], generated: dict[str, Any], current: dict[str, Any]
    ) -> None:
        """Change the patch document `patch` so that the `generated` object, patched, ends up
        changed; `current` is it patched with the patch file as it is now."""


def _edit_patch_file(
    root: Path,
    workdir: Path,
    config: FluxConfig,
    workload: str,
    change: _Change,
    patch_change: _PatchChange,
    default_namespace: str,
    generated: Sequence[Manifest] | None,
) -> list[str]:
    ref = parse_workload(workload)
    what = f"workload {ref}"
    root = root.resolve()
    patch_path = patch_file_path(root, workdir, config)
    source = patch_path.relative_to(root).as_posix()
    if not patch_path.parent.is_dir():
        raise ManifestError(
            f"{config.source}: the directory of patchFile {source!r} does not exist"
        )
    text = ""
    if os.path.lexists(patch_path):
        if not patch_path.is_file():
            raise ManifestError(f"{source}: patchFile is not a regular file")
        text = _read(patch_path, source)
    raw = list(generated) if generated is not None else generated_objects(root, workdir, config)
    index = find_workload(raw, ref, default_namespace, f"the output of {config.source}")
    patched = [m.obj for m in apply_patches(raw, text, source)]
    changed = change.apply(patched[index], what)
    if changed == patched[index]:
        return []
    tree = _Tree.parse(text, source)
    key = patch_key(raw[index].obj)
    docs = [
        i for i, doc in enumerate(tree.values) if isinstance(doc, dict) and patch_key(doc) == key
    ]
    if docs:
        patch = copy.deepcopy(tree.values[docs[0]])
    else:
        meta = {"name": ref.name}
        if raw[index].obj["metadata"].get("namespace"):
            meta["namespace"] = raw[index].obj["metadata"]["namespace"]
        patch = {"apiVersion": key[0], "kind": key[1], "metadata": meta}
    patch_change(patch, raw[index].obj, patched[index])
    dumped = yaml.safe_dump(patch, sort_keys=False, allow_unicode=True, width=2**16)
    dumped = dumped.replace("\n", tree.newline)
    if docs:
        node = tree.docs[docs[0]]
        end = _line_end(text, _last_end(node))
        new_text = _splice(text, [_Edit(node.start_mark.index, end, dumped)])
        expected_values = tree.values_with((docs[0], None), patch)
    else:
        separator = "---" + tree.newline if tree.docs else ""
        if text and not text.endswith("\n"):
            separator = tree.newline + separator
        new_text = text + separator + dumped
        expected_values = [*tree.values, patch]
    tree.check(new_text, expected_values, f"the patch for {what}")
    result = [_tidy(m.obj) for m in apply_patches(raw, new_text, source)]
    if result != [_tidy(obj) for obj in [*patched[:index], changed, *patched[index + 1 :]]]:
        raise ManifestError(f"{source}: the patch for {what} would not make the intended change")
    _write(patch_path, new_text)
    return [source]


def _tidy(obj: dict[str, Any]) -> dict[str, Any]:
    """`obj` without an empty `metadata.annotations` (a strategic merge that deletes the last
    annotation leaves one; editing a file removes it), so that the two compare equal."""
    if obj.get("metadata", {}).get("annotations") != {}:
        return obj
    return {**obj, "metadata": {k: v for k, v in obj["metadata"].items() if k != "annotations"}}


def _image_patch(container: str, image: str) -> _PatchChange:
    def change(patch: dict[str, Any], generated: dict[str, Any], current: dict[str, Any]) -> None:
        lists = {key for key, c in _containers(current) if c.get("name") == container}
        key = "initContainers" if lists == {"initContainers"} else "containers"
        pod = patch
        for step in _pod_spec_path(str(generated["kind"])):
            pod = pod.setdefault(step, {})
            if not isinstance(pod, dict):
                raise ManifestError(f"the existing patch's {step} is not a mapping")
        items = pod.setdefault(key, [])
        if not isinstance(items, list):
            raise ManifestError(f"the existing patch's {key} is not a list")
        for item in items:
            if isinstance(item, dict) and item.get("name") == container:
                item["image"] = image
                return
        items.append({"name": container, "image": image})

    return change


def _annotations_patch(changes: Mapping[str, str | None]) -> _PatchChange:
    def change(patch: dict[str, Any], generated: dict[str, Any], current: dict[str, Any]) -> None:
        meta = patch.setdefault("metadata", {})
        annotations = dict(_annotations(patch, "the patch"))
        base = _annotations(generated, "the generated object")
        for key, value in changes.items():
            if value is None and key in base:
                annotations[key] = None  # a strategic merge deletes keys set to null
            elif value is None or base.get(key) == value:
                annotations.pop(key, None)
            else:
                annotations[key] = value
        if annotations:
            meta["annotations"] = annotations
        else:
            meta.pop("annotations", None)

    return change


def patch_container_image(
    root: Path,
    workdir: Path,
    config: FluxConfig,
    workload: str,
    container: str,
    image: str,
    default_namespace: str,
    *,
    generated: Sequence[Manifest] | None = None,
) -> list[str]:
    """Set the image of `container` of `workload` through the patch file of the `patchUpdated`
    `config`, for the configured path `workdir`; returns the files changed (the patch file, or
    nothing when the patched output runs `image` already).

    `generated` is the generators' output (`generated_objects`) if the caller has it; otherwise
    they run. The patch file is created if missing; the workload's patch document (matched by
    apiVersion, kind, namespace and name, as the patch is applied) is added or updated.
    """
    return _edit_patch_file(
        root,
        workdir,
        config,
        workload,
        _ImageChange(container, image),
        _image_patch(container, image),
        default_namespace,
        generated,
    )


def patch_annotations(
    root: Path,
    workdir: Path,
    config: FluxConfig,
    workload: str,
    changes: Mapping[str, str | None],
    default_namespace: str,
    *,
    generated: Sequence[Manifest] | None = None,
) -> list[str]:
    """Add, change or remove (None) annotations of `workload` through the patch file, as
    `patch_container_image` does. Removing an annotation the generators write puts `null` in
    the patch (a strategic merge deletes it); one only the patch added is dropped from it."""
    return _edit_patch_file(
        root,
        workdir,
        config,
        workload,
        _AnnotationChange(changes),
        _annotations_patch(changes),
        default_namespace,
        generated,
    )


# --- policies, and dispatch by how each configured path is kept -------------------------------

POLICY_PREFIX = "fluxcd.io/"
LEGACY_POLICY_PREFIX = "flux.weave.works/"
"""Flux v1's older prefix, still read (as in `policy.annotations`)."""
TAG_FILTER_PREFIX = "filter.fluxcd.io/"
"""Another spelling of `fluxcd.io/tag.<container>`, still read."""


def policy_annotations(changes: Mapping[str, str | None]) -> dict[str, str | None]:
    """Annotation changes for policy changes (`automated`, `locked`, `tag.app`, ...: None
    removes): each is written with the `fluxcd.io/` prefix, and its other spellings are removed
    so that no older annotation contradicts it."""
    annotations: dict[str, str | None] = {}
    for policy, value in changes.items():
        if not policy or "/" in policy:
            raise ManifestError(f"{policy!r} is not a policy name (like automated or tag.app)")
        annotations[LEGACY_POLICY_PREFIX + policy] = None
        if policy.startswith("tag."):
            annotations[TAG_FILTER_PREFIX + policy.removeprefix("tag.")] = None
        annotations[POLICY_PREFIX + policy] = value
    return annotations


@dataclass(frozen=True)
class _Generated:
    """A configured path rendered by a `.flux.yaml`, and its generators' output."""

    workdir: Path
    config: FluxConfig
    objects: list[Manifest]


@dataclass(frozen=True)
class _Found:
    manifest: Manifest
    generated: _Generated | None
    """None for a plain YAML file."""


def _locate(
    root: Path, paths: list[str], manifest_generation: bool, ref: WorkloadRef, namespace: str
) -> _Found:
    """Where the workload comes from: which plain file, or which path's generators (run here,
    as rendering runs them, and as Flux v1 ran them to find a workload)."""
    sources = path_sources(root, paths, manifest_generation)
    generated = [
        _Generated(workdir, config, generated_objects(root, workdir, config))
        for workdir, config in sources.generated
    ]
    candidates = [_Found(m, None) for m in load_files(root, sources.files)] + [
        _Found(m, g) for g in generated for m in g.objects
    ]
    index = find_workload([c.manifest for c in candidates], ref, namespace, ", ".join(paths))
    return candidates[index]


def update_image(
    root: Path,
    paths: list[str],
    manifest_generation: bool,
    workload: str,
    container: str,
    image: str,
    default_namespace: str,
    *,
    timeout: float = DEFAULT_TIMEOUT,
) -> list[str]:
    """Make `container` of `workload` run `image` in the tree at `root`, however the path that
    defines the workload is kept; returns the files changed (relative to `root`), none when it
    runs `image` already. `timeout` bounds each updater command."""
    root = root.resolve()
    ref = parse_workload(workload)
    found = _locate(root, paths, manifest_generation, ref, default_namespace)
    where = found.generated
    if where is None:
        return set_container_image(
            root, [found.manifest.source], workload, container, image, default_namespace
        )
    if isinstance(where.config.directive, PatchUpdated):
        return patch_container_image(
            root,
            where.workdir,
            where.config,
            workload,
            container,
            image,
            default_namespace,
            generated=where.objects,
        )
    obj = found.manifest.obj
    if _ImageChange(container, image).apply(obj, f"workload {ref}") == obj:
        return []
    return run_image_updaters(
        root, where.workdir, where.config, ref, container, image, timeout=timeout
    )


def update_policy(
    root: Path,
    paths: list[str],
    manifest_generation: bool,
    workload: str,
    changes: Mapping[str, str | None],
    default_namespace: str,
    *,
    timeout: float = DEFAULT_TIMEOUT,
) -> list[str]:
    """Set (None: remove) policies of `workload` (`automated`, `locked`, `tag.app`, ...), as
    `update_image` sets an image: as `policy_annotations` in files and patch files, or by the
    policy updaters for the policies whose annotations would change."""
    root = root.resolve()
    ref = parse_workload(workload)
    found = _locate(root, paths, manifest_generation, ref, default_namespace)
    where = found.generated
    annotations = policy_annotations(changes)
    if where is None:
        return set_annotations(
            root, [found.manifest.source], workload, annotations, default_namespace
        )
    if isinstance(where.config.directive, PatchUpdated):
        return patch_annotations(
            root,
            where.workdir,
            where.config,
            workload,
            annotations,
            default_namespace,
            generated=where.objects,
        )
    current = _annotations(found.manifest.obj, f"workload {ref}")
    due = {
        policy: value
        for policy, value in changes.items()
        if _effective(current, policy_annotations({policy: value}))
    }
    if not due:
        return []
    return run_policy_updaters(root, where.workdir, where.config, ref, due, timeout=timeout)
