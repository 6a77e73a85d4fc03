"""Render a pipeline's paths: plain YAML files, or what a `.flux.yaml` generates (and patches).

Generators are commands from the repository (as in Flux v1), so they run fenced in: a fixed,
minimal environment (nothing of the worker's own, so no credential can leak into them or out
through their output), their own process group (killed whole when they overrun), a timeout
and a cap on their output.
"""

from __future__ import annotations

import contextlib
import os
import selectors
import signal
import subprocess
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from gitops_pipeline.errors import ManifestError
from gitops_pipeline.manifests.fluxyaml import (
    FluxConfig,
    Generator,
    PatchUpdated,
    ScanForFiles,
    load_config,
    patch_file_path,
)
from gitops_pipeline.manifests.load import (
    Manifest,
    load_files,
    parse_documents,
    reject_duplicates,
    resolve_path,
    yaml_files,
)
from gitops_pipeline.manifests.patch import apply_patches

OUTPUT_CAP = 32 * 1024 * 1024
"""Bytes of standard output a generator may print before it is stopped."""
GENERATOR_PATH = "/usr/local/bin:/usr/bin:/bin"
_STDERR_KEEP = 64 * 1024
_STDERR_TAIL_LINES = 5
_STDERR_TAIL_CHARS = 1000
_READ_SIZE = 64 * 1024
_EXIT_POLL = 0.01


def _kill_group(process: subprocess.Popen[bytes]) -> None:
    """SIGKILL the generator's whole process group; only while the leader is unreaped, since
    the leader's pid (which is the group id) is ours until then."""
    if process.returncode is None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait()


def _wait_exited(process: subprocess.Popen[bytes], deadline: float) -> bool:
    """Wait until the leader has exited, without reaping it (so its group id stays ours)."""
    while time.monotonic() < deadline:
        if os.waitid(os.P_PID, process.pid, os.WEXITED | os.WNOHANG | os.WNOWAIT) is not None:
            return True
        time.sleep(_EXIT_POLL)
    return False


def _stderr_tail(stderr: bytes) -> str:
    lines = stderr.decode(errors="replace").strip().splitlines()[-_STDERR_TAIL_LINES:]
    tail = "\n".join(lines)
    return tail[-_STDERR_TAIL_CHARS:] if tail else "(no error output)"


def _exit_status(returncode: int) -> str:
    if returncode < 0:
        try:
            return f"was killed by {signal.Signals(-returncode).name}"
        except ValueError:
            return f"was killed by signal {-returncode}"
    return f"exited with status {returncode}"


def run_command(
    generator: Generator,
    workdir: Path,
    what: str,
    *,
    output_cap: int = OUTPUT_CAP,
    variables: Mapping[str, str] | None = None,
) -> bytes:
    """Run `generator.command` as `run_generator` describes, with `variables` added to the
    minimal environment; return its standard output. Errors start with `what`."""
    with tempfile.TemporaryDirectory(prefix="gp-command-home-") as home:
        process = subprocess.Popen(
            ["/bin/sh", "-c", generator.command],
            cwd=workdir,
            env={"PATH": GENERATOR_PATH, "HOME": home, "LANG": "C.UTF-8", **(variables or {})},
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            start_new_session=True,
        )
        try:
            stdout, stderr = _collect(process, generator, what, output_cap)
        finally:
            _kill_group(process)
            assert process.stdout is not None and process.stderr is not None
            process.stdout.close()
            process.stderr.close()
    if process.returncode != 0:
        raise ManifestError(f"{what} {_exit_status(process.returncode)}:\n{_stderr_tail(stderr)}")
    return stdout


def run_generator(
    generator: Generator, workdir: Path, config_source: str, *, output_cap: int = OUTPUT_CAP
) -> str:
    """The standard output of `generator`, run by `/bin/sh -c` in `workdir`.

    The environment is PATH, a throw-away HOME and LANG only. On timeout or too much output the
    whole process group is killed; a command that daemonizes into a new session escapes that,
    which is the one thing a process group cannot prevent. Any other exception while waiting
    (a task's soft time limit, say) kills the group too. Errors name the command and
    `config_source`; a non-zero exit includes the last lines of its error output.
    """
    what = f"generator {generator.command!r} from {config_source}"
    stdout = run_command(generator, workdir, what, output_cap=output_cap)
    try:
        return stdout.decode()
    except UnicodeDecodeError:
        raise ManifestError(f"{what} printed output that is not UTF-8 text") from None


def _collect(
    process: subprocess.Popen[bytes], generator: Generator, what: str, output_cap: int
) -> tuple[bytes, bytes]:
    """Read both pipes until they close and the leader exits, within the timeout and cap.

    Both pipes are drained together so a command writing much to stderr cannot block. Output
    counts as complete only at end of file: children still holding stdout keep it open.
    """
    assert process.stdout is not None and process.stderr is not None
    deadline = time.monotonic() + generator.timeout
    stdout, stderr = bytearray(), bytearray()
    buffers = {process.stdout.fileno(): stdout, process.stderr.fileno(): stderr}
    overrun = ManifestError(
        f"{what} did not finish within its timeout of {generator.timeout:g}s; "
        "its process group was killed"
    )
    with selectors.DefaultSelector() as selector:
        for fd in buffers:
            os.set_blocking(fd, False)
            selector.register(fd, selectors.EVENT_READ)
        while selector.get_map():
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise overrun
            for key, _ in selector.select(remaining):
                chunk = os.read(key.fd, _READ_SIZE)
                if not chunk:
                    selector.unregister(key.fd)
                    continue
                buffer = buffers[key.fd]
                buffer += chunk
                if buffer is stdout and len(stdout) > output_cap:
                    raise ManifestError(
                        f"{what} printed more than {output_cap / 2**20:g} MiB; it was stopped"
                    )
                if buffer is stderr and len(stderr) > _STDERR_KEEP:
                    del stderr[:-_STDERR_KEEP]
    if not _wait_exited(process, deadline):
        raise overrun
    return bytes(stdout), bytes(stderr)


def _generator_source(config: FluxConfig, generator: Generator, root: Path, workdir: Path) -> str:
    source = f"{config.source} (generator: {generator.command}"
    if workdir != config.path.parent:
        source += f", in {workdir.relative_to(root).as_posix() or '.'}"
    return source + ")"


def generate(root: Path, workdir: Path, config: FluxConfig) -> list[Manifest]:
    """The objects a `commandUpdated` or `patchUpdated` config renders for the path `workdir`.

    Generators run in order in `workdir` (the configured path, not the directory of the
    `.flux.yaml`: Flux v1 runs them "in the target path used when finding that file", so one
    `.flux.yaml` higher up can serve `staging/` and `production/` alike). The first failing
    generator ends the run. A `patchUpdated` patch file is applied to the output of all of
    them; a missing patch file is an empty patch (Flux v1 creates it on the first update), but
    its directory must exist.
    """
    directive = config.directive
    if isinstance(directive, ScanForFiles):
        raise ManifestError(f"{config.source}: scanForFiles generates nothing")
    manifests: list[Manifest] = []
    for generator in directive.generators:
        output = run_generator(generator, workdir, config.source)
        manifests.extend(
            parse_documents(output, _generator_source(config, generator, root, workdir))
        )
    if not isinstance(directive, PatchUpdated):
        return manifests
    patch_path = patch_file_path(root, workdir, config)
    patch_source = patch_path.relative_to(root).as_posix()
    if not patch_path.parent.is_dir():
        raise ManifestError(
            f"{config.source}: the directory of patchFile {directive.patch_file!r} does not exist"
        )
    if not os.path.lexists(patch_path):
        return manifests
    if not patch_path.is_file():
        raise ManifestError(f"{patch_source}: patchFile is not a regular file")
    try:
        text = patch_path.read_text()
    except UnicodeDecodeError:
        raise ManifestError(f"{patch_source}: not UTF-8 text") from None
    return apply_patches(manifests, text, patch_source)


@dataclass(frozen=True)
class PathSources:
    """Where the configured paths' objects come from."""

    files: set[Path]
    """Plain YAML files."""
    generated: list[tuple[Path, FluxConfig]]
    """(working directory, `.flux.yaml`) of each generated path, once each, in path order."""


def path_sources(root: Path, paths: list[str], manifest_generation: bool) -> PathSources:
    """Which configured paths are plain YAML and which a `.flux.yaml` generates (see
    `render_paths`); `root` must be resolved."""
    files: set[Path] = set()
    generated: list[tuple[Path, FluxConfig]] = []
    seen: set[tuple[Path, Path]] = set()
    for entry in paths:
        base = resolve_path(root, entry)
        config = load_config(root, base) if manifest_generation and base.is_dir() else None
        if config is None or isinstance(config.directive, ScanForFiles):
            files.update(yaml_files(root, base))
        elif (config.path, base) not in seen:
            seen.add((config.path, base))
            generated.append((base, config))
    return PathSources(files, generated)


def render_paths(root: Path, paths: list[str], manifest_generation: bool) -> list[Manifest]:
    """The rendered set of objects over all configured `paths` of the tree at `root`.

    Without `manifest_generation`, or for a path with no `.flux.yaml` in it or above it up to
    the root (the nearest wins), or one whose `.flux.yaml` says `scanForFiles`, or a path that
    is a file: the YAML files under the path, exactly as `load_paths`. Otherwise what the
    `.flux.yaml` generates, run with that path as working directory. Two paths sharing one
    `.flux.yaml` run it once each, as Flux v1 does, since the working directory differs (the
    same path given twice runs once). Plain files come first (sorted by path), then generated
    objects in the order of `paths`; an object defined twice anywhere is an error naming both
    sources, and nothing is returned from a set with any error.
    """
    root = root.resolve()
    sources = path_sources(root, paths, manifest_generation)
    manifests = load_files(root, sources.files)
    for workdir, config in sources.generated:
        manifests.extend(generate(root, workdir, config))
    reject_duplicates(manifests)
    return manifests
