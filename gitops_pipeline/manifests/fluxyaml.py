"""`.flux.yaml`: finding the file that governs a configured path, and reading what it says.

The format is Flux v1's (version 1): exactly one of `commandUpdated`, `patchUpdated` or
`scanForFiles`. Flux v1 validated it with a JSON schema that allowed no unknown keys, so that a
`patchFile` under `commandUpdated` (a common slip) is an error rather than silently ignored; the
checks here are as strict, and every message names the file and the key at fault.

One extension: a generator may carry `timeout` (seconds); Flux v1 had one daemon-wide timeout.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from gitops_pipeline.errors import ManifestError
from gitops_pipeline.manifests.load import yaml_error

CONFIG_FILENAME = ".flux.yaml"
DEFAULT_TIMEOUT = 60.0
"""Seconds a generator may run when it gives no `timeout` (Flux v1's default sync timeout)."""
MAX_TIMEOUT = 600.0
"""The longest `timeout` accepted: a generator must end well inside the sync task's limits."""

_TOP_KEYS = ("version", "commandUpdated", "patchUpdated", "scanForFiles")
_DIRECTIVES = _TOP_KEYS[1:]


@dataclass(frozen=True)
class Generator:
    """A shell command whose standard output is multi-document YAML."""

    command: str
    timeout: float = DEFAULT_TIMEOUT


@dataclass(frozen=True)
class Updater:
    """Commands that write an image or a policy change back to the repo (run by automation).

    Either may be missing, as in Flux v1; at least one is given.
    """

    container_image: str | None
    policy: str | None


@dataclass(frozen=True)
class CommandUpdated:
    generators: tuple[Generator, ...]
    updaters: tuple[Updater, ...]


@dataclass(frozen=True)
class PatchUpdated:
    generators: tuple[Generator, ...]
    patch_file: str
    """Relative to the working directory (the configured path), as in Flux v1."""


@dataclass(frozen=True)
class ScanForFiles:
    """Load plain YAML files, as if there were no `.flux.yaml` (resets a parent's file)."""


Directive = CommandUpdated | PatchUpdated | ScanForFiles


@dataclass(frozen=True)
class FluxConfig:
    """A parsed `.flux.yaml`: where it is (absolute, and relative to the repo root for
    messages) and what it says."""

    path: Path
    source: str
    directive: Directive


def _fail(source: str, problem: str) -> ManifestError:
    return ManifestError(f"{source}: {problem}")


def _mapping(value: object, where: str, source: str, allowed: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise _fail(source, f"{where} must be a mapping")
    unknown = [str(key) for key in value if key not in allowed]
    if unknown:
        raise _fail(
            source,
            f"unknown key {unknown[0]!r} in {where} (allowed: {', '.join(allowed)})",
        )
    return value


def _command(value: object, where: str, source: str) -> str:
    if not isinstance(value, str) or not value.strip():
        raise _fail(source, f"{where} must be a non-empty string")
    return value


def _timeout(value: object, where: str, source: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise _fail(source, f"{where} must be a number of seconds")
    if not 0 < value <= MAX_TIMEOUT:
        raise _fail(source, f"{where} must be more than 0 and at most {MAX_TIMEOUT:g} seconds")
    return float(value)


def _generators(value: object, where: str, source: str) -> tuple[Generator, ...]:
    if not isinstance(value, list):
        raise _fail(source, f"{where} must be a list")
    if not value:
        # Rendering nothing would let garbage collection delete everything the path owned.
        raise _fail(source, f"{where} must list at least one command")
    found = []
    for index, item in enumerate(value):
        here = f"{where}[{index}]"
        entry = _mapping(item, here, source, ("command", "timeout"))
        if "command" not in entry:
            raise _fail(source, f"{here} has no command")
        timeout = DEFAULT_TIMEOUT
        if "timeout" in entry:
            timeout = _timeout(entry["timeout"], f"{here}.timeout", source)
        found.append(Generator(_command(entry["command"], f"{here}.command", source), timeout))
    return tuple(found)


def _updaters(value: object, where: str, source: str) -> tuple[Updater, ...]:
    if value is None:
        return ()
    if not isinstance(value, list):
        raise _fail(source, f"{where} must be a list")
    found = []
    for index, item in enumerate(value):
        here = f"{where}[{index}]"
        entry = _mapping(item, here, source, ("containerImage", "policy"))
        if not entry:
            raise _fail(source, f"{here} needs containerImage or policy")
        commands: dict[str, str | None] = {}
        for key in ("containerImage", "policy"):
            if key in entry:
                inner = _mapping(entry[key], f"{here}.{key}", source, ("command",))
                if "command" not in inner:
                    raise _fail(source, f"{here}.{key} has no command")
                commands[key] = _command(inner["command"], f"{here}.{key}.command", source)
        found.append(Updater(commands.get("containerImage"), commands.get("policy")))
    return tuple(found)


def _patch_file(value: object, source: str) -> str:
    where = "patchUpdated.patchFile"
    if not isinstance(value, str) or not value.strip():
        raise _fail(source, f"{where} must be a non-empty path")
    if Path(value).is_absolute():
        raise _fail(source, f"{where} {value!r} must be relative, not absolute")
    return value


def parse_config(text: str, source: str) -> Directive:
    """What a `.flux.yaml` says; `source` names the file in every error."""
    try:
        doc = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise yaml_error(source, exc) from None
    if doc is None:
        raise _fail(source, "is empty; expected version: 1 and one of " + ", ".join(_DIRECTIVES))
    top = _mapping(doc, "the top level", source, _TOP_KEYS)
    if "version" not in top:
        raise _fail(source, "version is missing (expected version: 1)")
    version = top["version"]
    if isinstance(version, bool) or version != 1:
        raise _fail(source, f"unsupported version {version!r} (expected 1)")
    given = [key for key in _DIRECTIVES if key in top]
    if len(given) != 1:
        found = ", ".join(given) if given else "none"
        raise _fail(source, f"needs exactly one of {', '.join(_DIRECTIVES)} (found: {found})")
    directive = given[0]
    body = top[directive]
    if directive == "scanForFiles":
        if body is not None:
            _mapping(body, "scanForFiles", source, ())
        return ScanForFiles()
    if directive == "commandUpdated":
        spec = _mapping(body, directive, source, ("generators", "updaters"))
        if "generators" not in spec:
            raise _fail(source, "commandUpdated.generators is missing")
        return CommandUpdated(
            generators=_generators(spec["generators"], "commandUpdated.generators", source),
            updaters=_updaters(spec.get("updaters", []), "commandUpdated.updaters", source),
        )
    spec = _mapping(body, directive, source, ("generators", "patchFile"))
    for required in ("generators", "patchFile"):
        if required not in spec:
            raise _fail(source, f"patchUpdated.{required} is missing")
    return PatchUpdated(
        generators=_generators(spec["generators"], "patchUpdated.generators", source),
        patch_file=_patch_file(spec["patchFile"], source),
    )


def find_config(root: Path, start: Path) -> Path | None:
    """The nearest `.flux.yaml` in `start` (a directory) or a parent, up to and including `root`.

    Both are resolved paths and `start` is inside `root`. A `.flux.yaml` that is a symlink
    leading outside the repository (or nowhere) is an error, not a miss: skipping it would
    silently fall back to a parent's file or to plain YAML.
    """
    for directory in (start, *start.parents):
        candidate = directory / CONFIG_FILENAME
        if os.path.lexists(candidate):
            relative = str(candidate.relative_to(root))
            if not candidate.resolve().is_relative_to(root):
                raise _fail(relative, "is a symlink leading outside the repository")
            if not candidate.exists():
                raise _fail(relative, "is a symlink to nothing")
            if not candidate.is_file():
                raise _fail(relative, "is not a regular file (or a symlink to one)")
            return candidate
        if directory == root:
            break
    return None


def load_config(root: Path, start: Path) -> FluxConfig | None:
    """The parsed `.flux.yaml` governing the directory `start`, if there is one."""
    path = find_config(root, start)
    if path is None:
        return None
    source = str(path.relative_to(root))
    try:
        text = path.read_text()
    except UnicodeDecodeError:
        raise _fail(source, "not UTF-8 text") from None
    return FluxConfig(path=path, source=source, directive=parse_config(text, source))


def patch_file_path(root: Path, workdir: Path, config: FluxConfig) -> Path:
    """Where the `patchFile` of a `patchUpdated` config is, for the configured path `workdir`.

    Relative to `workdir`, as in Flux v1 (so two paths sharing one `.flux.yaml` higher up keep
    one patch each). It must stay inside the repository, both as written (no `..` out of it)
    and after following symlinks; automation writes this file, so it must never lead out.
    """
    if not isinstance(config.directive, PatchUpdated):
        raise _fail(config.source, "has no patchFile (not a patchUpdated config)")
    written = config.directive.patch_file
    lexical = Path(os.path.normpath(workdir / written))
    if not lexical.is_relative_to(root) or not lexical.resolve().is_relative_to(root):
        raise _fail(config.source, f"patchFile {written!r} leads outside the repository")
    return lexical
