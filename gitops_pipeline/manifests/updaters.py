"""`.flux.yaml` updaters: the repository's own commands that write a change back (Flux v1's).

A `commandUpdated` config names them; `edit.update_image` / `update_policy` run them for paths it
governs. The change travels in `FLUX_*` variables, Flux v1's interface, so its updater scripts
keep working. They run fenced in as generators do: a minimal environment, their own process
group (killed whole on timeout), capped output.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from gitops_pipeline.errors import ManifestError
from gitops_pipeline.manifests.fluxyaml import (
    DEFAULT_TIMEOUT,
    CommandUpdated,
    FluxConfig,
    Generator,
)
from gitops_pipeline.manifests.generate import run_command

if TYPE_CHECKING:
    from gitops_pipeline.manifests.edit import WorkloadRef

UPDATER_OUTPUT_CAP = 1024 * 1024
"""Bytes of standard output an updater may print (it is not used) before it is stopped."""


def _image_parts(image: str) -> tuple[str, str]:
    """`FLUX_IMG` and `FLUX_TAG`: the image name without its tag, and the tag."""
    slash = image.rfind("/")
    colon = image.rfind(":")
    if "@" in image or colon <= slash:
        raise ManifestError(f"image {image!r} must name a tag (and no digest) for an updater")
    return image[:colon], image[colon + 1 :]


def _workload_variables(ref: WorkloadRef) -> dict[str, str]:
    """As Flux v1 set them, whose workload ids spell the kind in lower case."""
    kind = ref.kind.lower()
    return {
        "FLUX_WORKLOAD": f"{ref.namespace}:{kind}/{ref.name}",
        "FLUX_WL_NS": ref.namespace,
        "FLUX_WL_KIND": kind,
        "FLUX_WL_NAME": ref.name,
    }


def _snapshot(root: Path) -> dict[str, str]:
    """A digest of every file under `root` (outside `.git`), to tell what an updater changed."""
    digests: dict[str, str] = {}
    for directory, subdirectories, files in os.walk(root):
        subdirectories[:] = [d for d in subdirectories if d != ".git"]
        for name in files:
            path = Path(directory, name)
            relative = path.relative_to(root).as_posix()
            if path.is_symlink():
                digests[relative] = "symlink:" + os.readlink(path)
            else:
                digests[relative] = hashlib.sha256(path.read_bytes()).hexdigest()
    return digests


def _changed(before: Mapping[str, str], after: Mapping[str, str]) -> list[str]:
    return sorted(p for p in before.keys() | after.keys() if before.get(p) != after.get(p))


def _run(
    command: str, workdir: Path, variables: Mapping[str, str], what: str, timeout: float
) -> None:
    """`generate.run_command` with `variables` in the environment (and output discarded)."""
    run_command(
        Generator(command, timeout), workdir, what,
        output_cap=UPDATER_OUTPUT_CAP, variables=variables,
    )  # fmt: skip


def _run_updaters(
    root: Path,
    workdir: Path,
    config: FluxConfig,
    kind: str,
    runs: list[dict[str, str]],
    timeout: float,
) -> list[str]:
    """Run every updater command of `kind` once per set of variables, in order, in `workdir`;
    the files (relative to `root`) that changed."""
    if not isinstance(config.directive, CommandUpdated):
        raise ManifestError(f"{config.source}: has no updaters (not a commandUpdated config)")
    updaters = config.directive.updaters
    found = [u.container_image if kind == "containerImage" else u.policy for u in updaters]
    commands = [command for command in found if command is not None]
    if not commands:
        raise ManifestError(f"{config.source}: commandUpdated has no {kind} updater")
    root = root.resolve()
    before = _snapshot(root)
    for variables in runs:
        for command in commands:
            what = f"{kind} updater {command!r} from {config.source}"
            _run(command, workdir, variables, what, timeout)
    return _changed(before, _snapshot(root))


def run_image_updaters(
    root: Path,
    workdir: Path,
    config: FluxConfig,
    workload: WorkloadRef,
    container: str,
    image: str,
    *,
    timeout: float = DEFAULT_TIMEOUT,
) -> list[str]:
    """Run the `containerImage` updaters of the `commandUpdated` `config` in the configured path
    `workdir`, with `FLUX_WORKLOAD`, `FLUX_WL_NS`, `FLUX_WL_KIND`, `FLUX_WL_NAME`,
    `FLUX_CONTAINER`, `FLUX_IMG` (the image without its tag) and `FLUX_TAG`; returns the files
    under `root` they changed.

    Each runs by `/bin/sh -c` with PATH, a throw-away HOME and LANG besides; a non-zero exit or
    overrunning `timeout` (its process group is then killed) is an error with the last lines of
    its error output.
    """
    name, tag = _image_parts(image)
    variables = _workload_variables(workload)
    variables.update(FLUX_CONTAINER=container, FLUX_IMG=name, FLUX_TAG=tag)
    return _run_updaters(root, workdir, config, "containerImage", [variables], timeout)


def run_policy_updaters(
    root: Path,
    workdir: Path,
    config: FluxConfig,
    workload: WorkloadRef,
    changes: Mapping[str, str | None],
    *,
    timeout: float = DEFAULT_TIMEOUT,
) -> list[str]:
    """Run the `policy` updaters once per policy change, as `run_image_updaters` runs image
    updaters, with `FLUX_POLICY` (the policy: `automated`, `tag.app`) and `FLUX_POLICY_VALUE`
    (absent when the policy is to be removed) besides the workload variables."""
    base = _workload_variables(workload)
    runs = []
    for policy, value in changes.items():
        variables = {**base, "FLUX_POLICY": policy}
        if value is not None:
            variables["FLUX_POLICY_VALUE"] = value
        runs.append(variables)
    return _run_updaters(root, workdir, config, "policy", runs, timeout)
