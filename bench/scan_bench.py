"""Registry scan benchmark: requests per scan against a Flux v1 style baseline, and scale-out.

Run with ``python -m bench.scan_bench`` (``--quick`` for a smoke run). Everything runs on the
project's test bed in a temporary directory: a private ``redis-server`` and a real
``docker-registry`` (``gitops_pipeline.testbed``), with a `RegistryFront` in front of the
registry that serves tag lists in pages of at most ``--page-size`` tags (``Link`` headers, as
distribution 3, Docker Hub, GHCR and Quay do; they also cap ``n``, as the front does here) and
counts every request it forwards. What is started is stopped again by process id.

1. Requests. ``--repos`` repositories (default 100, scaled down from 500 to keep the run under
   ten minutes on 2 cores; the report says what 500 would take) of ``--tags`` (200) tags each,
   every tag its own image (its own config blob and manifest, so its own digest), pushed
   through the Registry HTTP API. Scanned cold (empty cache) and warm (again, nothing new) by:

   - ours, semver filter: `scan_repository` with the scanner's policy for a semver filter (the
     newest matching tag's image only);
   - ours, glob filter ``*``: created-time ordering, every tag a candidate (context);
   - baseline, "Flux v1 style": the tag list, then per tag its manifest and its config, on
     every scan, with the same `RegistryClient`.

   Each scan of one repository uses a client of its own (as a scan task does), eight
   repositories at a time for every variant. Targets: a warm rescan costs at most 1.05
   requests per tag-list page (pages = ceil(tags / page size)); a cold scan takes at least 10x
   fewer requests than the baseline's.

2. Horizontal scaling. The front adds ``--delay`` (50 ms) before forwarding every request,
   as a registry across a network would. Real scanner processes (``python -m workers.scan``,
   prefork, ``scan_concurrency`` ``--concurrency``, default 1) scan ``--scale-repos`` (200)
   repositories (those of part 1, and beyond them repositories whose tags all name one image:
   a cold semver scan reads one image either way) named by one pipeline's last rendered set
   (written into Redis as ``sync.generate`` stores it), each container with a semver filter.
   Per process count: a fresh key prefix (cold cache, own queues), rate limits far above the
   load, the workers started and answering a ping, then the clock runs from sending
   ``scan.dispatch`` until every repository's scan state has ``scanned_at``. Target: 4
   processes scan at least 3x as many repositories per second as 1.

The registry's storage goes to ``/dev/shm`` when there is one and the registry runs with
``GOGC=1000``: on 2 cores the registry's own CPU time (about 1.5 ms per request with Go's
default GC) would otherwise bound every variant alike and stretch the run past ten minutes.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import multiprocessing
import os
import platform
import re
import shutil
import signal
import statistics
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack, contextmanager, suppress
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any, cast

import httpx
import redis
import yaml
from celery import Celery

from bench.common import log, run_interruptibly
from gitops_pipeline.celery_app import celery_config
from gitops_pipeline.config import Settings, parse_settings
from gitops_pipeline.policy.filters import newest_by_version, parse_filter
from gitops_pipeline.registry.cache import TagCache
from gitops_pipeline.registry.client import RegistryClient
from gitops_pipeline.registry.ratelimit import RateLimiter
from gitops_pipeline.registry.scan import NeedsImage, scan_repository
from gitops_pipeline.store import Keys
from gitops_pipeline.testbed.process import ManagedProcess
from gitops_pipeline.testbed.redis_server import RedisServer, start_redis
from gitops_pipeline.testbed.registry import (
    IMAGE_CONFIG_V1,
    MANIFEST_V2,
    RegistryServer,
    start_registry,
)
from gitops_pipeline.testbed.registry_front import RegistryFront

REPO = Path(__file__).resolve().parents[1]

SEMVER_FILTER = "semver:^1.0"
GLOB_FILTER = "glob:*"
WARM_TARGET = 1.05  # requests per tag-list page, warm rescan
COLD_TARGET = 10.0  # baseline requests / ours, cold scan
SCALE_TARGET = 3.0  # throughput of 4 processes / 1 process
FULL_REPOS = 500  # the size the targets were set for

SCAN_THREADS = 8
PUSH_PROCESSES = 3
REGISTRY_GOGC = "1000"
POLL_SECONDS = 0.02
WAIT_SECONDS = 600.0  # upper bound of one wait, so a hung run ends; not a speed check
READY_SECONDS = 120.0
TASK_DONE = re.compile(r"Task scan\.repository\[[^\]]+\] succeeded in ([0-9.]+)s")
CREATED_BASE = datetime(2024, 1, 1, tzinfo=UTC)


def verdict(ok: bool) -> str:
    return "PASS" if ok else "MISS"


# --- the images --------------------------------------------------------------------------------


def tag_names(count: int) -> list[str]:
    """Release tags ``1.0.0``, ``1.0.1``, ... (ten patches per minor): all match the filters."""
    return [f"1.{i // 10}.{i % 10}" for i in range(count)]


def _canonical_json(obj: Any) -> bytes:
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


def _checked(response: httpx.Response) -> httpx.Response:
    if response.is_error:
        raise RuntimeError(
            f"push: {response.request.method} {response.request.url} -> "
            f"{response.status_code} {response.text[:300]}"
        )
    return response


def _push_image(http: httpx.Client, repository: str, tag: str, created: datetime) -> bytes:
    """Config blob + schema-2 manifest, as the test bed's ``push_image`` writes them, over one
    kept-alive connection (three requests); returns the manifest."""
    stamp = created.isoformat().replace("+00:00", "Z")
    config = _canonical_json(
        {
            "created": stamp,
            "architecture": "amd64",
            "os": "linux",
            "config": {"Labels": {"org.opencontainers.image.source": f"bench/{repository}"}},
            "rootfs": {"type": "layers", "diff_ids": []},
            "history": [{"created": stamp, "created_by": "scan bench"}],
        }
    )
    digest = "sha256:" + hashlib.sha256(config).hexdigest()
    started = _checked(http.post(f"/v2/{repository}/blobs/uploads/"))
    location = httpx.URL(started.headers["Location"]).copy_merge_params({"digest": digest})
    _checked(http.put(location, content=config))
    manifest = _canonical_json(
        {
            "schemaVersion": 2,
            "mediaType": MANIFEST_V2,
            "config": {"mediaType": IMAGE_CONFIG_V1, "size": len(config), "digest": digest},
            "layers": [],
        }
    )
    _put_manifest(http, repository, tag, manifest)
    return manifest


def _put_manifest(http: httpx.Client, repository: str, tag: str, manifest: bytes) -> None:
    _checked(
        http.put(
            f"/v2/{repository}/manifests/{tag}",
            content=manifest,
            headers={"Content-Type": MANIFEST_V2},
        )
    )


@dataclass(frozen=True)
class PushJob:
    registry_url: str
    repository: str
    tags: int
    distinct: bool
    """Every tag its own image; else one image, and the other tags PUT its manifest again
    (one request per tag; for scans that read one tag's image only)."""


def push_repository(job: PushJob) -> int:
    """Push one repository (in a pool process); return the requests it took."""
    requests = 0
    manifest: bytes | None = None
    with httpx.Client(base_url=job.registry_url, timeout=60.0) as http:
        for index, tag in enumerate(tag_names(job.tags)):
            if manifest is None or job.distinct:
                created = CREATED_BASE + timedelta(hours=index, seconds=len(job.repository))
                manifest = _push_image(http, job.repository, tag, created)
                requests += 3
            else:
                _put_manifest(http, job.repository, tag, manifest)
                requests += 1
    return requests


def push_all(jobs: list[PushJob]) -> tuple[float, int, int]:
    """Push in parallel processes; return seconds, images pushed, requests."""
    started = time.monotonic()
    context = multiprocessing.get_context("spawn")
    with context.Pool(PUSH_PROCESSES) as pool:
        requests = sum(pool.imap_unordered(push_repository, jobs))
    images = sum(job.tags if job.distinct else 1 for job in jobs)
    return time.monotonic() - started, images, requests


# --- the registry front, in a process of its own ------------------------------------------------


@dataclass(eq=False)
class BenchFront(RegistryFront):
    """The test bed's front (which answers without Nagle's delay) with the page size capped
    and an optional delay."""

    max_page: int = 100
    delay: float = 0.0

    def _answer(
        self, method: str, path: str, headers: dict[str, str]
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        if self.delay:
            time.sleep(self.delay)
        return super()._answer(method, path, headers)

    def _tag_page(
        self, path: str, query: dict[str, list[str]], headers: dict[str, str]
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        asked = int(query.get("n", [str(self.max_page)])[0])
        capped = {**query, "n": [str(max(1, min(asked, self.max_page)))]}
        return super()._tag_page(path, capped, headers)


def request_kind(line: str) -> str:
    """``tags`` (a tag-list page), ``manifests``, ``blobs`` or ``other``, from ``METHOD path``."""
    path = line.split(" ", 1)[1].split("?", 1)[0]
    for kind in ("tags", "manifests", "blobs"):
        if f"/{kind}/" in path:
            return kind
    return "other"


def _serve_front(upstream: str, max_page: int, delay: float, conn: Connection) -> None:
    """The front process: report its host, then answer "counts" until told to "stop"."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent stops it
    front = BenchFront(upstream, paginate_tags=True, max_page=max_page, delay=delay).start()
    conn.send(front.host)
    try:
        while conn.recv() != "stop":
            conn.send(Counter(request_kind(line) for line in list(front.seen)))
    except EOFError:
        pass
    finally:
        front.stop()


class FrontProcess:
    """A `BenchFront` in a child process, so the scanners' GIL is not the front's."""

    def __init__(self, upstream: str, max_page: int, delay: float) -> None:
        context = multiprocessing.get_context("spawn")
        self._conn, child = context.Pipe()
        self.process = context.Process(
            target=_serve_front, args=(upstream, max_page, delay, child), daemon=True
        )
        self.process.start()
        child.close()
        if not self._conn.poll(60):
            self.stop()
            raise RuntimeError("the registry front did not start within 60 s")
        self.host = cast(str, self._conn.recv())

    @property
    def pid(self) -> int:
        return cast(int, self.process.pid)

    def counts(self) -> Counter[str]:
        self._conn.send("counts")
        return cast(Counter[str], self._conn.recv())

    def stop(self) -> None:
        if self.process.is_alive():
            with suppress(OSError):
                self._conn.send("stop")
            self.process.join(10)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(10)
        self._conn.close()


# --- CPU time of the processes involved ---------------------------------------------------------

_TICK = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pids: set[int], groups: set[int]) -> float:
    """User + system CPU of processes ``pids`` and of every live process in ``groups``."""
    total = 0
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            stat = Path(f"/proc/{entry.name}/stat").read_text()
        except OSError:
            continue
        fields = stat.rsplit(")", 1)[1].split()
        if int(entry.name) in pids or int(fields[2]) in groups:
            total += int(fields[11]) + int(fields[12])
    return total / _TICK


@dataclass
class CpuMeter:
    """CPU seconds per component over one measurement."""

    parts: dict[str, tuple[set[int], set[int]]]
    start: dict[str, float] = field(default_factory=dict)

    def begin(self) -> None:
        self.start = {name: cpu_seconds(*ids) for name, ids in self.parts.items()}

    def end(self) -> dict[str, float]:
        return {name: cpu_seconds(*ids) - self.start[name] for name, ids in self.parts.items()}


# --- 1. requests -------------------------------------------------------------------------------


def scanner_policy(filter_text: str) -> NeedsImage:
    """What the scan task asks of `scan_repository` for one filter: semver, the newest match
    only; created-time ordering, every matching tag."""
    tag_filter = parse_filter(filter_text)
    if tag_filter.orders_by_version:
        return lambda tags: newest_by_version(tags, tag_filter)[:1]
    return tag_filter.select


def flux_v1_scan(client: RegistryClient, repository: str) -> None:
    """The baseline: every tag's manifest and config on every scan (Flux v1's warmer without its
    memcached entries)."""
    for tag in client.list_tags(repository):
        resolved = client.resolve(repository, tag)
        if resolved.config_digest is not None:
            client.image_config(repository, resolved.config_digest)


@dataclass
class ScanRun:
    name: str
    seconds: float
    client_requests: int
    counts: Counter[str]
    resolved: int = 0
    configs: int = 0

    @property
    def requests(self) -> int:
        return sum(self.counts.values())


Scan = Callable[[RegistryClient, str], tuple[int, int]]
"""Scan one repository with a client; return (manifests resolved, configs fetched)."""


def run_scans(name: str, front: FrontProcess, repositories: list[str], scan: Scan) -> ScanRun:
    """Scan every repository, SCAN_THREADS at a time, each with a client of its own."""
    client_requests = 0
    resolved = configs = 0

    def one(repository: str) -> tuple[int, int, int]:
        with RegistryClient(front.host, insecure=True) as client:
            resolved, configs = scan(client, repository)
            return client.requests, resolved, configs

    before = front.counts()
    started = time.monotonic()
    with ThreadPoolExecutor(SCAN_THREADS) as pool:
        for requests, res, conf in pool.map(one, repositories):
            client_requests += requests
            resolved += res
            configs += conf
    seconds = time.monotonic() - started
    counts = front.counts()
    counts.subtract(before)
    run = ScanRun(name, seconds, client_requests, +counts, resolved, configs)
    log(f"{name}: {run.requests} requests in {seconds:.1f} s")
    if run.requests != client_requests:
        log(f"  note: the front saw {run.requests}, the clients counted {client_requests}")
    return run


def ours(cache: TagCache, filter_text: str) -> Scan:
    needs = scanner_policy(filter_text)

    def scan(client: RegistryClient, repository: str) -> tuple[int, int]:
        name = f"{client.host}/{repository}"
        result = scan_repository(client, cache, name, repository, needs, time.time())
        return result.resolved, result.configs

    return scan


def baseline(client: RegistryClient, repository: str) -> tuple[int, int]:
    flux_v1_scan(client, repository)
    return 0, 0


@dataclass(frozen=True)
class Pushed:
    """What `push_fleet` put in the registry: repositories in order, the first ``distinct`` of
    them with every tag its own image."""

    repositories: list[str]
    distinct: int
    tags: int
    seconds: float
    images: int
    requests: int


def push_fleet(registry: RegistryServer, distinct: int, total: int, tags: int) -> Pushed:
    """``total`` repositories of ``tags`` tags; the first ``distinct`` with an image per tag,
    the rest with one image under every tag (all a cold semver scan reads is one image)."""
    repositories = [f"bench/app-{i:04d}" for i in range(total)]
    log(
        f"pushing {total} repositories x {tags} tags ({distinct} with an image per tag, "
        f"{total - distinct} with one image retagged)"
    )
    jobs = [PushJob(registry.url, name, tags, i < distinct) for i, name in enumerate(repositories)]
    seconds, images, requests = push_all(jobs)
    log(f"pushed {images} images, {requests} requests in {seconds:.0f} s")
    return Pushed(repositories, distinct, tags, seconds, images, requests)


@dataclass
class RequestResults:
    repos: int
    tags: int
    page_size: int
    runs: dict[str, ScanRun] = field(default_factory=dict)

    @property
    def pages(self) -> int:
        return self.repos * math.ceil(self.tags / self.page_size)


def measure_requests(
    registry: RegistryServer, redis_url: str, repositories: list[str], tags: int, page_size: int
) -> RequestResults:
    results = RequestResults(len(repositories), tags, page_size)
    front = FrontProcess(registry.host, page_size, 0.0)
    binary = redis.Redis.from_url(redis_url, socket_timeout=30)
    try:
        for label, filter_text, prefix in (
            ("semver", SEMVER_FILTER, "bench-semver:"),
            ("glob", GLOB_FILTER, "bench-glob:"),
        ):
            scan = ours(TagCache(binary, prefix), filter_text)
            for state in ("cold", "warm"):
                name = f"ours {label} {state}"
                results.runs[name] = run_scans(name, front, repositories, scan)
        for state in ("cold", "warm"):
            name = f"baseline {state}"
            results.runs[name] = run_scans(name, front, repositories, baseline)
    finally:
        binary.close()
        front.stop()
    return results


def report_requests(r: RequestResults, pushed: Pushed) -> None:
    pages_per_repo = math.ceil(r.tags / r.page_size)
    print(
        f"1. Requests: {r.repos} repositories x {r.tags} tags (each tag its own image), tag "
        f"lists in pages of {r.page_size} ({pages_per_repo} per repository, {r.pages} in all), "
        f"{SCAN_THREADS} repositories at a time"
    )
    if r.repos < FULL_REPOS:
        push_rate = pushed.requests / pushed.seconds
        push_minutes = FULL_REPOS * r.tags * 3 / push_rate / 60  # 3 requests per image
        scan_minutes = sum(run.seconds for run in r.runs.values()) * FULL_REPOS / r.repos / 60
        print(
            f"   scaled down from {FULL_REPOS} repositories: pushing ran at {push_rate:.0f} "
            f"requests/s (3 per image), so {FULL_REPOS} would take {push_minutes:.0f} min to push "
            f"and {scan_minutes:.0f} min to scan as below; every repository has the same "
            "shape, so the per-repository figures and the ratios do not depend on the count"
        )
    header = (
        f"   {'scan':<22}{'requests':>9}{'per repo':>10}{'per page':>10}{'tag pages':>10}"
        f"{'manifests':>10}{'blobs':>8}{'seconds':>9}{'repos/s':>9}"
    )
    print(header)
    for run in r.runs.values():
        c = run.counts
        print(
            f"   {run.name:<22}{run.requests:>9}{run.requests / r.repos:>10.2f}"
            f"{run.requests / r.pages:>10.2f}{c['tags']:>10}{c['manifests']:>10}{c['blobs']:>8}"
            f"{run.seconds:>9.1f}{r.repos / run.seconds:>9.1f}"
        )
    runs = r.runs
    warm = runs["ours semver warm"].requests / r.pages
    print(
        f"   warm rescan, semver: {warm:.3f} requests per tag-list page "
        f"(target <= {WARM_TARGET}) {verdict(warm <= WARM_TARGET)}"
    )
    cold = runs["baseline cold"].requests / runs["ours semver cold"].requests
    print(
        f"   cold scan, semver: baseline / ours = {cold:.1f}x fewer requests "
        f"(target >= {COLD_TARGET:g}x) {verdict(cold >= COLD_TARGET)}"
    )
    for label, ours_name, base_name in (
        ("warm rescan, semver", "ours semver warm", "baseline warm"),
        ("cold scan, glob", "ours glob cold", "baseline cold"),
        ("warm rescan, glob", "ours glob warm", "baseline warm"),
    ):
        mine, base = runs[ours_name], runs[base_name]
        print(
            f"   {label}: baseline / ours = {base.requests / mine.requests:.1f}x fewer requests, "
            f"{base.seconds / mine.seconds:.1f}x less time (context)"
        )


# --- 2. horizontal scaling ---------------------------------------------------------------------


def write_pipeline(
    client: redis.Redis, keys: Keys, images: list[str], pipeline: str, filter_text: str
) -> None:
    """The pipeline's last rendered set, as ``sync.generate`` stores it: one Deployment each."""
    objects = [
        {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {
                "name": f"app-{i:04d}",
                "annotations": {"fluxcd.io/tag.app": filter_text},
            },
            "spec": {"template": {"spec": {"containers": [{"name": "app", "image": image}]}}},
        }
        for i, image in enumerate(images)
    ]
    artifact = keys.artifact(f"{pipeline}-bench")
    rendered = {
        "revision": "bench",
        "objects": [{"source": "x.yaml", "object": o} for o in objects],
    }
    client.set(artifact, json.dumps(rendered))
    client.hset(keys.sync(pipeline), "artifact", artifact)


@dataclass
class ScaleRun:
    processes: int
    seconds: float
    repos: int
    requests: int
    tasks_per_worker: list[int]
    task_seconds: list[float]
    """How long each ``scan.repository`` ran, from the workers' logs."""
    errors: int
    rate_waits: int
    cpu: dict[str, float]

    @property
    def throughput(self) -> float:
        return self.repos / self.seconds


def _scanner(config: Path, workdir: Path, index: int) -> ManagedProcess:
    argv = [
        sys.executable, "-m", "workers.scan",
        "--config", str(config),
        "--hostname", f"bench-scan{index}@%h",
    ]  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    return ManagedProcess(f"scanner-{index}", argv, workdir, env=env)


def _wait_ready(sender: Celery, scanners: list[ManagedProcess]) -> None:
    """Until every scanner answers a ping (workers that answer have their pool running)."""
    deadline = time.monotonic() + READY_SECONDS
    while time.monotonic() < deadline:
        for scanner in scanners:
            if not scanner.running():
                raise RuntimeError(f"{scanner.name} exited:\n{scanner.log_tail()}")
        replies = sender.control.ping(timeout=1.0) or []
        if len(replies) >= len(scanners):
            return
    raise RuntimeError(f"scanners not ready after {READY_SECONDS:.0f} s")


def scale_run(
    processes: int,
    concurrency: int,
    tmp: Path,
    redis_server: RedisServer,
    registry: RegistryServer,
    front: FrontProcess,
    repositories: list[str],
) -> ScaleRun:
    prefix = f"bench-scale{processes}-{uuid.uuid4().hex[:8]}:"
    workdir = tmp / f"scale-{processes}"
    workdir.mkdir()
    config = {
        "redis_url": redis_server.url,
        "key_prefix": prefix,
        "work_dir": str(workdir / "work"),
        "log_level": "INFO",
        "registry": {
            "insecure_hosts": [front.host],
            "default_rps": 100_000,
            "default_burst": 100_000,
        },
        "workers": {"scan_concurrency": concurrency},
        "pipelines": [{"name": "fleet", "git": {"url": "file:///unused.git"}}],
    }
    config_path = workdir / "gitops.yaml"
    config_path.write_text(yaml.safe_dump(config))
    settings: Settings = parse_settings(config_path.read_text(), str(config_path), {})
    text = redis.Redis.from_url(redis_server.url, decode_responses=True)
    images = [f"{front.host}/{name}:1.0.0" for name in repositories]
    write_pipeline(text, Keys(prefix), images, "fleet", SEMVER_FILTER)
    names = [image.rsplit(":", 1)[0] for image in images]
    meta_keys = [f"{prefix}reg:meta:{name}" for name in names]

    sender = Celery("scan-bench-sender", set_as_current=False)
    sender.conf.update(celery_config(settings))
    scanners = [_scanner(config_path, workdir, i) for i in range(processes)]
    with ExitStack() as stack:
        stack.callback(text.close)
        stack.callback(sender.close)
        for scanner in scanners:
            scanner.start()
            stack.callback(scanner.stop, 15)
        _wait_ready(sender, scanners)
        meter = CpuMeter(
            {
                "scanners": (set(), {s.pid for s in scanners}),
                "front": ({front.pid}, set()),
                "registry": ({registry.pid}, set()),
                "redis": ({redis_server.pid}, set()),
            }
        )
        log(f"{processes} scanner process(es) ready; dispatching {len(names)} repositories")
        before = front.counts()
        meter.begin()
        started = time.monotonic()
        sender.send_task("scan.dispatch")
        done = 0
        while time.monotonic() - started < WAIT_SECONDS:
            pipe = text.pipeline(transaction=False)
            for key in meta_keys:
                pipe.hget(key, "scanned_at")
            done = sum(value is not None for value in pipe.execute())
            if done == len(names):
                break
            time.sleep(POLL_SECONDS)
        seconds = time.monotonic() - started
        cpu = meter.end()
        if done < len(names):
            raise RuntimeError(f"only {done} of {len(names)} scanned after {WAIT_SECONDS:.0f} s")
        counts = front.counts()
        counts.subtract(before)
        pipe = text.pipeline(transaction=False)
        for key in meta_keys:
            pipe.hget(key, "error")
        errors = sum(value is not None for value in pipe.execute())
        waits = RateLimiter(text, prefix).waits(front.host).count
        time.sleep(0.5)  # let the last task's "succeeded" line reach the logs
    durations = [[float(d) for d in TASK_DONE.findall(s.log_path.read_text())] for s in scanners]
    run = ScaleRun(
        processes, seconds, len(names), sum(counts.values()), [len(d) for d in durations],
        sorted(d for each in durations for d in each), errors, waits, cpu,
    )  # fmt: skip
    log(f"{processes} process(es): {seconds:.1f} s, {run.throughput:.2f} repositories/s")
    return run


def measure_scaling(
    tmp: Path,
    redis_server: RedisServer,
    registry: RegistryServer,
    repositories: list[str],
    page_size: int,
    delay: float,
    concurrency: int,
    process_counts: list[int],
) -> list[ScaleRun]:
    front = FrontProcess(registry.host, page_size, delay)
    try:
        return [
            scale_run(n, concurrency, tmp, redis_server, registry, front, repositories)
            for n in process_counts
        ]
    finally:
        front.stop()


def report_scaling(
    runs: list[ScaleRun], delay: float, concurrency: int, tags: int, page_size: int
) -> None:
    pages = math.ceil(tags / page_size)
    per_scan = pages + 2
    floor = per_scan * delay
    cores = os.cpu_count() or 1
    print(
        f"2. Horizontal scaling: {runs[0].repos} repositories x {tags} tags, {delay * 1000:.0f} ms "
        f"added per request, python -m workers.scan (prefork, scan_concurrency {concurrency})"
    )
    print(
        f"   a cold semver scan is {per_scan} requests ({pages} tag pages, manifest, config): "
        f">= {floor:.2f} s of latency per repository, so at most {1 / floor:.1f} repos/s "
        "per concurrent scan (ideal = slots x that); task s = median scan.repository run time"
    )
    print(
        f"   {'processes':>9}{'slots':>6}{'seconds':>9}{'repos/s':>9}{'speed-up':>9}"
        f"{'of ideal':>9}{'task s':>7}{'requests':>9}{'errors':>7}{'rl waits':>9}  "
        f"tasks per process; CPU s: scanners/front/registry/redis (busy of {cores} cores)"
    )
    first = runs[0].throughput
    for run in runs:
        slots = run.processes * concurrency
        ideal = slots / floor
        busy = sum(run.cpu.values()) / (run.seconds * cores)
        cpu = "/".join(f"{run.cpu[k]:.1f}" for k in ("scanners", "front", "registry", "redis"))
        median = statistics.median(run.task_seconds) if run.task_seconds else math.nan
        print(
            f"   {run.processes:>9}{slots:>6}{run.seconds:>9.2f}{run.throughput:>9.2f}"
            f"{run.throughput / first:>8.2f}x{run.throughput / ideal:>8.0%}{median:>7.3f}"
            f"{run.requests:>9}{run.errors:>7}{run.rate_waits:>9}  {run.tasks_per_worker}; "
            f"{cpu} ({busy:.0%})"
        )
    by_count = {run.processes: run for run in runs}
    if 1 in by_count and 4 in by_count:
        speedup = by_count[4].throughput / by_count[1].throughput
        print(
            f"   throughput 4 processes / 1 process = {speedup:.2f}x "
            f"(target >= {SCALE_TARGET:g}x) {verdict(speedup >= SCALE_TARGET)}"
        )


# --- the run -----------------------------------------------------------------------------------


@contextmanager
def registry_env() -> Iterator[None]:
    """GOGC for the registry process only (it inherits this process's environment)."""
    old = os.environ.get("GOGC")
    os.environ["GOGC"] = REGISTRY_GOGC
    try:
        yield
    finally:
        if old is None:
            os.environ.pop("GOGC", None)
        else:
            os.environ["GOGC"] = old


@dataclass(frozen=True)
class Options:
    repos: int
    scale_repos: int
    tags: int
    page_size: int
    delay: float
    concurrency: int
    processes: list[int]
    parts: frozenset[str]
    keep: bool


def run(options: Options) -> None:
    started = time.monotonic()
    shm = Path("/dev/shm")
    base = shm if shm.is_dir() and os.access(shm, os.W_OK) else None
    tmp = Path(tempfile.mkdtemp(prefix="gp-scan-bench-", dir=base))
    log(f"state in {tmp}")
    with ExitStack() as stack:
        if options.keep:
            stack.callback(log, f"kept {tmp}")
        else:
            stack.callback(shutil.rmtree, tmp, True)
        redis_server = start_redis(tmp / "redis")
        stack.callback(redis_server.stop)
        with registry_env():
            registry = start_registry(tmp / "registry")
        stack.callback(registry.stop)
        client = redis.Redis.from_url(redis_server.url)
        version = cast(dict[str, Any], client.info("server"))["redis_version"]
        client.close()
        print(
            f"Scan benchmark: {os.cpu_count()} cores, Python {platform.python_version()}, "
            f"redis-server {version}, docker-registry (GOGC={REGISTRY_GOGC}, storage in {tmp}), "
            f"registry front in its own process"
        )
        distinct = options.repos if "requests" in options.parts else 0
        scale = options.scale_repos if "scaling" in options.parts else 0
        pushed = push_fleet(registry, distinct, max(distinct, scale), options.tags)
        retagged = len(pushed.repositories) - pushed.distinct
        print(
            f"Pushed {len(pushed.repositories)} repositories x {pushed.tags} tags through the "
            f"Registry HTTP API in {pushed.seconds:.0f} s: {pushed.images} images "
            f"({pushed.images / pushed.seconds:.0f} images/s), {pushed.requests} requests; "
            f"{pushed.distinct} with an image per tag, {retagged} with one image under every tag"
        )
        if distinct:
            results = measure_requests(
                registry, redis_server.url, pushed.repositories[:distinct], options.tags,
                options.page_size,
            )  # fmt: skip
            report_requests(results, pushed)
            sys.stdout.flush()
        if scale:
            runs = measure_scaling(
                tmp, redis_server, registry, pushed.repositories[:scale], options.page_size,
                options.delay, options.concurrency, options.processes,
            )  # fmt: skip
            report_scaling(
                runs, options.delay, options.concurrency, options.tags, options.page_size
            )
    print(f"total bench time: {time.monotonic() - started:.0f} s")


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m bench.scan_bench", description="registry scan benchmark"
    )
    parser.add_argument("--quick", action="store_true", help="fewer repositories (smoke run)")
    parser.add_argument("--repos", type=int, help="repositories for part 1 (default 100)")
    parser.add_argument("--scale-repos", type=int, help="repositories for part 2 (default 200)")
    parser.add_argument("--tags", type=int, default=200, help="tags per repository")
    parser.add_argument("--page-size", type=int, default=100, help="tags per tag-list page")
    parser.add_argument("--delay", type=float, default=0.05, help="seconds added per request")
    parser.add_argument("--concurrency", type=int, default=1, help="scan_concurrency, part 2")
    parser.add_argument("--processes", default="1,2,4", help="scanner process counts, part 2")
    parser.add_argument(
        "--only", choices=("requests", "scaling"), help="run one part of the benchmark"
    )
    parser.add_argument("--keep", action="store_true", help="keep the temporary state directory")
    args = parser.parse_args(argv)
    options = Options(
        repos=args.repos or (20 if args.quick else 100),
        scale_repos=args.scale_repos or (40 if args.quick else 200),
        tags=args.tags,
        page_size=args.page_size,
        delay=args.delay,
        concurrency=args.concurrency,
        processes=[int(n) for n in args.processes.split(",")],
        parts=frozenset([args.only] if args.only else ["requests", "scaling"]),
        keep=args.keep,
    )
    return run_interruptibly(lambda: run(options))


if __name__ == "__main__":
    raise SystemExit(main())
