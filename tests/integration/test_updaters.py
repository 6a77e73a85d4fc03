"""Writing changes back through `.flux.yaml`: real updater and generator processes."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from test_generate import assert_group_killed_on_timeout, write_files

from gitops_pipeline.errors import ManifestError
from gitops_pipeline.manifests.edit import parse_workload, update_image, update_policy
from gitops_pipeline.manifests.fluxyaml import load_config
from gitops_pipeline.manifests.generate import render_paths
from gitops_pipeline.manifests.updaters import run_image_updaters, run_policy_updaters

WEB = parse_workload("shop:Deployment/web")

TEMPLATE = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  namespace: shop
  annotations: {fluxcd.io/locked: "true"}
spec:
  template:
    spec:
      containers:
      - name: app
        image: IMAGE
"""
GENERATOR = 'sed "s|IMAGE|$(cat image.txt)|" deployment.tmpl'
IMAGE_UPDATER = """\
#!/bin/sh
set -eu
printf '%s:%s\\n' "$FLUX_IMG" "$FLUX_TAG" > image.txt
env | grep '^FLUX_' | sort > image-env.txt
"""
POLICY_UPDATER = """\
#!/bin/sh
set -eu
echo "$FLUX_WORKLOAD $FLUX_POLICY=${FLUX_POLICY_VALUE-<removed>}" >> policies.log
"""


def _command_updated(image: str | None, policy: str | None = None) -> str:
    updater = {}
    if image is not None:
        updater["containerImage"] = {"command": image}
    if policy is not None:
        updater["policy"] = {"command": policy}
    return json.dumps(
        {
            "version": 1,
            "commandUpdated": {"generators": [{"command": GENERATOR}], "updaters": [updater]},
        }
    )


def _repo(tmp_path: Path, flux_yaml: str) -> Path:
    return write_files(
        tmp_path / "repo",
        {
            "app/.flux.yaml": flux_yaml,
            "app/deployment.tmpl": TEMPLATE,
            "app/image.txt": "registry.local/web:1.0\n",
            "app/set-image.sh": IMAGE_UPDATER,
            "app/set-policy.sh": POLICY_UPDATER,
        },
    )


def _image(root: Path) -> Any:
    (rendered,) = render_paths(root, ["app"], True)
    return rendered.obj["spec"]["template"]["spec"]["containers"][0]["image"]


def test_image_updater_gets_the_flux_variables(tmp_path: Path) -> None:
    root = _repo(tmp_path, _command_updated("sh set-image.sh", "sh set-policy.sh"))
    changed = update_image(
        root, ["app"], True, "shop:Deployment/web", "app", "registry.local:5000/web:1.1", "default"
    )
    assert changed == ["app/image-env.txt", "app/image.txt"]
    assert _image(root) == "registry.local:5000/web:1.1"
    assert (root / "app/image-env.txt").read_text().splitlines() == [
        "FLUX_CONTAINER=app",
        "FLUX_IMG=registry.local:5000/web",
        "FLUX_TAG=1.1",
        "FLUX_WL_KIND=deployment",
        "FLUX_WL_NAME=web",
        "FLUX_WL_NS=shop",
        "FLUX_WORKLOAD=shop:deployment/web",
    ]
    (root / "app/image-env.txt").unlink()
    workload, image = "shop:Deployment/web", "registry.local:5000/web:1.1"
    assert update_image(root, ["app"], True, workload, "app", image, "default") == []
    assert not (root / "app/image-env.txt").exists()  # already running it: no updater ran


def test_policy_updater_runs_once_per_policy_that_changes(tmp_path: Path) -> None:
    root = _repo(tmp_path, _command_updated("sh set-image.sh", "sh set-policy.sh"))
    changes = {"automated": "true", "locked": None, "tag.app": None}
    changed = update_policy(root, ["app"], True, "shop:Deployment/web", changes, "default")
    assert changed == ["app/policies.log"]
    assert (root / "app/policies.log").read_text().splitlines() == [
        "shop:deployment/web automated=true",
        "shop:deployment/web locked=<removed>",  # tag.app is not set, so nothing to remove
    ]


def test_updater_environment_is_minimal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GP_TEST_CANARY", "worker-secret-value")
    root = _repo(tmp_path, _command_updated("env > env.txt; pwd > pwd.txt"))
    config = load_config(root.resolve(), (root / "app").resolve())
    assert config is not None
    workdir = (root / "app").resolve()
    run_image_updaters(root, workdir, config, WEB, "app", "r/web:2", timeout=10)
    variables = dict(line.split("=", 1) for line in (root / "app/env.txt").read_text().splitlines())
    for own in ("PWD", "SHLVL", "_"):  # the shell's own
        variables.pop(own, None)
    assert not Path(variables.pop("HOME")).exists()  # a throw-away directory
    assert variables == {
        "PATH": "/usr/local/bin:/usr/bin:/bin",
        "LANG": "C.UTF-8",
        "FLUX_WORKLOAD": "shop:deployment/web",
        "FLUX_WL_NS": "shop",
        "FLUX_WL_KIND": "deployment",
        "FLUX_WL_NAME": "web",
        "FLUX_CONTAINER": "app",
        "FLUX_IMG": "r/web",
        "FLUX_TAG": "2",
    }
    assert (root / "app/pwd.txt").read_text().strip() == str(workdir)


def test_a_hanging_updater_is_killed_with_its_group(tmp_path: Path) -> None:
    pid_file = tmp_path / "updater.pid"
    command = f"echo $$ > {pid_file}; sleep 600 & sleep 600"
    root = _repo(tmp_path, _command_updated(command))
    config = load_config(root.resolve(), (root / "app").resolve())
    assert config is not None
    assert_group_killed_on_timeout(
        lambda: run_image_updaters(root, root / "app", config, WEB, "app", "r/w:2", timeout=1),
        pid_file,
        f"containerImage updater {command!r} from app/.flux.yaml did not finish within its "
        "timeout of 1s; its process group was killed",
    )


def test_a_failing_updater_shows_the_tail_of_its_stderr(tmp_path: Path) -> None:
    command = "for i in 1 2 3 4 5 6; do echo line $i >&2; done; exit 4"
    root = _repo(tmp_path, _command_updated(None, command))
    with pytest.raises(ManifestError) as caught:
        update_policy(root, ["app"], True, "shop:Deployment/web", {"automated": "true"}, "x")
    assert str(caught.value) == (
        f"policy updater {command!r} from app/.flux.yaml exited with status 4:\n"
        "line 2\nline 3\nline 4\nline 5\nline 6"
    )


def test_a_missing_updater_is_an_error(tmp_path: Path) -> None:
    root = _repo(tmp_path, _command_updated(None, "sh set-policy.sh"))
    with pytest.raises(
        ManifestError, match=r"^app/.flux.yaml: commandUpdated has no containerImage"
    ):
        update_image(root, ["app"], True, "shop:Deployment/web", "app", "r/w:2", "default")
    with pytest.raises(ManifestError, match=r"must name a tag \(and no digest\)"):
        update_image(root, ["app"], True, "shop:Deployment/web", "app", "r/w@sha256:ab", "d")


def test_patch_updated_writes_the_patch_file(tmp_path: Path) -> None:
    flux_yaml = "version: 1\npatchUpdated:\n  generators: [{command: cat deployment.yaml}]\n"
    flux_yaml += "  patchFile: patches/auto.yaml\n"
    deployment = TEMPLATE.replace("IMAGE", "registry.local/web:1.0")
    root = write_files(
        tmp_path / "repo",
        {
            "app/.flux.yaml": flux_yaml,
            "app/deployment.yaml": deployment,
            "app/patches/keep": "",
            "plain/cm.yaml": "apiVersion: v1\nkind: ConfigMap\nmetadata: {name: cm}\n",
        },
    )
    paths = ["plain", "app"]
    workload = "shop:Deployment/web"
    assert update_image(root, paths, True, workload, "app", "r/web:2", "d") == [
        "app/patches/auto.yaml"
    ]
    assert update_policy(root, paths, True, workload, {"locked": None}, "d") == [
        "app/patches/auto.yaml"
    ]
    rendered = {m.obj["kind"]: m.obj for m in render_paths(root, paths, True)}
    assert rendered["Deployment"]["spec"]["template"]["spec"]["containers"][0]["image"] == (
        "r/web:2"
    )
    assert rendered["Deployment"]["metadata"]["annotations"] == {}  # as a strategic merge leaves it
    assert (root / "app/patches/auto.yaml").read_text() == (
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n  namespace: shop\n"
        "  annotations:\n    fluxcd.io/locked: null\nspec:\n  template:\n    spec:\n"
        "      containers:\n      - name: app\n        image: r/web:2\n"
    )
    assert (root / "app/deployment.yaml").read_text() == deployment
    assert update_image(root, paths, True, workload, "app", "r/web:2", "d") == []


def test_run_policy_updaters_without_a_value_leaves_the_variable_out(tmp_path: Path) -> None:
    root = _repo(tmp_path, _command_updated(None, "env | grep ^FLUX_POLICY >> policy-env.txt"))
    config = load_config(root.resolve(), (root / "app").resolve())
    assert config is not None
    changes = {"tag.app": "glob:1.*", "automated": None}
    changed = run_policy_updaters(root, root / "app", config, WEB, changes)
    assert changed == ["app/policy-env.txt"]
    assert (root / "app/policy-env.txt").read_text().splitlines() == [
        "FLUX_POLICY=tag.app",
        "FLUX_POLICY_VALUE=glob:1.*",
        "FLUX_POLICY=automated",
    ]
