"""The registry tag cache in Redis (Flux v1 kept it in memcached), and the scan schedule.

Keys, all under the operator's prefix:

``reg:tags:<repo>``
    The repository's whole tag -> digest map as ONE packed binary string, rewritten per scan.
    A Redis hash of tag -> raw digest was measured first (Redis 7.0, ``MEMORY USAGE``): about
    52 bytes per tag while it stays a listpack, but about 96 once a repository has more than
    ``hash-max-listpack-entries`` (512) tags and becomes a real hash table, and repositories
    with thousands of CI-build tags hold much of the total. The packed value costs the tag
    name, one separator byte, a one- or two-byte index and, once per distinct image, the 32 raw
    bytes of its sha256 digest: about 41 bytes per tag at any size, less where several tags
    name one image. Scanners always read and write a repository's tags whole, so nothing is
    lost by packing them. The layout (version 1)::

        header   ">BBII": version, index width w (1, 2 or 4 bytes), digest count, tag count
        digests  per distinct digest: 0x01 + 32 raw bytes (sha256), or 0x00 + length + text
        indexes  one w-byte big-endian index into the digests per tag; all ones: no digest
        names    the tag names, sorted, joined by "\\n" (a tag can never contain one)

    Tags are sorted and digests numbered in order of first use, so one map always packs to the
    same bytes: `TagCache.put_tags` compares bytes in Redis to tell whether a scan changed it.

``reg:digest:<digest>``
    What a digest's image config says (created time, labels) as compact JSON,
    ``{"c": <ms since the epoch>, "l": {labels}}``, both omitted when empty. Written once with
    ``SET NX``: the config of a digest cannot change. Expires after `TagCache` ``retention``
    unless read again (reads refresh it), so digests no tag names any more go away on their own.

``reg:meta:<repo>``
    A small hash: ``scanned_at`` (last good scan), ``next_due``, ``interval`` (the adaptive
    refresh interval), ``error`` / ``error_at`` / ``failures`` (the last failed scan and how many
    failed in a row), ``tags`` (tag count), ``dispatched_at`` (last time a scan was enqueued).

``reg:lease:<repo>``
    A short scan lease (owner id, with a TTL) so two scanner processes never fetch one
    repository at the same time.

Tag and meta keys expire after ``retention`` without a scan, so repositories no pipeline uses
any more leave the cache. Times are the callers' ``time.time()``; scanners' clocks are assumed
to agree (NTP) to well within the minimum refresh interval.

The client must be created with ``decode_responses=False``: the packed values are binary.
"""

from __future__ import annotations

import json
import re
import struct
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, cast

import redis

_VERSION = 1
_HEADER = struct.Struct(">BBII")
_INDEX_FORMATS = {1: "B", 2: "H", 4: "I"}
_SHA256 = 0x01
_OTHER = 0x00
_SHA256_RE = re.compile(r"sha256:([0-9a-f]{64})")
_DIGEST_RE = re.compile(r"[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]+")
_TAG_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")
_MAX_ERROR_LENGTH = 1000

# Replace the packed map; report whether the bytes differ, keep the tag count in the meta hash.
_PUT_TAGS = """
local changed = redis.call('GET', KEYS[1]) ~= ARGV[1]
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[3])
redis.call('HSET', KEYS[2], 'tags', ARGV[2])
redis.call('PEXPIRE', KEYS[2], ARGV[3])
if changed then return 1 end
return 0
"""

# The adaptive refresh (Flux v1 style). ARGV: now, changed (0/1), error ('' when none),
# initial, minimum, maximum, error_retry, retention_ms.
_RECORD_SCAN = """
local now = tonumber(ARGV[1])
local initial, minimum, maximum = tonumber(ARGV[4]), tonumber(ARGV[5]), tonumber(ARGV[6])
local state = redis.call('HMGET', KEYS[1], 'interval', 'scanned_at', 'failures')
local interval = tonumber(state[1]) or initial
local scanned_before = state[2]
local failures = tonumber(state[3]) or 0
local function time(value) return string.format('%.3f', value) end
if ARGV[3] == '' then
  if scanned_before then
    if ARGV[2] == '1' then interval = interval / 2 else interval = interval * 2 end
  end
  interval = math.min(maximum, math.max(minimum, interval))
  redis.call('HSET', KEYS[1], 'scanned_at', time(now), 'next_due', time(now + interval),
             'interval', time(interval), 'failures', '0')
  redis.call('HDEL', KEYS[1], 'error', 'error_at')
else
  failures = failures + 1
  local backoff = math.min(tonumber(ARGV[7]) * 2 ^ (failures - 1), interval)
  redis.call('HSET', KEYS[1], 'error', ARGV[3], 'error_at', time(now),
             'next_due', time(now + backoff), 'interval', time(interval),
             'failures', tostring(failures))
end
redis.call('PEXPIRE', KEYS[1], ARGV[8])
redis.call('PEXPIRE', KEYS[2], ARGV[8])
return 1
"""

# Claim the right to enqueue one scan of a due repository: move next_due a lease ahead.
_TRY_DISPATCH = """
local due = tonumber(redis.call('HGET', KEYS[1], 'next_due'))
local now = tonumber(ARGV[1])
if due and due > now then return 0 end
redis.call('HSET', KEYS[1], 'next_due', string.format('%.3f', now + tonumber(ARGV[2])),
           'dispatched_at', string.format('%.3f', now))
redis.call('PEXPIRE', KEYS[1], ARGV[3])
return 1
"""

_RELEASE = """
if redis.call('GET', KEYS[1]) == ARGV[1] then
  return redis.call('DEL', KEYS[1])
end
return 0
"""


DIGEST_REFRESH_INITIAL = 3600.0
DIGEST_REFRESH_MIN = 600.0
DIGEST_REFRESH_MAX = 24 * 3600.0


@dataclass(frozen=True)
class RefreshPolicy:
    """How often a repository is scanned; the interval adapts to how often its tags change.

    A scan that finds the tags unchanged doubles the interval (up to ``maximum``), one that
    finds a change halves it (down to ``minimum``); the first scan keeps ``initial``. A failed
    scan keeps the interval and the last good tags and retries after ``error_retry``, doubling
    per failure in a row but never later than the interval would have.
    """

    initial: float = 300.0
    minimum: float = 60.0
    maximum: float = 3600.0
    error_retry: float = 30.0

    def __post_init__(self) -> None:
        if not 0 < self.minimum <= self.initial <= self.maximum:
            raise ValueError("refresh intervals must satisfy 0 < minimum <= initial <= maximum")
        if self.error_retry <= 0:
            raise ValueError("error_retry must be positive")


@dataclass(frozen=True)
class ImageInfo:
    """What the cache keeps from an image config: its creation time and labels."""

    created: datetime | None = None
    labels: Mapping[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class RepoMeta:
    """The scan state of one repository (see the module docstring for the fields)."""

    interval: float
    next_due: float | None = None
    scanned_at: float | None = None
    dispatched_at: float | None = None
    tags: int | None = None
    error: str | None = None
    error_at: float | None = None
    failures: int = 0


class TagCache:
    """Tag -> digest maps, digest records and the scan schedule of image repositories.

    ``client`` must be created with ``decode_responses=False``. ``retention`` bounds how long
    entries of repositories and digests that are no longer scanned or read stay in Redis.

    The intended flow: a dispatcher calls `due` for the repositories its pipelines use and
    enqueues a scan for each one `try_dispatch` grants; the scan takes the repository's lease
    (`claim`), fetches, stores with `put_tags` (whose result is ``changed``) and `put_image`,
    calls `record_scan` (with ``error`` when it failed) and `release`.
    """

    def __init__(
        self,
        client: redis.Redis,
        prefix: str = "gp:",
        *,
        policy: RefreshPolicy | None = None,
        retention: float = 7 * 24 * 3600.0,
    ) -> None:
        if client.get_connection_kwargs().get("decode_responses"):
            raise ValueError("TagCache needs a Redis client created with decode_responses=False")
        self.client = client
        self.prefix = prefix
        self.policy = policy or RefreshPolicy()
        self._retention_ms = str(int(retention * 1000))
        self._put_tags = client.register_script(_PUT_TAGS)
        self._record_scan = client.register_script(_RECORD_SCAN)
        self._try_dispatch = client.register_script(_TRY_DISPATCH)
        self._release = client.register_script(_RELEASE)

    def _tags_key(self, repo: str) -> str:
        return f"{self.prefix}reg:tags:{repo}"

    def _meta_key(self, repo: str) -> str:
        return f"{self.prefix}reg:meta:{repo}"

    def _digest_key(self, digest: str) -> str:
        return f"{self.prefix}reg:digest:{digest}"

    def _lease_key(self, repo: str) -> str:
        return f"{self.prefix}reg:lease:{repo}"

    # --- tags ------------------------------------------------------------------------------

    def get_tags(self, repo: str) -> dict[str, str | None]:
        """Tag -> digest (``None`` where the digest was never fetched); empty if not cached."""
        packed = cast(bytes | None, self.client.get(self._tags_key(repo)))
        return unpack_tags(packed) if packed else {}

    def put_tags(self, repo: str, tags: Mapping[str, str | None]) -> bool:
        """Replace the repository's whole map atomically; return whether it changed."""
        packed = pack_tags(tags)
        keys = [self._tags_key(repo), self._meta_key(repo)]
        changed = self._put_tags(keys=keys, args=[packed, len(tags), self._retention_ms])
        return bool(changed)

    # --- digest records --------------------------------------------------------------------

    def get_image(self, digest: str) -> ImageInfo | None:
        return self.images([digest]).get(digest)

    def put_image(self, digest: str, info: ImageInfo) -> bool:
        """Store what a digest's config says, unless already stored; return whether written."""
        written = self.client.set(
            self._digest_key(digest), _encode_image(info), nx=True, px=int(self._retention_ms)
        )
        return bool(written)

    def images(self, digests: Iterable[str]) -> dict[str, ImageInfo]:
        """The stored records of ``digests`` (missing ones left out), in one round trip.

        Reading a record restarts its retention, so the digests of current tags stay cached.
        """
        wanted = list(dict.fromkeys(digests))
        pipe = self.client.pipeline(transaction=False)
        for digest in wanted:
            pipe.getex(self._digest_key(digest), px=int(self._retention_ms))
        found: dict[str, ImageInfo] = {}
        for digest, raw in zip(wanted, pipe.execute(), strict=True):
            if raw is not None:
                found[digest] = _decode_image(cast(bytes, raw))
        return found

    # --- scan schedule ---------------------------------------------------------------------

    def make_due(self, repo: str) -> bool:
        """Make a known repository due for a scan now (a registry said it changed); return
        whether the cache knows it. An unknown repository is left alone: no pipeline uses it,
        or its first scan is pending anyway."""
        pipe = self.client.pipeline(transaction=True)
        pipe.exists(self._meta_key(repo))
        pipe.hdel(self._meta_key(repo), "next_due")
        exists, _ = pipe.execute()
        return bool(exists)

    def meta(self, repo: str) -> RepoMeta | None:
        raw = cast(dict[bytes, bytes], self.client.hgetall(self._meta_key(repo)))
        if not raw:
            return None
        values = {key.decode(): value.decode() for key, value in raw.items()}

        def number(name: str) -> float | None:
            return float(values[name]) if name in values else None

        return RepoMeta(
            interval=float(values.get("interval", self.policy.initial)),
            next_due=number("next_due"),
            scanned_at=number("scanned_at"),
            dispatched_at=number("dispatched_at"),
            tags=int(values["tags"]) if "tags" in values else None,
            error=values.get("error"),
            error_at=number("error_at"),
            failures=int(values.get("failures", 0)),
        )

    def record_scan(
        self, repo: str, *, changed: bool, now: float, error: str | None = None
    ) -> RepoMeta:
        """Schedule the next scan after a scan finished (``error`` set: it failed).

        A failed scan leaves the cached tags alone; see `RefreshPolicy` for the intervals.
        """
        policy = self.policy
        message = "" if error is None else (error or "scan failed")[:_MAX_ERROR_LENGTH]
        args = [
            repr(now), "1" if changed else "0", message, policy.initial, policy.minimum,
            policy.maximum, policy.error_retry, self._retention_ms,
        ]  # fmt: skip
        self._record_scan(keys=[self._meta_key(repo), self._tags_key(repo)], args=args)
        recorded = self.meta(repo)
        assert recorded is not None  # the script just wrote it
        return recorded

    def digests_due(self, repo: str, now: float) -> bool:
        """Whether the cached digests of the repository's tags should be checked again.

        Tags can be moved to other images (`latest`, `1.2`): their digests are re-read on their
        own, slower schedule (`DIGEST_REFRESH_*`), which adapts like the tag list's.
        """
        due = cast(bytes | None, self.client.hget(self._meta_key(repo), "digests_due"))
        return due is not None and float(due) <= now

    def meta_has_digest_schedule(self, repo: str) -> bool:
        return bool(self.client.hexists(self._meta_key(repo), "digests_due"))

    def record_digest_check(self, repo: str, *, changed: bool | None, now: float) -> None:
        """Schedule the next digest check: unchanged doubles the interval, changed halves it;
        `changed=None` (no check made yet) starts the schedule."""
        key = self._meta_key(repo)
        raw = cast(bytes | None, self.client.hget(key, "digests_interval"))
        interval = float(raw) if raw else DIGEST_REFRESH_INITIAL
        if changed is True:
            interval = max(DIGEST_REFRESH_MIN, interval / 2)
        elif changed is False:
            interval = min(DIGEST_REFRESH_MAX, interval * 2)
        self.client.hset(
            key, mapping={"digests_interval": repr(interval), "digests_due": repr(now + interval)}
        )

    def due(self, repos: Iterable[str], now: float) -> list[str]:
        """The repositories (in the given order) never scanned or whose next scan is due."""
        wanted = list(dict.fromkeys(repos))
        pipe = self.client.pipeline(transaction=False)
        for repo in wanted:
            pipe.hget(self._meta_key(repo), "next_due")
        replies = cast(list[bytes | None], pipe.execute())
        return [
            repo
            for repo, next_due in zip(wanted, replies, strict=True)
            if next_due is None or float(next_due) <= now
        ]

    def try_dispatch(self, repo: str, now: float, lease: float) -> bool:
        """Claim the right to enqueue a scan of a due repository; False if not due or taken.

        Atomically moves ``next_due`` ``lease`` seconds ahead, so every other dispatcher (other
        pipelines' ticks, other beat or scanner processes) sees the repository as not due until
        the scan records its result, or until the lease runs out if the scan was lost. Choose a
        lease longer than a scan may take (its hard time limit plus queueing).
        """
        args = [repr(now), repr(lease), self._retention_ms]
        return bool(self._try_dispatch(keys=[self._meta_key(repo)], args=args))

    def claim(self, repo: str, owner: str, ttl: float) -> bool:
        """Take the scan lease of ``repo`` for ``ttl`` seconds; False if another owner has it."""
        key = self._lease_key(repo)
        return bool(self.client.set(key, owner, nx=True, px=max(1, int(ttl * 1000))))

    def release(self, repo: str, owner: str) -> bool:
        """Give the lease back if ``owner`` still holds it; return whether it did."""
        return bool(self._release(keys=[self._lease_key(repo)], args=[owner]))


# --- encodings ---------------------------------------------------------------------------------


def pack_tags(tags: Mapping[str, str | None]) -> bytes:
    """Pack a tag -> digest map (see the module docstring); raise ValueError on a bad tag."""
    names = sorted(tags)
    table: dict[str, int] = {}
    for name in names:
        if not _TAG_RE.fullmatch(name):
            raise ValueError(f"not a valid image tag: {name!r}")
        digest = tags[name]
        if digest is not None and digest not in table:
            table[digest] = len(table)
    width = next(w for w in (1, 2, 4) if len(table) < (1 << (8 * w)) - 1)
    missing = (1 << (8 * width)) - 1
    indexes = [missing if tags[name] is None else table[cast(str, tags[name])] for name in names]
    return b"".join(
        [
            _HEADER.pack(_VERSION, width, len(table), len(names)),
            *(_pack_digest(digest) for digest in table),
            struct.pack(f">{len(names)}{_INDEX_FORMATS[width]}", *indexes),
            "\n".join(names).encode("ascii"),
        ]
    )


def unpack_tags(packed: bytes) -> dict[str, str | None]:
    version, width, digest_count, tag_count = _HEADER.unpack_from(packed)
    if version != _VERSION:
        raise ValueError(f"unknown tag cache format version {version}")
    view = memoryview(packed)
    offset = _HEADER.size
    table: list[str] = []
    for _ in range(digest_count):
        digest, offset = _unpack_digest(view, offset)
        table.append(digest)
    index_format = f">{tag_count}{_INDEX_FORMATS[width]}"
    indexes = struct.unpack_from(index_format, view, offset)
    offset += struct.calcsize(index_format)
    if tag_count == 0:
        return {}
    names = bytes(view[offset:]).decode("ascii").split("\n")
    missing = (1 << (8 * width)) - 1
    return {
        name: None if index == missing else table[index]
        for name, index in zip(names, indexes, strict=True)
    }


def _pack_digest(digest: str) -> bytes:
    sha256 = _SHA256_RE.fullmatch(digest)
    if sha256:
        return bytes([_SHA256]) + bytes.fromhex(sha256.group(1))
    encoded = digest.encode("ascii")
    if not _DIGEST_RE.fullmatch(digest) or len(encoded) > 255:
        raise ValueError(f"not a valid digest: {digest!r}")
    return bytes([_OTHER, len(encoded)]) + encoded


def _unpack_digest(view: memoryview, offset: int) -> tuple[str, int]:
    if view[offset] == _SHA256:
        return "sha256:" + view[offset + 1 : offset + 33].hex(), offset + 33
    length = view[offset + 1]
    start = offset + 2
    return bytes(view[start : start + length]).decode("ascii"), start + length


def _encode_image(info: ImageInfo) -> bytes:
    record: dict[str, Any] = {}
    if info.created is not None:
        if info.created.tzinfo is None:
            raise ValueError("ImageInfo.created must be timezone-aware")
        record["c"] = round(info.created.timestamp() * 1000)
    if info.labels:
        record["l"] = dict(info.labels)
    return json.dumps(record, separators=(",", ":"), ensure_ascii=False).encode()


def _decode_image(raw: bytes) -> ImageInfo:
    record = json.loads(raw)
    created = record.get("c")
    return ImageInfo(
        created=None if created is None else datetime.fromtimestamp(created / 1000, UTC),
        labels=record.get("l", {}),
    )
