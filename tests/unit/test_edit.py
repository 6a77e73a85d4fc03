"""In-place image and annotation edits: everything outside the change survives byte for byte."""

from __future__ import annotations

import functools
from pathlib import Path
from typing import Any

import pytest
import yaml

from gitops_pipeline.errors import ManifestError
from gitops_pipeline.manifests import edit
from gitops_pipeline.manifests.edit import (
    parse_workload,
    patch_annotations,
    patch_container_image,
    policy_annotations,
    set_annotations,
    set_container_image,
    update_image,
    update_policy,
)
from gitops_pipeline.manifests.fluxyaml import FluxConfig, Generator, PatchUpdated
from gitops_pipeline.manifests.load import parse_documents
from gitops_pipeline.manifests.patch import apply_patches

GNARLY = """\
# Header: the shop's manifests, kept by hand
# (and a second header line)
---
apiVersion: v1
kind: ConfigMap
metadata: {name: settings, namespace: shop}
data:
  defaults: &defaults
    color: "blue"
    size: 'large'
  copy: *defaults
...
---
# The web front end
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web   # inline comment
  namespace: shop
  labels:
    app: web
  annotations:
    fluxcd.io/automated: 'true'
    note: "keep me"
spec:
  replicas: 2

  selector: {matchLabels: {app: web}}
  template:
    metadata:
      labels: {app: web}
    spec:
      initContainers:
      - name: migrate
        image: 'registry.local/migrate:1.0'   # pinned by hand
        args: ["--wait", '--fast']
      containers:
        - name: app
          image: "registry.local/web:1.0"
          ports: [{containerPort: 8080}]
        - name: proxy
          image: registry.local/proxy:2.0 # sidecar

          # a comment after the last container
---
apiVersion: batch/v1
kind: CronJob
metadata:
  name: nightly
spec:
  schedule: "0 1 * * *"
  jobTemplate:
    spec:
      template:
        spec:
          containers:
          -   name: report
              image: registry.local/report:3.1
              command:
                - /bin/report
...
"""
SOURCE = "k/shop.yaml"
NAMESPACE = "ops"  # the CronJob names none


def _tree(tmp_path: Path, files: dict[str, str | bytes]) -> Path:
    for name, content in files.items():
        path = tmp_path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, bytes):
            path.write_bytes(content)
        else:
            path.write_bytes(content.encode())
    return tmp_path


def _replaced(text: str, old: str, new: str) -> str:
    assert text.count(old) == 1, f"{old!r} must occur once"
    return text.replace(old, new)


def _text(root: Path, name: str = SOURCE) -> str:
    return (root / name).read_bytes().decode()


# --- images ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("workload", "container", "old", "new", "image"),
    [
        (
            "shop:Deployment/web",
            "app",
            'image: "registry.local/web:1.0"',
            'image: "registry.local/web:1.1"',
            "registry.local/web:1.1",
        ),
        (
            "shop:Deployment/web",
            "proxy",
            "image: registry.local/proxy:2.0 #",
            "image: registry.local/proxy:2.1-rc.1 #",
            "registry.local/proxy:2.1-rc.1",
        ),
        (
            "shop:Deployment/web",
            "migrate",
            "image: 'registry.local/migrate:1.0'   #",
            "image: 'registry.local/migrate:1.2'   #",
            "registry.local/migrate:1.2",
        ),
        (
            "ops:CronJob/nightly",
            "report",
            "image: registry.local/report:3.1\n",
            "image: other.registry:5000/team/report:4.0\n",
            "other.registry:5000/team/report:4.0",
        ),
        (
            "shop:deployment/web",  # Flux v1 spells kinds in lower case
            "app",
            'image: "registry.local/web:1.0"',
            'image: "registry.local/web:1.0-hotfix"',
            "registry.local/web:1.0-hotfix",
        ),
    ],
)
def test_image_change_touches_only_the_image_value(
    tmp_path: Path, workload: str, container: str, old: str, new: str, image: str
) -> None:
    root = _tree(tmp_path, {SOURCE: GNARLY, "k/other.yaml": "# nothing here\n"})
    changed = set_container_image(root, ["k"], workload, container, image, NAMESPACE)
    assert changed == [SOURCE]
    assert _text(root) == _replaced(GNARLY, old, new)
    assert _text(root, "k/other.yaml") == "# nothing here\n"


def test_crlf_line_ends_survive(tmp_path: Path) -> None:
    crlf = GNARLY.replace("\n", "\r\n")
    root = _tree(tmp_path, {SOURCE: crlf.encode()})
    set_container_image(root, ["k"], "shop:Deployment/web", "app", "r/web:2", NAMESPACE)
    set_annotations(root, ["k"], "ops:CronJob/nightly", {"fluxcd.io/automated": "true"}, NAMESPACE)
    expected = _replaced(crlf, '"registry.local/web:1.0"', '"r/web:2"')
    expected = _replaced(
        expected,
        "  name: nightly\r\n",
        '  name: nightly\r\n  annotations:\r\n    fluxcd.io/automated: "true"\r\n',
    )
    assert (root / SOURCE).read_bytes() == expected.encode()


def test_unchanged_image_writes_nothing(tmp_path: Path) -> None:
    root = _tree(tmp_path, {SOURCE: GNARLY})
    before = (root / SOURCE).stat()
    workload, image = "shop:Deployment/web", "registry.local/web:1.0"
    assert set_container_image(root, ["k"], workload, "app", image, NAMESPACE) == []
    assert (root / SOURCE).stat().st_mtime_ns == before.st_mtime_ns
    assert _text(root) == GNARLY


def test_image_values_needing_quotes_get_them(tmp_path: Path) -> None:
    text = "apiVersion: v1\nkind: Pod\n"  # not a workload kind: skipped for images
    text += (
        "---\napiVersion: apps/v1\nkind: DaemonSet\nmetadata: {name: agent}\n"
        "spec:\n  template:\n    spec:\n      containers: [{name: a, image: r/agent:1}]\n"
    )
    root = _tree(tmp_path, {"k/ds.yaml": text})
    set_container_image(root, ["k"], "ops:DaemonSet/agent", "a", "r/agent:1.0 #x", NAMESPACE)
    assert _text(root, "k/ds.yaml") == _replaced(text, "r/agent:1}", '"r/agent:1.0 #x"}')


def test_a_list_item_and_a_symlinked_file(tmp_path: Path) -> None:
    text = """\
apiVersion: v1
kind: List
items:
- apiVersion: apps/v1
  kind: StatefulSet
  metadata:
    name: db
  spec:
    template:
      spec:
        containers:
        - name: db
          image: postgres:15   # major pinned
"""
    root = _tree(tmp_path, {"real/db.yaml": text})
    (root / "k").mkdir()
    (root / "k" / "db.yaml").symlink_to(root / "real" / "db.yaml")
    assert set_container_image(root, ["k"], "ops:StatefulSet/db", "db", "postgres:16", NAMESPACE)
    assert (root / "k" / "db.yaml").is_symlink()
    assert _text(root, "real/db.yaml") == _replaced(text, "postgres:15", "postgres:16")


def test_a_job_is_a_workload(tmp_path: Path) -> None:
    text = (
        "apiVersion: batch/v1\nkind: Job\nmetadata:\n  name: once\n  namespace: ops\nspec:\n"
        "  template:\n    spec:\n      containers:\n      - name: run\n        image: r/once:1\n"
    )
    root = _tree(tmp_path, {"k/job.yaml": text})
    set_container_image(root, ["k/job.yaml"], "ops:Job/once", "run", "r/once:2", "default")
    assert _text(root, "k/job.yaml") == _replaced(text, "r/once:1", "r/once:2")


# --- errors ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("workload", "container", "message"),
    [
        ("shop:Deployment/nope", "app", r"^workload shop:Deployment/nope not found in k$"),
        ("default:CronJob/nightly", "report", r"^workload default:CronJob/nightly not found"),
        (
            "shop:Deployment/web",
            "db",
            r"^workload shop:Deployment/web has no container 'db' \(it has: migrate, app, proxy\)$",
        ),
        ("shop:ConfigMap/settings", "x", r"^workload shop:ConfigMap/settings is not a workload"),
        ("web", "app", r"^workload 'web' is not of the form namespace:Kind/name$"),
        ("shop:Deployment/", "app", r"is not of the form namespace:Kind/name$"),
    ],
)
def test_image_errors(tmp_path: Path, workload: str, container: str, message: str) -> None:
    root = _tree(tmp_path, {SOURCE: GNARLY})
    with pytest.raises(ManifestError, match=message):
        set_container_image(root, ["k"], workload, container, "r/x:1", NAMESPACE)
    assert _text(root) == GNARLY


def test_a_workload_defined_twice_names_both_files(tmp_path: Path) -> None:
    root = _tree(tmp_path, {SOURCE: GNARLY, "k/copy.yaml": GNARLY.split("...\n")[1]})
    with pytest.raises(ManifestError) as caught:
        set_container_image(root, ["k"], "shop:Deployment/web", "app", "r/x:1", NAMESPACE)
    assert str(caught.value) == (
        "workload shop:Deployment/web is defined twice: in k/copy.yaml and in k/shop.yaml"
    )


SHARED = """\
apiVersion: apps/v1
kind: Deployment
metadata: {name: web}
spec:
  template:
    spec:
      containers:
      - name: app
        image: &image registry.local/web:1.0
      - name: copy
        image: *image
"""


@pytest.mark.parametrize("container", ["app", "copy"])
def test_an_image_shared_through_an_alias_is_refused(tmp_path: Path, container: str) -> None:
    root = _tree(tmp_path, {"k/web.yaml": SHARED})
    with pytest.raises(ManifestError) as caught:
        set_container_image(root, ["k"], "ops:Deployment/web", container, "r/w:2", NAMESPACE)
    assert str(caught.value) == (
        "k/web.yaml: cannot edit workload ops:Deployment/web in place: "
        "'image' is shared through a YAML alias; edit it by hand"
    )
    assert _text(root, "k/web.yaml") == SHARED


def test_an_anchor_not_used_elsewhere_is_edited_and_kept(tmp_path: Path) -> None:
    text = SHARED.replace("      - name: copy\n        image: *image\n", "")
    root = _tree(tmp_path, {"k/web.yaml": text})
    set_container_image(root, ["k"], "ops:Deployment/web", "app", "r/w:2", NAMESPACE)
    assert _text(root, "k/web.yaml") == _replaced(text, "registry.local/web:1.0", "r/w:2")


def test_a_container_from_a_merge_key_is_refused(tmp_path: Path) -> None:
    text = SHARED.replace("        image: *image\n", "        <<: {image: r/base:1}\n")
    root = _tree(tmp_path, {"k/web.yaml": text})
    with pytest.raises(ManifestError, match="'image' may come from a YAML merge key"):
        set_container_image(root, ["k"], "ops:Deployment/web", "copy", "r/w:2", NAMESPACE)


def test_invalid_yaml_is_reported_with_its_line(tmp_path: Path) -> None:
    root = _tree(tmp_path, {SOURCE: GNARLY, "k/bad.yaml": "a: [\n"})
    with pytest.raises(ManifestError, match=r"^k/bad.yaml:2: "):
        set_container_image(root, ["k"], "shop:Deployment/web", "app", "r/x:1", NAMESPACE)


def test_parse_workload() -> None:
    ref = parse_workload("shop:Deployment/web")
    assert (ref.namespace, ref.kind, ref.name, str(ref)) == (
        "shop",
        "Deployment",
        "web",
        "shop:Deployment/web",
    )


# --- annotations -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("workload", "changes", "old", "new"),
    [
        (
            "shop:Deployment/web",
            {"fluxcd.io/automated": "false"},
            "fluxcd.io/automated: 'true'",
            "fluxcd.io/automated: 'false'",
        ),
        (
            "shop:Deployment/web",
            {"fluxcd.io/tag.app": "semver:~1.0", "fluxcd.io/locked": "true"},
            '    note: "keep me"\n',
            '    note: "keep me"\n    fluxcd.io/tag.app: semver:~1.0\n'
            '    fluxcd.io/locked: "true"\n',
        ),
        ("shop:Deployment/web", {"note": None}, '    note: "keep me"\n', ""),
        (
            "shop:Deployment/web",
            {"note": None, "fluxcd.io/automated": None, "absent": None},
            "  annotations:\n    fluxcd.io/automated: 'true'\n    note: \"keep me\"\n",
            "",
        ),
        (
            "shop:Deployment/web",
            {"note": None, "fluxcd.io/automated": None, "fluxcd.io/locked": "1"},
            "    fluxcd.io/automated: 'true'\n    note: \"keep me\"\n",
            '    fluxcd.io/locked: "1"\n',
        ),
        (
            "ops:CronJob/nightly",
            {"fluxcd.io/automated": "true", "team": "o'reilly: ops"},
            "  name: nightly\n",
            '  name: nightly\n  annotations:\n    fluxcd.io/automated: "true"\n'
            '    team: "o\'reilly: ops"\n',
        ),
        (
            "shop:ConfigMap/settings",
            {"fluxcd.io/ignore": "true"},
            "metadata: {name: settings, namespace: shop}",
            'metadata: {name: settings, namespace: shop, annotations: {fluxcd.io/ignore: "true"}}',
        ),
    ],
)
def test_annotation_changes_touch_only_their_lines(
    tmp_path: Path, workload: str, changes: dict[str, str | None], old: str, new: str
) -> None:
    root = _tree(tmp_path, {SOURCE: GNARLY})
    assert set_annotations(root, ["k"], workload, changes, NAMESPACE) == [SOURCE]
    assert _text(root) == _replaced(GNARLY, old, new)


def test_annotations_already_as_asked_write_nothing(tmp_path: Path) -> None:
    root = _tree(tmp_path, {SOURCE: GNARLY})
    changes = {"fluxcd.io/automated": "true", "fluxcd.io/locked": None}
    assert set_annotations(root, ["k"], "shop:Deployment/web", changes, NAMESPACE) == []
    assert _text(root) == GNARLY


OBJECT = "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\n{annotations}spec: {{}}\n"


@pytest.mark.parametrize(
    ("annotations", "changes", "expected"),
    [
        ("  annotations: {a: x, b: 'y'}\n", {"b": "z"}, "  annotations: {a: x, b: 'z'}\n"),
        ("  annotations: {a: x}\n", {"c": "on"}, '  annotations: {a: x, c: "on"}\n'),
        ("  annotations: {a: x}   # flow\n", {"a": None}, ""),
        ("  annotations: {}\n", {"a": "1.10"}, '  annotations: {a: "1.10"}\n'),
        ("  annotations:\n", {"a": "b"}, "  annotations:\n    a: b\n"),
        ("  annotations: ~\n", {"a": "b"}, "  annotations:\n    a: b\n"),
        (
            "  annotations:\n    a: |\n      two\n      lines\n",
            {"a": "one"},
            '  annotations:\n    a: "one"\n',
        ),
        ("  annotations:\n    a:\n", {"a": "b"}, "  annotations:\n    a: b\n"),
        ("  annotations:\n    a: true\n", {"a": "true"}, '  annotations:\n    a: "true"\n'),
    ],
)
def test_annotation_shapes(
    tmp_path: Path, annotations: str, changes: dict[str, str | None], expected: str
) -> None:
    root = _tree(tmp_path, {"k/svc.yaml": OBJECT.format(annotations=annotations)})
    set_annotations(root, ["k"], "ops:Service/web", changes, NAMESPACE)
    assert _text(root, "k/svc.yaml") == OBJECT.format(annotations=expected)
    loaded = yaml.safe_load(_text(root, "k/svc.yaml"))
    assert all(isinstance(v, str) for v in loaded["metadata"].get("annotations", {}).values())


def test_annotations_at_the_end_of_a_file_without_a_final_line_break(tmp_path: Path) -> None:
    text = "apiVersion: v1\nkind: Service\nmetadata:\n  name: web"
    root = _tree(tmp_path, {"k/svc.yaml": text})
    set_annotations(root, ["k"], "ops:Service/web", {"a": "b"}, NAMESPACE)
    assert _text(root, "k/svc.yaml") == text + "\n  annotations:\n    a: b\n"


def test_annotations_shared_through_an_alias_are_refused(tmp_path: Path) -> None:
    text = (
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n"
        "  annotations: &common {x: y}\nspec:\n  template:\n    metadata:\n"
        "      annotations: *common\n"
    )
    root = _tree(tmp_path, {"k/web.yaml": text})
    with pytest.raises(ManifestError, match="'annotations' is shared through a YAML alias"):
        set_annotations(root, ["k"], "ops:Deployment/web", {"x": "z"}, NAMESPACE)
    assert _text(root, "k/web.yaml") == text


# --- patch files -------------------------------------------------------------------------------

GENERATED = parse_documents(
    """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
  annotations: {fluxcd.io/automated: "true"}
spec:
  template:
    spec:
      initContainers: [{name: migrate, image: r/migrate:1}]
      containers:
      - {name: app, image: r/web:1}
      - {name: proxy, image: r/proxy:1}
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec: {ports: [{port: 80}]}
""",
    "generator",
)
OTHER_PATCHES = """\
# Patches for the shop (kept by automation)
---
apiVersion: v1
kind: Service
metadata: {name: web, namespace: shop}
spec:
  ports: [{port: 80, targetPort: 8080}]   # a comment
---
# the front end
apiVersion: apps/v1
kind: Deployment
metadata:
  name: web
spec:
  replicas: 3
...
"""


def _config(root: Path) -> FluxConfig:
    directive = PatchUpdated(generators=(Generator("cat generated.yaml"),), patch_file="patch.yaml")
    return FluxConfig(path=root / ".flux.yaml", source=".flux.yaml", directive=directive)


def _patch_image(root: Path, workload: str, container: str, image: str) -> list[str]:
    return patch_container_image(
        root, root, _config(root), workload, container, image, NAMESPACE, generated=GENERATED
    )


def _patch_annotations(root: Path, changes: dict[str, str | None]) -> list[str]:
    return patch_annotations(
        root, root, _config(root), "ops:Deployment/web", changes, NAMESPACE, generated=GENERATED
    )


def _patched(root: Path) -> dict[str, Any]:
    objects = apply_patches(list(GENERATED), _text(root, "patch.yaml"), "patch.yaml")
    return objects[0].obj


def test_a_new_patch_file(tmp_path: Path) -> None:
    changed = _patch_image(tmp_path, "ops:Deployment/web", "app", "r/web:2")
    assert changed == ["patch.yaml"]
    assert _text(tmp_path, "patch.yaml") == (
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  template:\n"
        "    spec:\n      containers:\n      - name: app\n        image: r/web:2\n"
    )
    assert _patched(tmp_path)["spec"]["template"]["spec"]["containers"] == [
        {"name": "app", "image": "r/web:2"},
        {"name": "proxy", "image": "r/proxy:1"},
    ]


def test_an_existing_patch_file_keeps_its_other_patches(tmp_path: Path) -> None:
    root = _tree(tmp_path, {"patch.yaml": OTHER_PATCHES})
    _patch_image(root, "ops:Deployment/web", "migrate", "r/migrate:2")
    head, _, _ = OTHER_PATCHES.partition("apiVersion: apps/v1")
    assert _text(root, "patch.yaml") == head + (
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\nspec:\n  replicas: 3\n"
        "  template:\n    spec:\n      initContainers:\n      - name: migrate\n"
        "        image: r/migrate:2\n...\n"
    )
    assert _patched(root)["spec"]["template"]["spec"]["initContainers"] == [
        {"name": "migrate", "image": "r/migrate:2"}
    ]
    _patch_image(root, "ops:Deployment/web", "migrate", "r/migrate:3")
    assert _text(root, "patch.yaml").count("image:") == 1
    assert _patched(root)["spec"]["template"]["spec"]["initContainers"][0]["image"] == (
        "r/migrate:3"
    )


def test_a_patch_document_is_appended_after_the_others(tmp_path: Path) -> None:
    service_only = OTHER_PATCHES.split("---\n# the front end")[0]
    root = _tree(tmp_path, {"patch.yaml": service_only.rstrip("\n")})
    _patch_annotations(root, {"fluxcd.io/locked": "true"})
    assert _text(root, "patch.yaml") == service_only + (
        "---\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: web\n"
        "  annotations:\n    fluxcd.io/locked: 'true'\n"
    )


def test_patch_annotations_remove_with_null_or_by_dropping(tmp_path: Path) -> None:
    root = _tree(tmp_path, {"patch.yaml": OTHER_PATCHES})
    annotate = functools.partial(_patch_annotations, root)
    assert annotate({"fluxcd.io/automated": None, "fluxcd.io/locked": "true"}) == ["patch.yaml"]
    assert yaml.safe_load_all(_text(root, "patch.yaml"))
    assert _patched(root)["metadata"]["annotations"] == {"fluxcd.io/locked": "true"}
    assert "fluxcd.io/automated: null" in _text(root, "patch.yaml")
    assert annotate({"fluxcd.io/locked": "true"}) == []
    assert annotate({"fluxcd.io/automated": "true", "fluxcd.io/locked": None}) == ["patch.yaml"]
    assert _patched(root)["metadata"]["annotations"] == {"fluxcd.io/automated": "true"}
    assert _text(root, "patch.yaml") == OTHER_PATCHES  # the patch is back to what it was


def test_patch_errors(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match=r"^workload ops:Deployment/nope not found in the out"):
        _patch_image(tmp_path, "ops:Deployment/nope", "app", "r/x:1")
    with pytest.raises(ManifestError, match="has no container 'db'"):
        _patch_image(tmp_path, "ops:Deployment/web", "db", "r/x:1")
    assert _patch_image(tmp_path, "ops:Deployment/web", "app", "r/web:1") == []
    assert not (tmp_path / "patch.yaml").exists()


# --- dispatch (plain files; `.flux.yaml` paths run commands: see the integration tests) ------


def test_update_image_and_policy_on_plain_files(tmp_path: Path) -> None:
    root = _tree(tmp_path, {SOURCE: GNARLY, "other/x.yaml": "kind: Nothing\n"})
    assert update_image(
        root, ["other", "k"], True, "shop:Deployment/web", "app", "r/web:9", NAMESPACE
    ) == [SOURCE]
    changes = {"automated": None, "tag.app": "glob:1.*"}
    assert update_policy(root, ["k"], False, "shop:Deployment/web", changes, NAMESPACE) == [SOURCE]
    expected = _replaced(GNARLY, '"registry.local/web:1.0"', '"r/web:9"')
    expected = _replaced(
        expected, "    fluxcd.io/automated: 'true'\n", ""
    )  # and tag.app follows `note`
    expected = _replaced(
        expected, '    note: "keep me"\n', '    note: "keep me"\n    fluxcd.io/tag.app: glob:1.*\n'
    )
    assert _text(root) == expected


def test_policy_annotations_replace_other_spellings() -> None:
    assert policy_annotations({"tag.app": "semver:~1", "automated": None}) == {
        "flux.weave.works/tag.app": None,
        "filter.fluxcd.io/app": None,
        "fluxcd.io/tag.app": "semver:~1",
        "flux.weave.works/automated": None,
        "fluxcd.io/automated": None,
    }
    with pytest.raises(ManifestError, match="is not a policy name"):
        policy_annotations({"fluxcd.io/automated": "true"})


def test_an_edit_that_would_not_load_as_intended_is_refused(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    root = _tree(tmp_path, {SOURCE: GNARLY})
    monkeypatch.setattr(edit, "_render", lambda value, style, **_: "registry.local/wrong:0")
    with pytest.raises(ManifestError) as caught:
        set_container_image(root, ["k"], "shop:Deployment/web", "app", "r/web:2", NAMESPACE)
    assert str(caught.value) == (
        "k/shop.yaml: cannot edit workload shop:Deployment/web in place: "
        "the edited file would not load as intended; edit it by hand"
    )
    assert _text(root) == GNARLY
