"""Rendering with `.flux.yaml`: real generator processes, real `kubectl kustomize`."""

from __future__ import annotations

import json
import shutil
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from gitops_pipeline.errors import ManifestError
from gitops_pipeline.manifests.generate import render_paths
from gitops_pipeline.manifests.load import Manifest

KUBECTL = "/usr/bin/kubectl"
WAIT = 10.0  # an upper bound for waits on processes, not a speed check

BASE = {
    "base/kustomization.yaml": "resources: [deployment.yaml, service.yaml]\n",
    "base/deployment.yaml": """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web}}
    spec:
      containers:
        - name: app
          image: registry.local/web:1.0
          env:
            - {name: MODE, value: base}
        - name: proxy
          image: registry.local/proxy:2.0
""",
    "base/service.yaml": """\
apiVersion: v1
kind: Service
metadata:
  name: web
spec:
  selector: {app: web}
  ports: [{port: 80, targetPort: 8080}]
""",
}

CONFIGMAP = "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: plain, namespace: default}\n"


def write_files(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def _overlay(namespace: str) -> dict[str, str]:
    return {f"{namespace}/kustomization.yaml": f"namespace: {namespace}\nresources: [../base]\n"}


def _command_updated(*commands: str, timeout: float | None = None) -> str:
    extra = f", timeout: {timeout}" if timeout is not None else ""
    generators = "".join(f"    - {{command: {json.dumps(c)}{extra}}}\n" for c in commands)
    return f"version: 1\ncommandUpdated:\n  generators:\n{generators}"


def _patch_updated(patch_file: str) -> str:
    return (
        "version: 1\npatchUpdated:\n"
        "  generators: [{command: kubectl kustomize .}]\n"
        f"  patchFile: {patch_file}\n"
    )


def _by_kind(manifests: list[Manifest]) -> dict[str, Manifest]:
    return {m.obj["kind"]: m for m in manifests}


def _containers(manifest: Manifest) -> list[dict[str, Any]]:
    containers: list[dict[str, Any]] = manifest.obj["spec"]["template"]["spec"]["containers"]
    return containers


@pytest.fixture(autouse=True)
def _kubectl() -> None:
    if shutil.which(KUBECTL) is None:
        pytest.fail(f"{KUBECTL} is needed for these tests")


def test_command_updated_renders_a_kustomize_overlay(tmp_path: Path) -> None:
    write_files(
        tmp_path,
        {
            **BASE,
            **_overlay("staging"),
            "staging/.flux.yaml": _command_updated("kubectl kustomize ."),
            "staging/ignored.yaml": CONFIGMAP,  # a governed path reads no plain files
        },
    )
    rendered = render_paths(tmp_path, ["staging"], manifest_generation=True)
    assert sorted(m.ref for m in rendered) == ["staging:Deployment/web", "staging:Service/web"]
    assert {m.source for m in rendered} == {"staging/.flux.yaml (generator: kubectl kustomize .)"}


def test_one_config_above_two_paths_runs_in_each_path(tmp_path: Path) -> None:
    write_files(
        tmp_path,
        {
            **BASE,
            **_overlay("staging"),
            **_overlay("production"),
            ".flux.yaml": _command_updated("kubectl kustomize ."),
        },
    )
    rendered = render_paths(tmp_path, ["staging", "production", "staging/"], True)
    assert [m.ref for m in rendered] == [
        "staging:Service/web",
        "staging:Deployment/web",
        "production:Service/web",
        "production:Deployment/web",
    ]
    assert rendered[0].source == ".flux.yaml (generator: kubectl kustomize ., in staging)"


def test_generators_are_concatenated_and_duplicates_name_both_sources(tmp_path: Path) -> None:
    write_files(
        tmp_path,
        {
            "app/.flux.yaml": _command_updated("cat cm.txt", "echo; echo ---; cat cm.txt"),
            "app/cm.txt": CONFIGMAP,
        },
    )
    with pytest.raises(ManifestError) as caught:
        render_paths(tmp_path, ["app"], True)
    assert str(caught.value) == (
        "default:ConfigMap/plain is defined twice: in app/.flux.yaml (generator: cat cm.txt) "
        "and in app/.flux.yaml (generator: echo; echo ---; cat cm.txt)"
    )


def test_patch_updated_changes_an_image_and_adds_env(tmp_path: Path) -> None:
    patch = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: staging}
spec:
  template:
    spec:
      containers:
        - name: app
          image: registry.local/web:1.1
          env:
            - {name: FEATURE, value: "on"}
"""
    write_files(
        tmp_path,
        {
            **BASE,
            **_overlay("staging"),
            "staging/.flux.yaml": _patch_updated("flux-patch.yaml"),
            "staging/flux-patch.yaml": patch,
        },
    )
    rendered = _by_kind(render_paths(tmp_path, ["staging"], True))
    app, proxy = _containers(rendered["Deployment"])
    assert app["image"] == "registry.local/web:1.1"
    assert app["env"] == [{"name": "MODE", "value": "base"}, {"name": "FEATURE", "value": "on"}]
    assert proxy == {"name": "proxy", "image": "registry.local/proxy:2.0"}
    assert rendered["Deployment"].source == (
        "staging/.flux.yaml (generator: kubectl kustomize .), patched by staging/flux-patch.yaml"
    )
    assert rendered["Service"].source == "staging/.flux.yaml (generator: kubectl kustomize .)"


def test_missing_patch_file_is_an_empty_patch(tmp_path: Path) -> None:
    write_files(
        tmp_path,
        {**BASE, **_overlay("staging"), "staging/.flux.yaml": _patch_updated("flux-patch.yaml")},
    )
    rendered = _by_kind(render_paths(tmp_path, ["staging"], True))
    assert _containers(rendered["Deployment"])[0]["image"] == "registry.local/web:1.0"


def test_patch_matching_nothing_is_an_error(tmp_path: Path) -> None:
    write_files(
        tmp_path,
        {
            **BASE,
            **_overlay("staging"),
            "staging/.flux.yaml": _patch_updated("flux-patch.yaml"),
            "staging/flux-patch.yaml": "apiVersion: v1\nkind: Service\nmetadata: {name: web}\n",
        },
    )
    with pytest.raises(ManifestError, match=r"^staging/flux-patch.yaml: the patch for v1 "):
        render_paths(tmp_path, ["staging"], True)


def _group_members(pgid: int) -> list[str]:
    """Command lines of live processes in process group `pgid` (zombies are not running)."""
    members = []
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
            cmdline = (stat.parent / "cmdline").read_bytes()
        except (FileNotFoundError, ProcessLookupError, IndexError):
            continue
        state, pgrp = fields[0], int(fields[2])
        if pgrp == pgid and state != "Z":
            members.append(cmdline.replace(b"\0", b" ").decode().strip())
    return members


def _wait_for(condition: Any, what: str) -> None:
    deadline = time.monotonic() + WAIT
    while not condition():
        if time.monotonic() > deadline:
            pytest.fail(f"timed out waiting for {what}")
        time.sleep(0.05)


def assert_group_killed_on_timeout(call: Callable[[], object], pid_file: Path, error: str) -> None:
    """`call` runs a command that writes its pid to `pid_file` and starts two `sleep 600`: it
    must fail with ManifestError `error` at its timeout, with its whole process group gone."""
    caught: list[BaseException] = []

    def run() -> None:
        try:
            call()
        except BaseException as exc:
            caught.append(exc)

    worker = threading.Thread(target=run)
    worker.start()
    _wait_for(lambda: pid_file.exists() and pid_file.read_text().strip(), "the command")
    pgid = int(pid_file.read_text())
    _wait_for(lambda: _group_members(pgid).count("sleep 600") == 2, "both sleeps to start")
    worker.join(WAIT)
    assert not worker.is_alive()
    assert len(caught) == 1 and isinstance(caught[0], ManifestError)
    assert str(caught[0]) == error
    _wait_for(lambda: not _group_members(pgid), "the process group to be gone")


def test_hanging_generator_is_killed_with_its_whole_group(tmp_path: Path) -> None:
    pid_file = tmp_path / "generator.pid"
    command = f"echo $$ > {pid_file}; sh -c 'sleep 600 & sleep 600'"
    repo = write_files(tmp_path / "repo", {"app/.flux.yaml": _command_updated(command, timeout=1)})
    assert_group_killed_on_timeout(
        lambda: render_paths(repo, ["app"], True),
        pid_file,
        f"generator {command!r} from app/.flux.yaml did not finish within its timeout of 1s; "
        "its process group was killed",
    )


def test_background_leftovers_are_killed_after_success(tmp_path: Path) -> None:
    pid_file = tmp_path / "generator.pid"
    command = f"echo $$ > {pid_file}; sleep 600 > /dev/null 2>&1 & cat cm.txt"
    repo = write_files(
        tmp_path / "repo", {"app/.flux.yaml": _command_updated(command), "app/cm.txt": CONFIGMAP}
    )
    assert [m.ref for m in render_paths(repo, ["app"], True)] == ["default:ConfigMap/plain"]
    pgid = int(pid_file.read_text())
    _wait_for(lambda: not _group_members(pgid), "the background sleep to be killed")


def test_generator_printing_too_much_is_stopped(tmp_path: Path) -> None:
    write_files(tmp_path, {"app/.flux.yaml": _command_updated("yes", timeout=30)})
    started = time.monotonic()
    with pytest.raises(ManifestError) as caught:
        render_paths(tmp_path, ["app"], True)
    assert str(caught.value) == (
        "generator 'yes' from app/.flux.yaml printed more than 32 MiB; it was stopped"
    )
    assert time.monotonic() - started < 30  # stopped by the cap, not by the timeout


def test_failing_generator_shows_the_tail_of_its_stderr(tmp_path: Path) -> None:
    command = "for i in 1 2 3 4 5 6 7; do echo line $i >&2; done; echo out; exit 3"
    write_files(tmp_path, {"app/.flux.yaml": _command_updated(command)})
    with pytest.raises(ManifestError) as caught:
        render_paths(tmp_path, ["app"], True)
    assert str(caught.value) == (
        f"generator {command!r} from app/.flux.yaml exited with status 3:\n"
        "line 3\nline 4\nline 5\nline 6\nline 7"
    )


def test_kustomize_error_is_reported(tmp_path: Path) -> None:
    write_files(tmp_path, {"app/.flux.yaml": _command_updated("kubectl kustomize .")})
    with pytest.raises(ManifestError, match=r"kubectl kustomize \.' from app/.flux.yaml exited"):
        render_paths(tmp_path, ["app"], True)


def test_generator_environment_is_minimal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GP_TEST_CANARY", "worker-secret-value")
    command = (
        "printf 'apiVersion: v1\\nkind: ConfigMap\\nmetadata: {name: env}\\ndata:\\n  env: |\\n'; "
        "env | sort | sed 's/^/    /'; "
        'printf \'  cwd: %s\\n  home_writable: %s\\n\' "$(pwd)" "$(touch $HOME/x && echo writable)"'
    )
    write_files(tmp_path, {"app/.flux.yaml": _command_updated(command)})
    (rendered,) = render_paths(tmp_path, ["app"], True)
    data = rendered.obj["data"]
    assert "worker-secret-value" not in str(rendered.obj)
    variables = dict(line.split("=", 1) for line in data["env"].splitlines())
    variables.pop("PWD", None)  # the shell's own
    variables.pop("SHLVL", None)
    home = variables.pop("HOME")
    assert variables == {"PATH": "/usr/local/bin:/usr/bin:/bin", "LANG": "C.UTF-8"}
    assert data["cwd"] == str((tmp_path / "app").resolve())
    assert data["home_writable"] == "writable"
    assert not Path(home).exists()  # a throw-away directory


@pytest.mark.parametrize(
    ("patch_file", "expected"),
    [
        ("../x.yaml", r"^\.flux\.yaml: patchFile '\.\./x\.yaml' leads outside the repository"),
        ("/etc/x.yaml", r"^\.flux\.yaml: patchUpdated\.patchFile '/etc/x\.yaml' must be relative"),
        ("escape.yaml", r"^\.flux\.yaml: patchFile 'escape\.yaml' leads outside the repository"),
    ],
)
def test_patch_file_outside_the_repo_is_refused(
    tmp_path: Path, patch_file: str, expected: str
) -> None:
    outside = write_files(tmp_path, {"x.yaml": "", "outside/patch.yaml": ""})
    repo = write_files(
        outside / "repo",
        {
            **BASE,
            "kustomization.yaml": "resources: [base]\n",
            ".flux.yaml": _patch_updated(patch_file),
        },
    )
    (repo / "escape.yaml").symlink_to(outside / "outside" / "patch.yaml")
    with pytest.raises(ManifestError, match=expected):
        render_paths(repo, ["."], True)


def test_config_symlink_escaping_the_repo_is_refused(tmp_path: Path) -> None:
    outside = write_files(tmp_path, {"evil/.flux.yaml": _command_updated("echo hi")})
    repo = write_files(tmp_path / "repo", {"app/cm.yaml": CONFIGMAP})
    (repo / "app" / ".flux.yaml").symlink_to(outside / "evil" / ".flux.yaml")
    with pytest.raises(ManifestError, match=r"^app/\.flux\.yaml: is a symlink leading outside"):
        render_paths(repo, ["app"], True)


def test_scan_for_files_loads_plain_files(tmp_path: Path) -> None:
    write_files(
        tmp_path,
        {
            ".flux.yaml": _command_updated("exit 1"),
            "plain/.flux.yaml": "version: 1\nscanForFiles: {}\n",
            "plain/cm.yaml": CONFIGMAP,
        },
    )
    rendered = render_paths(tmp_path, ["plain"], True)
    assert [(m.ref, m.source) for m in rendered] == [("default:ConfigMap/plain", "plain/cm.yaml")]


def test_without_manifest_generation_flux_yaml_is_ignored(tmp_path: Path) -> None:
    write_files(
        tmp_path,
        {"app/.flux.yaml": _command_updated("exit 1"), "app/cm.yaml": CONFIGMAP},
    )
    rendered = render_paths(tmp_path, ["app"], manifest_generation=False)
    assert [(m.ref, m.source) for m in rendered] == [("default:ConfigMap/plain", "app/cm.yaml")]


def test_paths_without_config_load_plain_files_next_to_generated_ones(tmp_path: Path) -> None:
    write_files(
        tmp_path,
        {
            **BASE,
            **_overlay("staging"),
            "staging/.flux.yaml": _command_updated("kubectl kustomize ."),
            "plain/cm.yaml": CONFIGMAP,
        },
    )
    rendered = render_paths(tmp_path, ["staging", "plain"], True)
    assert [m.ref for m in rendered] == [
        "default:ConfigMap/plain",
        "staging:Service/web",
        "staging:Deployment/web",
    ]


def test_same_object_from_a_file_and_a_generator_names_both(tmp_path: Path) -> None:
    write_files(
        tmp_path,
        {
            "gen/.flux.yaml": _command_updated("cat ../plain/cm.yaml"),
            "plain/cm.yaml": CONFIGMAP,
        },
    )
    with pytest.raises(ManifestError) as caught:
        render_paths(tmp_path, ["gen", "plain"], True)
    assert str(caught.value) == (
        "default:ConfigMap/plain is defined twice: in plain/cm.yaml "
        "and in gen/.flux.yaml (generator: cat ../plain/cm.yaml)"
    )
