"""gitopsctl against a running API server (uvicorn on loopback) backed by the real Redis; `sync`
also against a real worker and kube-apiserver, `install` against kubectl and kube-apiserver."""

from __future__ import annotations

import pwd
import queue
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
import redis
import test_deploy
import test_sync_e2e as e2e
import uvicorn
import yaml
from click.testing import CliRunner, Result
from kubernetes import client as k8s
from kubernetes.dynamic import DynamicClient

from gitops_pipeline.api.app import create_app
from gitops_pipeline.cli import workloads
from gitops_pipeline.cli.main import cli
from gitops_pipeline.config import ApiSettings, Settings, parse_settings
from gitops_pipeline.events import record
from gitops_pipeline.store import Keys
from gitops_pipeline.testbed.process import free_port

TOKEN = "cli-admin-token"
READ_TOKEN = "cli-read-token"
GITOPSCTL = Path(sys.executable).parent / "gitopsctl"

# The e2e module's real worker and pipeline factory (fixtures are found by these names).
worker = e2e.worker
make_env = e2e.make_env


@pytest.fixture
def settings(redis_url: str, key_prefix: str) -> Settings:
    config = {
        "redis_url": redis_url,
        "key_prefix": key_prefix,
        "api": {
            "tokens": [
                {"token": TOKEN, "scope": "admin"},
                {"token": READ_TOKEN, "scope": "read"},
            ]
        },
        "pipelines": [
            {"name": "sample-app", "git": {"url": "file:///srv/sample-app.git"}},
            {"name": "lost-key", "git": {"url": "git@host.invalid:o/r", "ssh_key_file": "/nope"}},
        ],
    }
    return parse_settings(yaml.safe_dump(config), "test", {})


@contextmanager
def _serve(settings: Settings) -> Iterator[str]:
    port = free_port()
    server = uvicorn.Server(
        uvicorn.Config(create_app(settings), host="127.0.0.1", port=port, log_config=None)
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 30
    while not server.started:
        assert time.monotonic() < deadline, "the API server did not start"
        time.sleep(0.05)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(timeout=10)


@pytest.fixture
def api_url(settings: Settings) -> Iterator[str]:
    with _serve(settings) as url:
        yield url


def _invoke(url: str, *args: str, token: str = TOKEN) -> Result:
    return CliRunner().invoke(cli, ["--url", url, "--token", token, *args])


def _run(url: str, *args: str, token: str = TOKEN) -> tuple[int, str]:
    result = _invoke(url, *args, token=token)
    return result.exit_code, result.output


def _redis(settings: Settings) -> redis.Redis:
    return redis.Redis.from_url(settings.redis_url, decode_responses=True)


def test_pipelines_status_and_sync_without_waiting(api_url: str, settings: Settings) -> None:
    client = _redis(settings)
    keys = Keys(settings.key_prefix)
    client.hset(
        keys.sync("sample-app"),
        mapping={
            "status": "synced",
            "revision": "0123456789abcdef",
            "applied": 2,
            "failed": 0,
            "verify_error": "commit 89ab has no valid signature from a trusted key",
        },
    )
    record(client, keys, "sample-app", "applied", "applied 2 objects at 0123456789ab")

    code, out = _run(api_url, "pipelines")
    assert code == 0
    assert "sample-app" in out and "synced" in out and "0123456" in out

    code, out = _run(api_url, "status", "-p", "sample-app")
    assert code == 0
    assert "failed: 0" in out
    assert "verify_error: commit 89ab has no valid signature from a trusted key" in out
    assert "applied 2 objects at 0123456789ab" in out

    code, out = _run(api_url, "sync", "-p", "sample-app", "--no-wait")
    assert code == 0
    queued = client.lrange(f"{settings.key_prefix}celery:sync", 0, -1)
    assert len(queued) == 1
    assert out.strip() in queued[0]  # the job id, and nothing else
    assert len(out.strip().split()) == 1


def test_clear_one_line_errors(api_url: str) -> None:
    code, out = _run(api_url, "pipelines", token="wrong")
    assert (code, out.strip()) == (
        1,
        "Error: the API refused the token (set --token or GITOPS_TOKEN)",
    )
    code, out = _run(api_url, "status", "-p", "nope")
    assert (code, out.strip()) == (1, "Error: unknown pipeline 'nope'")
    code, out = _run(api_url, "sync", "-p", "sample-app", token=READ_TOKEN)
    assert (code, out.strip()) == (1, "Error: the token is read-only (this needs an admin token)")
    code, out = _run(api_url, "identity", "-p", "lost-key")
    assert (code, out.strip()) == (
        1,
        "Error: the API failed (500 Internal Server Error): "
        "git.ssh_key_file /nope: cannot read it (No such file or directory)",
    )
    unreachable = f"http://127.0.0.1:{free_port()}"
    code, out = _run(unreachable, "pipelines")
    assert code == 1
    assert out.startswith(f"Error: cannot reach the API at {unreachable}")
    assert len(out.strip().splitlines()) == 1


def test_redis_down_is_one_error_line(settings: Settings) -> None:
    dead = settings.model_copy(update={"redis_url": f"redis://127.0.0.1:{free_port()}/0"})
    with _serve(dead) as url:
        result = _invoke(url, "pipelines")
    assert result.exit_code == 1
    assert result.stdout == ""
    (line,) = result.stderr.splitlines()
    assert line.startswith(
        "Error: the API failed (503 Service Unavailable): Redis is unreachable: "
    )


BAD_URL = "http://[::1"


def test_a_malformed_url_is_a_usage_error_where_the_api_is_needed() -> None:
    result = CliRunner().invoke(cli, ["--url", BAD_URL, "pipelines"])
    assert result.exit_code == 2, result.output
    assert result.output.strip().splitlines() == [
        f"Error: --url (GITOPS_URL) {BAD_URL!r} is not a valid URL: Invalid port: ':1'"
    ]
    # Commands that need no API do not care.
    completion = CliRunner().invoke(cli, ["--url", BAD_URL, "completion", "bash"])
    assert completion.exit_code == 0, completion.output
    assert "_GITOPSCTL_COMPLETE" in completion.output
    install_ = CliRunner().invoke(cli, [*INSTALL], env={"GITOPS_URL": BAD_URL})
    assert install_.exit_code == 0, install_.output


def test_a_host_name_too_long_for_idna_is_one_error_line() -> None:
    url = f"http://{'a' * 300}"
    result = CliRunner().invoke(cli, ["--url", url, "pipelines"])
    assert result.exit_code == 1, result.output
    (line,) = result.output.splitlines()
    assert line.startswith(f"Error: cannot reach the API at {url}: ")


@pytest.mark.parametrize("token", ["tökén", "line\nbreak"])
def test_a_token_that_cannot_be_a_header_is_a_usage_error(api_url: str, token: str) -> None:
    result = _invoke(api_url, "pipelines", token=token)
    assert result.exit_code == 2, result.output
    assert result.output.strip().splitlines() == [
        "Error: --token (GITOPS_TOKEN) must be printable ASCII"
    ]


def test_install_into_a_path_through_a_file_is_one_error_line(tmp_path: Path) -> None:
    taken = tmp_path / "gitops"
    taken.write_text("not a directory\n")
    # The file itself is refused by click as a usage error; a path through it, here.
    itself = CliRunner().invoke(cli, [*INSTALL, "-o", str(taken)])
    assert itself.exit_code == 2
    assert f"Directory '{taken}' is a file" in itself.output
    for inside in (taken / "base", taken / "deeper" / "base"):
        result = CliRunner().invoke(cli, [*INSTALL, "-o", str(inside)])
        assert result.exit_code == 1, result.output
        assert result.stdout == ""
        (line,) = result.stderr.splitlines()
        assert line.startswith(f"Error: cannot write the manifests into {inside}: ")
    assert taken.read_text() == "not a directory\n"


def test_lock_without_a_login_name_sends_no_user(monkeypatch: pytest.MonkeyPatch) -> None:
    sent: list[dict[str, Any]] = []
    monkeypatch.setattr(workloads, "_run_job", lambda api, p, kind, body, watch: sent.append(body))

    def no_entry(uid: int) -> pwd.struct_passwd:
        raise KeyError(f"getpwuid(): uid not found: {uid}")

    monkeypatch.setattr(pwd, "getpwuid", no_entry)
    nobody = dict.fromkeys(("LOGNAME", "USER", "LNAME", "USERNAME"))
    lock = ["lock", "-p", "sample-app", "-w", "default:Deployment/web"]
    result = CliRunner().invoke(cli, lock, env=nobody)
    assert result.exit_code == 0, result.output
    assert sent[-1]["user"] == ""
    result = CliRunner().invoke(cli, lock, env={**nobody, "USER": "alice"})
    assert (result.exit_code, sent[-1]["user"]) == (0, "alice")
    result = CliRunner().invoke(cli, [*lock, "--user", "bob"], env=nobody)
    assert (result.exit_code, sent[-1]["user"]) == (0, "bob")


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["status"], "Missing option '--pipeline'"),
        (["events", "-p", "sample-app", "-n", "0"], "Invalid value for '-n' / '--count'"),
        (["sync", "-p", "sample-app", "--timeout", "0"], "Invalid value for '--timeout'"),
        (["completion", "tcsh"], "Invalid value for '{bash|zsh|fish}'"),
        (["install"], "Missing option '--git-url'"),
        (["nonsense"], "No such command 'nonsense'"),
    ],
)
def test_usage_errors_exit_2(api_url: str, args: list[str], message: str) -> None:
    code, out = _run(api_url, *args)
    assert code == 2
    assert message in out


# --- events -------------------------------------------------------------------------------------


def test_events_newest_last_and_as_json_lines(api_url: str, settings: Settings) -> None:
    client, keys = _redis(settings), Keys(settings.key_prefix)
    for n in range(3):
        record(client, keys, "sample-app", "note", f"event {n}")

    code, out = _run(api_url, "events", "-p", "sample-app")
    assert code == 0
    lines = out.splitlines()
    assert [line.split(maxsplit=2)[1:] for line in lines] == [
        ["note", f"event {n}"] for n in range(3)
    ]
    assert lines[0][:2] == "20" and lines[0][19] == "Z"  # 2026-12-04T19:10:00Z

    code, out = _run(api_url, "events", "-p", "sample-app", "-n", "2", "-o", "json")
    assert code == 0
    assert [yaml.safe_load(line)["message"] for line in out.splitlines()] == ["event 1", "event 2"]


def _lines(stream: object) -> queue.Queue[str]:
    lines: queue.Queue[str] = queue.Queue()

    def pump() -> None:
        for line in stream:
            lines.put(line)

    threading.Thread(target=pump, daemon=True).start()
    return lines


def _next_line(lines: queue.Queue[str], seconds: float = 30) -> str:
    return lines.get(timeout=seconds)


def test_events_follow_prints_new_events_and_ctrl_c_exits_0(
    api_url: str, settings: Settings
) -> None:
    client, keys = _redis(settings), Keys(settings.key_prefix)
    record(client, keys, "sample-app", "note", "before following")
    follower = subprocess.Popen(
        [str(GITOPSCTL), "--url", api_url, "--token", TOKEN, "events", "-f", "-p", "sample-app"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        lines = _lines(follower.stdout)
        assert _next_line(lines).rstrip().endswith("note       before following")
        record(client, keys, "sample-app", "note", "while following")
        assert _next_line(lines).rstrip().endswith("note       while following")
        follower.send_signal(signal.SIGINT)
        assert follower.wait(timeout=30) == 0
        assert follower.stderr is not None and follower.stderr.read() == ""
    finally:
        if follower.poll() is None:
            follower.kill()
            follower.wait(timeout=30)


# --- identity -----------------------------------------------------------------------------------


def test_identity_key_fingerprint_and_regenerate(api_url: str) -> None:
    shown = _invoke(api_url, "identity", "-p", "sample-app")
    assert shown.exit_code == 0
    key = shown.stdout.strip()
    assert key.startswith("ssh-ed25519 ") and key.endswith(" gitops-pipeline@sample-app")
    assert "does not reach git over ssh" in shown.stderr  # file:// URL

    again = _invoke(api_url, "identity", "-p", "sample-app", token=READ_TOKEN)
    assert again.stdout.strip() == key
    fingerprint = _invoke(api_url, "identity", "-p", "sample-app", "-l").stdout.strip()
    assert fingerprint.startswith("SHA256:") and len(fingerprint) == len("SHA256:") + 43

    refused = _invoke(api_url, "identity", "-p", "sample-app", "-r", token=READ_TOKEN)
    assert (refused.exit_code, refused.stderr.strip()) == (
        1,
        "Error: the token is read-only (this needs an admin token)",
    )
    regenerated = _invoke(api_url, "identity", "-p", "sample-app", "-r")
    assert regenerated.exit_code == 0
    new_key = regenerated.stdout.strip()
    assert new_key.startswith("ssh-ed25519 ") and new_key != key
    assert _invoke(api_url, "identity", "-p", "sample-app").stdout.strip() == new_key
    assert _invoke(api_url, "identity", "-p", "sample-app", "-l").stdout.strip() != fingerprint


# --- sync ---------------------------------------------------------------------------------------


def test_sync_gives_up_after_its_timeout_without_a_worker(api_url: str) -> None:
    started = time.monotonic()
    code, out = _run(api_url, "sync", "-p", "sample-app", "--timeout", "2")
    assert code == 1
    assert out.splitlines()[-1] == (
        "Error: no sync of sample-app finished within 2s; it may still run "
        "(gitopsctl status -p sample-app)"
    )
    assert time.monotonic() - started < 30


def test_sync_waits_for_the_commit_and_reports_a_failed_one(make_env: e2e.EnvFactory) -> None:
    env = make_env()
    tokens = ApiSettings.model_validate({"tokens": [{"token": TOKEN, "scope": "admin"}]})
    settings = env.settings.model_copy(update={"api": tokens})
    with _serve(settings) as url:
        code, out = _run(url, "sync", "-p", env.name, "--timeout", str(e2e.SYNC_WAIT))
        head = env.remote.head()
        assert code == 0, out
        assert out.splitlines() == [
            f"Synchronizing pipeline {env.name} (job {out.split('(job ')[1].split(')')[0]})",
            f"Revision to apply: {head[:7]}",
            f"Commit applied: {head[:7]}",
        ]

        broken = env.remote.commit({"broken.yaml": "kind: [\n"}, "broken")
        code, out = _run(url, "sync", "-p", env.name, "--timeout", str(e2e.SYNC_WAIT))
        assert code == 1, out
        lines = out.splitlines()
        assert lines[1] == f"Revision to apply: {broken[:7]}"
        assert lines[2].startswith("Error: generate failed: broken.yaml:2:")
        assert len(lines) == 3


# --- completion ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shell", "marker"),
    [("bash", "complete -o nosort -F"), ("zsh", "#compdef gitopsctl"), ("fish", "complete ")],
)
def test_completion_scripts(shell: str, marker: str) -> None:
    result = CliRunner().invoke(cli, ["completion", shell])
    assert result.exit_code == 0
    assert marker in result.output
    assert "_GITOPSCTL_COMPLETE" in result.output


def test_completion_completes_verbs() -> None:
    env = {"_GITOPSCTL_COMPLETE": "bash_complete", "COMP_WORDS": "gitopsctl ev", "COMP_CWORD": "1"}
    result = CliRunner().invoke(cli, [], env=env, prog_name="gitopsctl")
    assert result.output.split() == ["plain,events"]


# --- install ------------------------------------------------------------------------------------

INSTALL = [
    "install",
    "--git-url",
    "git@github.com:acme/Fleet-Config.git",
    "--git-branch",
    "main",
    "--git-path",
    "clusters/prod,common",
    "--git-user",
    "Fleet Bot",
    "--git-email",
    "fleet@acme.test",
]


def _objects(text: str) -> list[dict[str, object]]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def test_install_fills_in_the_base(tmp_path: Path) -> None:
    namespace = f"fleet-{free_port()}"
    result = CliRunner().invoke(cli, [*INSTALL, "--namespace", namespace])
    assert result.exit_code == 0, result.output
    objects = _objects(result.stdout)
    namespaced = [o for o in objects if o["kind"] not in ("Namespace", "ClusterRoleBinding")]
    assert {o["metadata"]["namespace"] for o in namespaced} == {namespace}
    assert [o["metadata"]["name"] for o in objects if o["kind"] == "Namespace"] == [namespace]
    binding = next(o for o in objects if o["kind"] == "ClusterRoleBinding")
    assert binding["subjects"][0]["namespace"] == namespace
    assert f"in namespace {namespace}" in result.stderr

    configmap = next(o for o in objects if o["metadata"]["name"] == "gitops-pipeline-config")
    text = configmap["data"]["gitops.yaml"]
    for secret in ("api/admin-token", "flower/basic-auth"):
        path = tmp_path / secret
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("placeholder:secret\n")
        text = text.replace(f"/etc/gitops-pipeline/secrets/{secret}", str(path))
    config = parse_settings(text, "installed config", {})
    assert config.redis_url == f"redis://redis.{namespace}.svc:6379/0"
    (pipeline,) = config.pipelines
    assert pipeline.name == "fleet-config"
    assert (pipeline.git.url, pipeline.git.branch) == (
        "git@github.com:acme/Fleet-Config.git",
        "main",
    )
    assert pipeline.git.paths == ["clusters/prod", "common"]
    assert (pipeline.git.user, pipeline.git.email) == ("Fleet Bot", "fleet@acme.test")
    redis_conf = next(o for o in objects if o["metadata"]["name"] == "gitops-pipeline-redis")
    assert "maxmemory-policy noeviction" in redis_conf["data"]["redis.conf"]


def test_install_output_dir_is_a_kustomize_base_that_the_server_accepts(
    tmp_path: Path, kube_api_client: k8s.ApiClient
) -> None:
    namespace = f"fleet-{free_port()}"
    printed = CliRunner().invoke(cli, [*INSTALL, "--namespace", namespace]).stdout
    out = tmp_path / "gitops"
    result = CliRunner().invoke(cli, [*INSTALL, "--namespace", namespace, "-o", str(out)])
    assert (result.exit_code, result.stdout) == (0, "")
    built = subprocess.run(
        ["kubectl", "kustomize", str(out)], capture_output=True, text=True, timeout=60, check=True
    )
    key = lambda o: (o["kind"], o["metadata"]["name"])  # noqa: E731
    assert sorted(_objects(built.stdout), key=key) == sorted(_objects(printed), key=key)

    dynamic = DynamicClient(kube_api_client)
    test_deploy.dry_run_apply(dynamic, _objects(printed), "install-test")


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--namespace", "Not_A_Namespace"], "Invalid value for --namespace"),
        (["--git-path", "../outside"], "git.paths: path '../outside' must be relative"),
        (["--pipeline", "UPPER"], "name: String should match pattern"),
    ],
)
def test_install_refuses_what_the_operator_would(extra: list[str], message: str) -> None:
    result = CliRunner().invoke(cli, [*INSTALL, *extra])
    assert result.exit_code == 2
    assert message in result.output
