"""Sync benchmark: full apply of 1000 objects, one-object push-to-applied, worker memory.

Everything runs on the project's real test bed (private Redis, etcd + kube-apiserver, bare git
remotes, all from ``gitops_pipeline.testbed``) and the real sync worker
(``python -m workers.sync``: prefork, concurrency 1) in a temporary directory. What is started
is stopped again by process id, also on Ctrl-C or an error.

Baselines, measured in the same run against the same API server:

1. Full apply: ``kubectl apply --server-side`` of the same files (fresh namespaces each run, so
   both sides create every object) against ``sync.trigger(full=True)`` on a fresh pipeline, timed
   from sending the message to the status hash saying ``synced``. Target: ratio <= 0.5.
2. One-object change: from the push of a commit that changes one ConfigMap to the API server
   serving the new value (``sync.trigger(full=False)`` sent right after the push). Target: < 1 s;
   ``kubectl apply --server-side`` of that one file is printed as context.
3. Peak resident memory (``VmHWM``) of the worker's pool process and main process over the full
   applies. Target: pool process < 150 MB.

The repository layout: one YAML file per object, one directory per namespace
(``<namespace>/0-namespace.yaml``, ``configmap-NNN.yaml``, ``deployment-NNN.yaml``; the names
sort the Namespace first, which kubectl needs because it applies files in path order).
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Any, TypeVar, cast

import redis
import yaml
from celery import Celery
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from bench.common import log, poll, run_interruptibly
from gitops_pipeline.celery_app import celery_config
from gitops_pipeline.config import Settings, parse_settings
from gitops_pipeline.store import Keys
from gitops_pipeline.testbed.gitremote import GitRemote
from gitops_pipeline.testbed.kube import KubeServer, start_kube
from gitops_pipeline.testbed.process import ManagedProcess
from gitops_pipeline.testbed.redis_server import start_redis

REPO = Path(__file__).resolve().parents[1]

NAMESPACES = 10
CONFIGMAPS_PER_NAMESPACE = 50
DEPLOYMENTS_PER_NAMESPACE = 49
OBJECTS = NAMESPACES * (1 + CONFIGMAPS_PER_NAMESPACE + DEPLOYMENTS_PER_NAMESPACE)

FULL_RATIO_TARGET = 0.5
PUSH_TARGET_SECONDS = 1.0
RSS_TARGET_MB = 150.0

POLL_SECONDS = 0.01
MEMORY_SAMPLE_SECONDS = 0.05
WAIT_SECONDS = 300.0  # upper bound of one wait, so a hung run ends; not a speed check
KEY_PREFIX = "bench:"
KUBECTL_MANAGER = "bench-kubectl"
TERMINAL = frozenset({"synced", "synced-with-errors", "failed"})
CHANGED_NAMESPACE_INDEX = 0
CHANGED_CONFIGMAP_INDEX = 0

T = TypeVar("T")


# --- the manifests ---------------------------------------------------------------------------


def namespace_name(tag: str, index: int) -> str:
    return f"bench-{tag}-{index:02d}"


def _namespace(name: str) -> dict[str, Any]:
    return {"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": name}}


def _configmap(namespace: str, index: int, value: str = "initial") -> dict[str, Any]:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {
            "name": f"config-{index:03d}",
            "namespace": namespace,
            "labels": {"app.kubernetes.io/part-of": "bench"},
        },
        "data": {
            "value": value,
            "index": str(index),
            "settings.properties": "".join(f"key.{k}=value-{index}-{k}\n" for k in range(8)),
        },
    }


def _deployment(namespace: str, index: int) -> dict[str, Any]:
    name = f"app-{index:03d}"
    labels = {"app": name}
    return {
        "apiVersion": "apps/v1",
        "kind": "Deployment",
        "metadata": {"name": name, "namespace": namespace, "labels": labels},
        "spec": {
            "replicas": 1,
            "selector": {"matchLabels": labels},
            "template": {
                "metadata": {"labels": labels},
                "spec": {
                    "containers": [
                        {
                            "name": "app",
                            "image": "example/app:1.0.0",
                            "ports": [{"containerPort": 8080, "protocol": "TCP"}],
                            "env": [{"name": "INDEX", "value": str(index)}],
                            "resources": {"requests": {"cpu": "10m", "memory": "16Mi"}},
                        }
                    ]
                },
            },
        },
    }


def _dump(obj: dict[str, Any]) -> str:
    return yaml.safe_dump(obj, sort_keys=False)


def configmap_path(tag: str) -> str:
    """Path of the ConfigMap the one-object change edits."""
    namespace = namespace_name(tag, CHANGED_NAMESPACE_INDEX)
    return f"{namespace}/configmap-{CHANGED_CONFIGMAP_INDEX:03d}.yaml"


def configmap_file(tag: str, value: str) -> str:
    namespace = namespace_name(tag, CHANGED_NAMESPACE_INDEX)
    return _dump(_configmap(namespace, CHANGED_CONFIGMAP_INDEX, value))


def object_files(
    tag: str,
    namespaces: int = NAMESPACES,
    configmaps: int = CONFIGMAPS_PER_NAMESPACE,
    deployments: int = DEPLOYMENTS_PER_NAMESPACE,
) -> dict[str, str]:
    """Repository path -> YAML text, one object per file; namespace names embed `tag`."""
    files: dict[str, str] = {}
    for n in range(namespaces):
        namespace = namespace_name(tag, n)
        files[f"{namespace}/0-namespace.yaml"] = _dump(_namespace(namespace))
        for i in range(configmaps):
            files[f"{namespace}/configmap-{i:03d}.yaml"] = _dump(_configmap(namespace, i))
        for i in range(deployments):
            files[f"{namespace}/deployment-{i:03d}.yaml"] = _dump(_deployment(namespace, i))
    return files


def write_tree(root: Path, files: dict[str, str]) -> Path:
    for name, text in files.items():
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


# --- processes: kubectl, the sync worker, its memory ----------------------------------------


@dataclass(frozen=True)
class Kubectl:
    kubeconfig: Path
    cache_dir: Path

    def version(self) -> str:
        done = subprocess.run(
            ["kubectl", "version", "--client", "-o", "yaml"],
            capture_output=True,
            text=True,
            timeout=30,
            check=False,
        )
        info = yaml.safe_load(done.stdout or "{}") or {}
        return str((info.get("clientVersion") or {}).get("gitVersion", "unknown"))

    def apply(self, path: Path) -> float:
        """Seconds that one server-side apply of `path` (a file, or a tree with -R) takes."""
        argv = [
            "kubectl",
            "--kubeconfig", str(self.kubeconfig),
            "--cache-dir", str(self.cache_dir),
            "apply", "--server-side", "--force-conflicts",
            f"--field-manager={KUBECTL_MANAGER}",
            "-f", str(path),
        ]  # fmt: skip
        if path.is_dir():
            argv.append("-R")
        started = time.monotonic()
        done = subprocess.run(argv, capture_output=True, text=True, timeout=WAIT_SECONDS)
        elapsed = time.monotonic() - started
        if done.returncode != 0:
            raise RuntimeError(f"kubectl apply -f {path} failed:\n{done.stderr[-3000:]}")
        return elapsed


def child_pids(parent: int) -> list[int]:
    """Direct children of `parent`, from /proc."""
    found = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[-1].split()
        if len(fields) > 1 and int(fields[1]) == parent:
            found.append(int(entry.name))
    return found


def status_kb(pid: int, name: str) -> int | None:
    """A `kB` field of /proc/<pid>/status (VmHWM: peak resident size), None if gone."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith(f"{name}:"):
                return int(line.split()[1])
    except (OSError, ValueError):
        return None
    return None


CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int, children: bool = False) -> float:
    """CPU time (user + system) of `pid`, plus of its reaped children if `children`."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[-1].split()
    except OSError:
        return 0.0
    ticks = int(fields[11]) + int(fields[12])  # utime, stime
    if children:
        ticks += int(fields[13]) + int(fields[14])  # cutime, cstime: git runs, for instance
    return ticks / CLOCK_TICKS


def own_children_cpu() -> float:
    """CPU time of this process's reaped children (kubectl runs)."""
    usage = resource.getrusage(resource.RUSAGE_CHILDREN)
    return usage.ru_utime + usage.ru_stime


@dataclass(frozen=True)
class CpuMeter:
    """CPU seconds spent by the API server, etcd and the client side during one measurement."""

    kube: KubeServer
    worker_pid: int

    def snapshot(self) -> dict[str, float]:
        worker = [self.worker_pid, *child_pids(self.worker_pid)]
        return {
            "kube-apiserver": cpu_seconds(self.kube.apiserver.pid),
            "etcd": cpu_seconds(self.kube.etcd.pid),
            "kubectl": own_children_cpu(),
            "worker": sum(cpu_seconds(pid, children=True) for pid in worker),
        }

    def measure(self, call: Callable[[], T]) -> tuple[T, dict[str, float]]:
        before = self.snapshot()
        value = call()
        after = self.snapshot()
        return value, {name: after[name] - before[name] for name in after}


class MemorySampler:
    """Keeps the latest VmHWM of the worker's main process and of every pool process seen.

    VmHWM is the kernel's own high-water mark of resident memory, so sampling only has to
    catch each process before it exits, not at its peak.
    """

    def __init__(self, main_pid: int) -> None:
        self.main_pid = main_pid
        self._peaks: dict[int, int] = {}
        self._children: list[int] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="memory-sampler", daemon=True)

    def start(self) -> MemorySampler:
        self._thread.start()
        return self

    def _run(self) -> None:
        last_scan = 0.0
        while not self._stop.is_set():
            now = time.monotonic()
            if now - last_scan > 1.0:
                self._children = child_pids(self.main_pid)
                last_scan = now
            self.sample()
            self._stop.wait(MEMORY_SAMPLE_SECONDS)

    def sample(self) -> None:
        for pid in [self.main_pid, *self._children]:
            peak = status_kb(pid, "VmHWM")
            if peak is not None:
                with self._lock:
                    self._peaks[pid] = max(peak, self._peaks.get(pid, 0))

    def peaks_mb(self) -> tuple[float, float, int]:
        """(main process MB, largest pool process MB, pool processes seen)."""
        self._children = child_pids(self.main_pid) or self._children
        self.sample()
        with self._lock:
            main = self._peaks.get(self.main_pid, 0)
            pool = [kb for pid, kb in self._peaks.items() if pid != self.main_pid]
        return main / 1024, max(pool, default=0) / 1024, len(pool)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=5)


class SyncWorker:
    """The real sync pool entry point as a subprocess in its own process group."""

    def __init__(self, config: Path, workdir: Path) -> None:
        argv = [
            sys.executable, "-m", "workers.sync",
            "--config", str(config),
            "--hostname", "bench-sync@%h",
        ]  # fmt: skip
        env = {**os.environ, "PYTHONPATH": str(REPO)}
        self.process = ManagedProcess("sync-worker", argv, workdir, env=env)

    def start(self) -> SyncWorker:
        self.process.start()
        return self

    def check_alive(self) -> None:
        if not self.process.running():
            raise RuntimeError(
                f"the sync worker exited; log {self.process.log_path}:\n{self.process.log_tail()}"
            )

    def stop(self) -> None:
        self.process.stop(timeout=15)


# --- the pipelines ---------------------------------------------------------------------------


def write_config(
    path: Path, redis_url: str, work_dir: Path, kube: KubeServer, remotes: dict[str, GitRemote]
) -> Settings:
    config = {
        "redis_url": redis_url,
        "key_prefix": KEY_PREFIX,
        "work_dir": str(work_dir),
        "log_level": "INFO",
        "workers": {"sync_concurrency": 1},
        "pipelines": [
            {
                "name": name,
                "git": {"url": remote.url},
                "cluster": {"kubeconfig": str(kube.kubeconfig)},
            }
            for name, remote in remotes.items()
        ],
    }
    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return parse_settings(path.read_text(), str(path), {})


@dataclass
class SyncRun:
    """One measured sync: wall-clock seconds and the stage timings from the status hash."""

    seconds: float
    status: dict[str, str]
    visible_seconds: float | None = None

    def stage(self, name: str) -> float:
        return float(self.status.get(f"{name}_seconds") or 0.0)

    @property
    def other(self) -> float:
        """Time outside the three stages: broker hops, trigger, worker scheduling, polling."""
        return self.seconds - self.stage("fetch") - self.stage("generate") - self.stage("apply")


class Pipelines:
    """Sends `sync.trigger` from a separate Celery app and reads the status hash."""

    def __init__(self, settings: Settings, worker: SyncWorker) -> None:
        self.sender = Celery("bench-sender", set_as_current=False)
        self.sender.conf.update(celery_config(settings))
        self.redis = redis.Redis.from_url(settings.redis_url, decode_responses=True)
        self.keys = Keys(settings.key_prefix)
        self.worker = worker

    def close(self) -> None:
        self.sender.close()
        self.redis.close()

    def trigger(self, pipeline: str, full: bool) -> None:
        self.sender.send_task("sync.trigger", args=[pipeline], kwargs={"full": full})

    def status(self, pipeline: str) -> dict[str, str]:
        return cast(dict[str, str], self.redis.hgetall(self.keys.sync(pipeline)))

    def wait(self, what: str, probe: Callable[[], T | None]) -> T:
        """Poll `probe` every POLL_SECONDS until it returns something; watch the worker."""
        return poll(
            what, probe, alive=self.worker.check_alive, every=POLL_SECONDS, limit=WAIT_SECONDS
        )

    def finished(self, pipeline: str, revision: str | None = None) -> dict[str, str] | None:
        status = self.status(pipeline)
        if status.get("status") not in TERMINAL:
            return None
        if revision is not None and status.get("revision") != revision:
            return None
        return status

    def full_sync(self, pipeline: str, expect: int) -> SyncRun:
        started = time.monotonic()
        self.trigger(pipeline, full=True)
        status = self.wait(f"{pipeline} to sync", lambda: self.finished(pipeline))
        elapsed = time.monotonic() - started
        _check(pipeline, status, expect)
        return SyncRun(elapsed, status)


def _check(pipeline: str, status: dict[str, str], applied: int) -> None:
    if status.get("status") != "synced" or int(status.get("applied", -1)) != applied:
        raise RuntimeError(
            f"{pipeline}: expected {applied} objects applied and status synced, got "
            f"status={status.get('status')} applied={status.get('applied')} "
            f"failed={status.get('failed')} error={status.get('error')!r} "
            f"errors={status.get('errors', '')[:1000]}"
        )


def change_one(
    pipelines: Pipelines,
    pipeline: str,
    remote: GitRemote,
    core: k8s.CoreV1Api,
    tag: str,
    value: str,
) -> SyncRun:
    """Push a change to one ConfigMap; time push -> served by the API server and -> synced."""
    namespace = namespace_name(tag, CHANGED_NAMESPACE_INDEX)
    name = f"config-{CHANGED_CONFIGMAP_INDEX:03d}"
    head = remote.commit({configmap_path(tag): configmap_file(tag, value)}, f"bench: {value}")
    pushed = time.monotonic()
    pipelines.trigger(pipeline, full=False)
    visible: float | None = None
    synced: float | None = None
    status: dict[str, str] = {}

    def probe() -> bool | None:
        nonlocal visible, synced, status
        now = time.monotonic()
        if visible is None:
            live = core.read_namespaced_config_map(name, namespace, _request_timeout=10)
            if (live.data or {}).get("value") == value:
                visible = now - pushed
        if synced is None:
            found = pipelines.finished(pipeline, head)
            if found is not None:
                synced, status = now - pushed, found
        return True if visible is not None and synced is not None else None

    pipelines.wait(f"{pipeline} to apply {head[:12]}", probe)
    assert synced is not None
    _check(pipeline, status, 1)
    return SyncRun(synced, status, visible_seconds=visible)


# --- the report ------------------------------------------------------------------------------


def median(values: Sequence[float]) -> float:
    return statistics.median(values)


def seconds(value: float) -> str:
    return f"{value:7.3f} s"


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


def row(label: str, values: Sequence[float]) -> str:
    return (
        f"  {label:<44} {len(values):>3}  {seconds(median(values))}  "
        f"{seconds(min(values))}  {seconds(max(values))}"
    )


def stage_line(label: str, runs: Sequence[SyncRun]) -> str:
    parts = [
        f"{name} {median([r.stage(name) for r in runs]):.3f}"
        for name in ("fetch", "generate", "apply")
    ]
    parts.append(f"other (hops, trigger, queue) {median([r.other for r in runs]):.3f}")
    return f"    {label} stages, median s: " + ", ".join(parts)


def cpu_line(
    label: str, cpu: Sequence[dict[str, float]], walls: Sequence[float], client: str
) -> str:
    """Median CPU seconds per process, and how many of the cores were busy on average."""
    names = ("kube-apiserver", "etcd", client)
    parts = [f"{name} {median([c[name] for c in cpu]):.2f}" for name in names]
    busy = median([sum(c[n] for n in names) / wall for c, wall in zip(cpu, walls, strict=True)])
    return f"    {label} CPU s, median: " + ", ".join(parts) + f"; cores busy {busy:.2f}"


@dataclass
class Results:
    kubectl_full: list[float] = field(default_factory=list)
    ours_full: list[SyncRun] = field(default_factory=list)
    kubectl_cpu: list[dict[str, float]] = field(default_factory=list)
    ours_cpu: list[dict[str, float]] = field(default_factory=list)
    changes: list[SyncRun] = field(default_factory=list)
    kubectl_one: list[float] = field(default_factory=list)
    memory_after_full: tuple[float, float, int] = (0.0, 0.0, 0)
    memory_after_all: tuple[float, float, int] = (0.0, 0.0, 0)


def report(facts: dict[str, str], results: Results, total: float) -> None:
    print("gitops-pipeline sync benchmark")
    for key, value in facts.items():
        print(f"  {key:<16} {value}")
    print()
    header = f"  {'measurement':<44} {'n':>3}  {'median':>9}  {'min':>9}  {'max':>9}"
    print(header)
    print("  " + "-" * (len(header) - 2))
    print(f"1. full apply of {OBJECTS} objects (create, fresh namespaces)")
    print(row("kubectl apply --server-side -R (baseline)", results.kubectl_full))
    print(cpu_line("kubectl", results.kubectl_cpu, results.kubectl_full, "kubectl"))
    ours = [r.seconds for r in results.ours_full]
    print(row("sync.trigger(full=True) -> status synced", ours))
    print(cpu_line("ours", results.ours_cpu, ours, "worker"))
    print(stage_line("ours", results.ours_full))
    print("2. one-object change, push -> applied")
    visible = [r.visible_seconds or 0.0 for r in results.changes]
    print(row("sync.trigger(full=False) -> object served", visible))
    print(row("sync.trigger(full=False) -> status synced", [r.seconds for r in results.changes]))
    print(stage_line("ours", results.changes))
    print(row("kubectl apply --server-side of that file", results.kubectl_one))
    print("3. sync worker peak RSS (VmHWM)")
    main_full, pool_full, seen_full = results.memory_after_full
    main_all, pool_all, seen_all = results.memory_after_all
    print(f"  {'pool process, over the full applies':<44} {pool_full:7.1f} MB  ({seen_full} seen)")
    print(f"  {'main process, over the full applies':<44} {main_full:7.1f} MB")
    print(f"  {'pool process, whole run':<44} {pool_all:7.1f} MB  ({seen_all} seen)")
    print(f"  {'main process, whole run':<44} {main_all:7.1f} MB")
    print()
    full_ratio = median(ours) / median(results.kubectl_full)
    push = median(visible)
    print(
        f"full apply: ours/kubectl = {full_ratio:.2f} "
        f"(target <= {FULL_RATIO_TARGET:.2f}) {verdict(full_ratio <= FULL_RATIO_TARGET)}"
    )
    print(
        f"push-to-applied: {push:.3f} s, ratio to {PUSH_TARGET_SECONDS:.1f} s = "
        f"{push / PUSH_TARGET_SECONDS:.2f} (target < 1.00) {verdict(push < PUSH_TARGET_SECONDS)}"
    )
    print(
        f"pool peak RSS: {pool_full:.1f} MB, ratio to {RSS_TARGET_MB:.0f} MB = "
        f"{pool_full / RSS_TARGET_MB:.2f} (target < 1.00) {verdict(pool_full < RSS_TARGET_MB)}"
    )
    print(f"total bench time: {total:.0f} s")


# --- the run ---------------------------------------------------------------------------------


def run(quick: bool, keep: bool) -> None:
    started = time.monotonic()
    full_reps = 1 if quick else 3
    change_reps = 2 if quick else 5
    tmp = Path(tempfile.mkdtemp(prefix="gp-bench-"))
    log(f"state in {tmp}")
    with ExitStack() as stack:
        if not keep:
            stack.callback(shutil.rmtree, tmp, True)
        else:
            stack.callback(log, f"kept {tmp}")
        log("starting Redis, etcd + kube-apiserver")
        redis_server = start_redis(tmp / "redis")
        stack.callback(redis_server.stop)
        kube = start_kube(tmp / "kube", tenants=())
        stack.callback(kube.stop)
        api = k8s_config.new_client_from_config(config_file=str(kube.kubeconfig))  # type: ignore[no-untyped-call]
        stack.callback(api.close)
        core = k8s.CoreV1Api(api)
        kubectl = Kubectl(kube.kubeconfig, tmp / "kubectl-cache")

        facts = {
            "nproc": str(os.cpu_count()),
            "kube-apiserver": str(k8s.VersionApi(api).get_code().git_version),
            "kubectl": kubectl.version(),
            "python": platform.python_version(),
            "objects": (
                f"{OBJECTS} = {NAMESPACES} Namespaces + {NAMESPACES * CONFIGMAPS_PER_NAMESPACE} "
                f"ConfigMaps + {NAMESPACES * DEPLOYMENTS_PER_NAMESPACE} Deployments, "
                "one file per object"
            ),
            "worker": "python -m workers.sync, prefork, sync_concurrency 1",
            "repetitions": f"full apply {full_reps}, one-object change {change_reps}",
        }

        log("writing manifests and git remotes")
        kubectl_tags = [f"k{i}" for i in range(full_reps)]
        ours_tags = [f"p{i}" for i in range(full_reps)]
        remotes: dict[str, GitRemote] = {}
        warm_files = object_files("pw", namespaces=1, configmaps=5, deployments=5)
        remotes["bench-warmup"] = GitRemote(tmp / "git" / "pw")
        remotes["bench-warmup"].commit(warm_files, "warm-up objects")
        for tag in ours_tags:
            remotes[f"bench-{tag}"] = GitRemote(tmp / "git" / tag)
            remotes[f"bench-{tag}"].commit(object_files(tag), f"{OBJECTS} objects")
        trees = {tag: write_tree(tmp / "kubectl" / tag, object_files(tag)) for tag in kubectl_tags}
        kubectl_warm = write_tree(tmp / "kubectl" / "kw", object_files("kw", 1, 5, 5))

        settings = write_config(tmp / "gitops.yaml", redis_server.url, tmp / "work", kube, remotes)
        log("starting the sync worker")
        worker = SyncWorker(tmp / "gitops.yaml", tmp / "worker").start()
        stack.callback(worker.stop)
        sampler = MemorySampler(worker.process.pid).start()
        stack.callback(sampler.stop)
        pipelines = Pipelines(settings, worker)
        stack.callback(pipelines.close)

        log("warm-up (not measured): kubectl discovery cache, worker start, API clients")
        kubectl.apply(kubectl_warm)
        pipelines.full_sync("bench-warmup", expect=11)

        results = Results()
        meter = CpuMeter(kube, worker.process.pid)
        for kubectl_tag, ours_tag in zip(kubectl_tags, ours_tags, strict=True):
            elapsed, cpu = meter.measure(partial(kubectl.apply, trees[kubectl_tag]))
            results.kubectl_full.append(elapsed)
            results.kubectl_cpu.append(cpu)
            log(f"kubectl full apply {kubectl_tag}: {elapsed:.2f} s")
            synced, cpu = meter.measure(partial(pipelines.full_sync, f"bench-{ours_tag}", OBJECTS))
            results.ours_full.append(synced)
            results.ours_cpu.append(cpu)
            log(f"ours full sync {ours_tag}: {synced.seconds:.2f} s")
        results.memory_after_full = sampler.peaks_mb()

        changed = ours_tags[0]
        one_file = tmp / "kubectl" / "one.yaml"
        for n in range(change_reps):
            value = f"change-{n}"
            run_ = change_one(
                pipelines, f"bench-{changed}", remotes[f"bench-{changed}"], core, changed, value
            )
            results.changes.append(run_)
            one_file.write_text(configmap_file(kubectl_tags[0], value))
            results.kubectl_one.append(kubectl.apply(one_file))
            log(
                f"change {n}: object served {run_.visible_seconds:.3f} s, synced "
                f"{run_.seconds:.3f} s; kubectl one file {results.kubectl_one[-1]:.3f} s"
            )
        results.memory_after_all = sampler.peaks_mb()
        report(facts, results, time.monotonic() - started)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench", description="gitops-pipeline sync benchmark"
    )
    parser.add_argument("--quick", action="store_true", help="fewer repetitions (smoke run)")
    parser.add_argument("--keep", action="store_true", help="keep the temporary state directory")
    args = parser.parse_args(argv)
    return run_interruptibly(lambda: run(quick=args.quick, keep=args.keep))
