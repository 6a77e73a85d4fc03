"""Loading manifests from a checked-out tree."""

from __future__ import annotations

from pathlib import Path

import pytest

from gitops_pipeline.errors import ManifestError
from gitops_pipeline.manifests.load import load_blobs, load_paths

DEPLOYMENT = """\
apiVersion: apps/v1
kind: Deployment
metadata:
  name: sample-app
spec: {}
"""
SERVICE = """\
apiVersion: v1
kind: Service
metadata:
  name: sample-app
  namespace: web
"""


def _write(root: Path, files: dict[str, str]) -> None:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)


def test_multi_document_files_skip_empty_and_foreign_documents(tmp_path: Path) -> None:
    _write(
        tmp_path,
        {
            "app/all.yaml": f"---\n{DEPLOYMENT}---\n---\nfoo: bar\n---\n{SERVICE}",
            "app/README.md": "not yaml",
            "app/values.yml": "replicas: 3\n",
        },
    )
    found = load_paths(tmp_path, ["."])
    assert [(m.obj["kind"], m.source) for m in found] == [
        ("Deployment", "app/all.yaml"),
        ("Service", "app/all.yaml"),
    ]


def test_only_the_configured_paths_are_read(tmp_path: Path) -> None:
    _write(tmp_path, {"a/d.yaml": DEPLOYMENT, "b/s.yaml": SERVICE})
    assert [m.obj["kind"] for m in load_paths(tmp_path, ["b"])] == ["Service"]


def test_list_kind_is_expanded(tmp_path: Path) -> None:
    items = DEPLOYMENT.replace("\n", "\n    ").rstrip()
    _write(tmp_path, {"list.yaml": f"apiVersion: v1\nkind: List\nitems:\n  - {items}\n"})
    assert [m.obj["kind"] for m in load_paths(tmp_path, ["."])] == ["Deployment"]


def test_same_object_twice_names_both_files(tmp_path: Path) -> None:
    _write(tmp_path, {"one.yaml": DEPLOYMENT, "sub/two.yaml": DEPLOYMENT})
    with pytest.raises(ManifestError) as caught:
        load_paths(tmp_path, ["."])
    assert str(caught.value) == (
        "<default>:Deployment/sample-app is defined twice: in one.yaml and in sub/two.yaml"
    )


def test_invalid_yaml_names_file_and_line(tmp_path: Path) -> None:
    _write(tmp_path, {"bad.yaml": "apiVersion: v1\nkind: [\n"})
    with pytest.raises(ManifestError, match=r"^bad.yaml:3: "):
        load_paths(tmp_path, ["."])


def test_missing_path_is_an_error(tmp_path: Path) -> None:
    with pytest.raises(ManifestError, match="path 'nope' does not exist"):
        load_paths(tmp_path, ["nope"])


def test_symlink_out_of_the_tree_is_refused(tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    repo = tmp_path / "repo"
    repo.mkdir()
    (repo / "escape").symlink_to(outside)
    with pytest.raises(ManifestError, match="outside the repository"):
        load_paths(repo, ["escape"])


def test_blobs_load_like_files(tmp_path: Path) -> None:
    files = {
        "b/s.yaml": SERVICE,
        "a/d.yaml": DEPLOYMENT,
        "a/notes.txt": "x",
        "c/values.yml": "k: v",
    }
    _write(tmp_path, files)
    from_disk = load_paths(tmp_path, ["."])
    from_blobs = load_blobs({name: text.encode() for name, text in files.items()})
    assert from_blobs == from_disk


def test_blobs_reject_duplicates_and_bad_text() -> None:
    with pytest.raises(ManifestError, match=r"defined twice: in a\.yaml and in b\.yaml"):
        load_blobs({"a.yaml": DEPLOYMENT.encode(), "b.yaml": DEPLOYMENT.encode()})
    with pytest.raises(ManifestError, match=r"bin\.yaml: not UTF-8 text"):
        load_blobs({"bin.yaml": b"\xff\xfe"})
