"""Reading `.flux.yaml` files and finding the one that governs a path."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from gitops_pipeline.errors import ManifestError
from gitops_pipeline.manifests.fluxyaml import (
    DEFAULT_TIMEOUT,
    CommandUpdated,
    FluxConfig,
    Generator,
    PatchUpdated,
    ScanForFiles,
    Updater,
    find_config,
    load_config,
    parse_config,
    patch_file_path,
)

SOURCE = "apps/.flux.yaml"


def _error(text: str) -> str:
    with pytest.raises(ManifestError) as caught:
        parse_config(text, SOURCE)
    message = str(caught.value)
    assert message.startswith(f"{SOURCE}:"), message
    return message


def test_command_updated_with_generators_and_updaters() -> None:
    text = """\
version: 1
commandUpdated:
  generators:
    - command: kustomize build .
    - command: helm template ../chart
      timeout: 5
  updaters:
    - containerImage: {command: set-image}
      policy: {command: set-policy}
    - policy: {command: only-policy}
"""
    assert parse_config(text, SOURCE) == CommandUpdated(
        generators=(
            Generator("kustomize build .", DEFAULT_TIMEOUT),
            Generator("helm template ../chart", 5.0),
        ),
        updaters=(Updater("set-image", "set-policy"), Updater(None, "only-policy")),
    )


def test_command_updated_without_updaters() -> None:
    text = "version: 1\ncommandUpdated:\n  generators: [{command: gen}]\n"
    assert parse_config(text, SOURCE) == CommandUpdated((Generator("gen"),), ())


def test_patch_updated() -> None:
    text = """\
version: 1
patchUpdated:
  generators: [{command: kustomize build ., timeout: 2.5}]
  patchFile: flux-patch.yaml
"""
    assert parse_config(text, SOURCE) == PatchUpdated(
        (Generator("kustomize build .", 2.5),), "flux-patch.yaml"
    )


@pytest.mark.parametrize("body", ["scanForFiles: {}", "scanForFiles:"])
def test_scan_for_files(body: str) -> None:
    assert parse_config(f"version: 1\n{body}\n", SOURCE) == ScanForFiles()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("version: 1\ncommandUpdated: [\n", r":3: "),
        ("", "is empty"),
        ("- a list\n", "the top level must be a mapping"),
        ("commandUpdated: {generators: [{command: x}]}\n", "version is missing"),
        ("version: 2\nscanForFiles: {}\n", "unsupported version 2"),
        ("version: '1'\nscanForFiles: {}\n", "unsupported version '1'"),
        ("version: true\nscanForFiles: {}\n", "unsupported version True"),
        ("version: 1\n", r"needs exactly one of .* \(found: none\)"),
        (
            "version: 1\nscanForFiles: {}\ncommandUpdated: {generators: [{command: x}]}\n",
            r"\(found: commandUpdated, scanForFiles\)",
        ),
        ("version: 1\nscanForFiles: {}\nextra: 1\n", "unknown key 'extra' in the top level"),
        (
            "version: 1\ncommandUpdated: {generators: [{command: x}], patchFile: p.yaml}\n",
            "unknown key 'patchFile' in commandUpdated",
        ),
        (
            "version: 1\npatchUpdated: {generators: [{command: x}], patchFile: p, updaters: []}\n",
            "unknown key 'updaters' in patchUpdated",
        ),
        ("version: 1\nscanForFiles: {paths: [a]}\n", "unknown key 'paths' in scanForFiles"),
        ("version: 1\nscanForFiles: yes\n", "scanForFiles must be a mapping"),
        ("version: 1\ncommandUpdated: {}\n", "commandUpdated.generators is missing"),
        ("version: 1\ncommandUpdated: gen\n", "commandUpdated must be a mapping"),
        ("version: 1\ncommandUpdated: {generators: []}\n", "must list at least one command"),
        ("version: 1\ncommandUpdated: {generators: {command: x}}\n", "generators must be a list"),
        ("version: 1\ncommandUpdated: {generators: [x]}\n", r"generators\[0\] must be a mapping"),
        ("version: 1\ncommandUpdated: {generators: [{}]}\n", r"generators\[0\] has no command"),
        (
            "version: 1\ncommandUpdated: {generators: [{command: ''}]}\n",
            r"generators\[0\].command must be a non-empty string",
        ),
        (
            "version: 1\ncommandUpdated: {generators: [{command: [a]}]}\n",
            r"generators\[0\].command must be a non-empty string",
        ),
        (
            "version: 1\ncommandUpdated: {generators: [{command: x, env: {A: b}}]}\n",
            r"unknown key 'env' in commandUpdated.generators\[0\]",
        ),
        (
            "version: 1\ncommandUpdated: {generators: [{command: x, timeout: 1m}]}\n",
            r"timeout must be a number of seconds",
        ),
        (
            "version: 1\ncommandUpdated: {generators: [{command: x, timeout: 0}]}\n",
            r"timeout must be more than 0 and at most 600 seconds",
        ),
        (
            "version: 1\ncommandUpdated: {generators: [{command: x, timeout: 601}]}\n",
            r"at most 600 seconds",
        ),
        (
            "version: 1\ncommandUpdated: {generators: [{command: x}], updaters: {}}\n",
            "commandUpdated.updaters must be a list",
        ),
        (
            "version: 1\ncommandUpdated: {generators: [{command: x}], updaters: [{}]}\n",
            r"updaters\[0\] needs containerImage or policy",
        ),
        (
            "version: 1\ncommandUpdated: {generators: [{command: x}], "
            "updaters: [{containerImage: {cmd: y}}]}\n",
            r"unknown key 'cmd' in commandUpdated.updaters\[0\].containerImage",
        ),
        (
            "version: 1\ncommandUpdated: {generators: [{command: x}], updaters: [{policy: {}}]}\n",
            r"updaters\[0\].policy has no command",
        ),
        (
            "version: 1\ncommandUpdated: {generators: [{command: x}], "
            "updaters: [{policy: {command: y}, annotate: {command: z}}]}\n",
            r"unknown key 'annotate' in commandUpdated.updaters\[0\]",
        ),
        ("version: 1\npatchUpdated: {generators: [{command: x}]}\n", "patchFile is missing"),
        ("version: 1\npatchUpdated: {patchFile: p.yaml}\n", "generators is missing"),
        (
            "version: 1\npatchUpdated: {generators: [{command: x}], patchFile: ''}\n",
            "patchFile must be a non-empty path",
        ),
        (
            "version: 1\npatchUpdated: {generators: [{command: x}], patchFile: /etc/p.yaml}\n",
            "patchFile '/etc/p.yaml' must be relative",
        ),
    ],
)
def test_invalid_config_names_file_and_problem(text: str, expected: str) -> None:
    assert re.search(expected, _error(text))


def _config(root: Path, relative: str, text: str) -> Path:
    path = root / relative
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
    return path


SCAN = "version: 1\nscanForFiles: {}\n"
GENERATE = "version: 1\ncommandUpdated: {generators: [{command: gen}]}\n"


def test_nearest_config_wins(tmp_path: Path) -> None:
    _config(tmp_path, ".flux.yaml", GENERATE)
    nearer = _config(tmp_path, "env/.flux.yaml", SCAN)
    start = tmp_path / "env" / "staging"
    start.mkdir()
    assert find_config(tmp_path, start) == nearer
    loaded = load_config(tmp_path, start)
    assert loaded == FluxConfig(nearer, "env/.flux.yaml", ScanForFiles())


def test_search_stops_at_the_root(tmp_path: Path) -> None:
    _config(tmp_path, ".flux.yaml", GENERATE)
    root = tmp_path / "repo"
    (root / "app").mkdir(parents=True)
    assert find_config(root, root / "app") is None
    assert load_config(root, root / "app") is None


def test_config_at_the_root_governs_subpaths(tmp_path: Path) -> None:
    top = _config(tmp_path, ".flux.yaml", GENERATE)
    (tmp_path / "a" / "b").mkdir(parents=True)
    assert find_config(tmp_path, tmp_path / "a" / "b") == top


def test_symlinked_config_leading_outside_is_refused(tmp_path: Path) -> None:
    outside = _config(tmp_path, "outside/.flux.yaml", GENERATE)
    root = tmp_path / "repo"
    root.mkdir()
    (root / ".flux.yaml").symlink_to(outside)
    with pytest.raises(ManifestError, match=r"^\.flux\.yaml: is a symlink leading outside"):
        find_config(root, root)


def test_dangling_config_symlink_is_refused(tmp_path: Path) -> None:
    (tmp_path / ".flux.yaml").symlink_to(tmp_path / "missing.yaml")
    with pytest.raises(ManifestError, match="is a symlink to nothing"):
        find_config(tmp_path, tmp_path)


def test_symlinked_config_inside_the_repo_is_followed(tmp_path: Path) -> None:
    _config(tmp_path, "shared/flux.yaml", SCAN)
    (tmp_path / "app").mkdir()
    (tmp_path / "app" / ".flux.yaml").symlink_to(tmp_path / "shared" / "flux.yaml")
    loaded = load_config(tmp_path, tmp_path / "app")
    assert loaded is not None and loaded.directive == ScanForFiles()


def test_config_that_is_a_directory_is_refused(tmp_path: Path) -> None:
    (tmp_path / ".flux.yaml").mkdir()
    with pytest.raises(ManifestError, match="not a regular file"):
        find_config(tmp_path, tmp_path)


def test_invalid_config_found_by_search_names_its_path(tmp_path: Path) -> None:
    _config(tmp_path, "env/.flux.yaml", "version: 3\nscanForFiles: {}\n")
    with pytest.raises(ManifestError, match=r"^env/\.flux\.yaml: unsupported version 3"):
        load_config(tmp_path, tmp_path / "env")


def _patch_config(root: Path, patch_file: str) -> FluxConfig:
    path = root / ".flux.yaml"
    return FluxConfig(path, ".flux.yaml", PatchUpdated((Generator("gen"),), patch_file))


def test_patch_file_is_relative_to_the_configured_path(tmp_path: Path) -> None:
    staging = tmp_path / "staging"
    staging.mkdir()
    config = _patch_config(tmp_path, "flux-patch.yaml")
    assert patch_file_path(tmp_path, staging, config) == staging / "flux-patch.yaml"
    shared = _patch_config(tmp_path, "../common/flux-patch.yaml")
    assert patch_file_path(tmp_path, staging, shared) == tmp_path / "common" / "flux-patch.yaml"


def test_patch_file_leaving_the_repo_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "repo"
    root.mkdir()
    (tmp_path / "outside.yaml").write_text("")
    (root / "link.yaml").symlink_to(tmp_path / "outside.yaml")
    for written in ("../x.yaml", "sub/../../x.yaml", "link.yaml"):
        with pytest.raises(ManifestError, match="leads outside the repository"):
            patch_file_path(root, root, _patch_config(root, written))


def test_patch_file_of_a_command_updated_config_is_an_error(tmp_path: Path) -> None:
    config = FluxConfig(tmp_path / ".flux.yaml", ".flux.yaml", CommandUpdated((), ()))
    with pytest.raises(ManifestError, match="not a patchUpdated config"):
        patch_file_path(tmp_path, tmp_path, config)
