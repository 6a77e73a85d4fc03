"""Configuration: defaults, durations, env overrides, and one clear line per mistake."""

from __future__ import annotations

from pathlib import Path

import pytest

from gitops_pipeline.config import load_settings, parse_duration, parse_settings
from gitops_pipeline.errors import ConfigError

MINIMAL = """\
pipelines:
  - name: sample-app
    git:
      url: file:///srv/git/sample-app.git
"""


def test_defaults_fill_everything_not_given() -> None:
    settings = parse_settings(MINIMAL, "gitops.yaml", {})
    pipeline = settings.pipeline("sample-app")
    assert pipeline.git.branch == "master"
    assert pipeline.git.paths == ["."]
    assert pipeline.git.label == "flux"
    assert pipeline.git.verify_signatures == "none"
    assert pipeline.sync.interval == 300.0
    assert pipeline.sync.garbage_collection is False
    assert pipeline.automation_interval == 300.0
    assert pipeline.cluster.default_namespace == "default"
    assert settings.key_prefix == "gp:"
    assert settings.visibility_timeout > settings.tasks.hard_time_limit


@pytest.mark.parametrize(
    ("text", "seconds"),
    [("30s", 30.0), ("5m", 300.0), ("1h", 3600.0), ("1h30m", 5400.0), (45, 45.0), ("1.5s", 1.5)],
)
def test_durations(text: object, seconds: float) -> None:
    assert parse_duration(text) == seconds


@pytest.mark.parametrize("text", ["5x", "", "m", "-5s", "0s", "five minutes", True])
def test_bad_durations_are_refused(text: object) -> None:
    with pytest.raises(ValueError, match="duration"):
        parse_duration(text)


def _error(text: str, environ: dict[str, str] | None = None) -> str:
    with pytest.raises(ConfigError) as caught:
        parse_settings(text, "gitops.yaml", environ or {})
    message = str(caught.value)
    assert "\n" not in message
    return message


def test_unknown_key_names_key_file_and_line() -> None:
    message = _error(MINIMAL + "    colour: blue\n")
    assert message == "gitops.yaml:5: pipelines[0].colour: unknown key 'colour'"


def test_bad_duration_names_key_and_line() -> None:
    message = _error(MINIMAL + "    sync:\n      interval: 5x\n")
    assert message.startswith("gitops.yaml:6: pipelines[0].sync.interval: invalid duration '5x'")


def test_missing_url_names_the_pipeline() -> None:
    message = _error("pipelines:\n  - name: a\n    git:\n      branch: main\n")
    assert message == "gitops.yaml:3: pipelines[0].git.url: missing required key 'url'"


def test_bad_garbage_collection_value() -> None:
    message = _error(MINIMAL + "    sync:\n      garbage_collection: maybe\n")
    assert "pipelines[0].sync.garbage_collection: invalid value 'maybe'" in message


def test_invalid_yaml_names_the_line() -> None:
    message = _error("pipelines:\n  - name: [unclosed\n")
    assert message.startswith("gitops.yaml:3: invalid YAML")


def test_duplicate_pipeline_names() -> None:
    message = _error(MINIMAL + MINIMAL.removeprefix("pipelines:\n"))
    assert "pipeline name 'sample-app' is used twice" in message


def test_more_errors_are_counted_not_listed() -> None:
    message = _error(MINIMAL + "    bogus: 1\n    sync:\n      interval: nope\n")
    assert message.endswith("(and 1 more)")


def test_env_overrides_any_key() -> None:
    environ = {
        "GITOPS__REDIS_URL": "redis://10.0.0.1:6380/2",
        "GITOPS__PIPELINES__SAMPLE_APP__SYNC__INTERVAL": "1m",
        "GITOPS__PIPELINES__SAMPLE_APP__GIT__PATHS": "[apps, infra]",
        "GITOPS__PIPELINES__SAMPLE_APP__SYNC__GARBAGE_COLLECTION": "dry-run",
    }
    settings = parse_settings(MINIMAL, "gitops.yaml", environ)
    assert settings.redis_url == "redis://10.0.0.1:6380/2"
    pipeline = settings.pipeline("sample-app")
    assert pipeline.sync.interval == 60.0
    assert pipeline.git.paths == ["apps", "infra"]
    assert pipeline.sync.garbage_collection == "dry-run"


def test_env_values_that_look_like_yaml_mappings_stay_strings() -> None:
    environ = {
        "GITOPS__KEY_PREFIX": "team-a:",
        "GITOPS__PIPELINES__SAMPLE_APP__GIT__BRANCH": "main",
    }
    settings = parse_settings(MINIMAL, "gitops.yaml", environ)
    assert settings.key_prefix == "team-a:"
    assert settings.pipeline("sample-app").git.branch == "main"


def test_bad_env_override_names_the_variable() -> None:
    environ = {"GITOPS__PIPELINES__SAMPLE_APP__SYNC__INTERVAL": "soon"}
    message = _error(MINIMAL, environ)
    assert message.startswith(
        "environment variable GITOPS__PIPELINES__SAMPLE_APP__SYNC__INTERVAL: "
        "pipelines[0].sync.interval: invalid duration"
    )


def test_env_override_of_unknown_pipeline() -> None:
    message = _error(MINIMAL, {"GITOPS__PIPELINES__NOPE__GIT__BRANCH": "main"})
    assert message == "GITOPS__PIPELINES__NOPE__GIT__BRANCH: no pipeline named 'nope' to override"


def test_secrets_come_from_files(tmp_path: Path) -> None:
    token_file = tmp_path / "token"
    token_file.write_text("s3cret\n")
    text = f"api:\n  tokens:\n    - token: {{file: {token_file}}}\n      scope: admin\n"
    settings = parse_settings(text, "gitops.yaml", {})
    assert settings.api.tokens[0].token.get_secret_value() == "s3cret"
    assert "s3cret" not in repr(settings)


def test_missing_secret_file_is_a_clear_error(tmp_path: Path) -> None:
    text = f"api:\n  tokens:\n    - token: {{file: {tmp_path / 'absent'}}}\n"
    assert "cannot read secret file" in _error(text)


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match=r"config file .*absent.yaml not found"):
        load_settings(tmp_path / "absent.yaml", {})


def test_config_path_from_environment(tmp_path: Path) -> None:
    path = tmp_path / "custom.yaml"
    path.write_text(MINIMAL)
    settings = load_settings(None, {"GITOPS_CONFIG": str(path)})
    assert [p.name for p in settings.pipelines] == ["sample-app"]


def test_paths_must_stay_inside_the_repo() -> None:
    message = _error(MINIMAL + "      paths: [../elsewhere]\n")
    assert "must be relative and inside the repository" in message
