"""Release planning: which container of which workload moves to which image, and why not.

One planner serves `gitopsctl release` and automation (a release of every automated workload to
the newest tags their filters allow), so both decide alike. Outcomes follow fluxctl's
`WORKLOAD STATUS UPDATES` table: `success` (with updates), `skipped` (locked, up to date, image
not used, tag outside the filter), `ignored` (excluded, not named, `fluxcd.io/ignore`), `failed`
(a named workload that does not exist).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from datetime import datetime
from typing import Any

from gitops_pipeline.errors import ManifestError
from gitops_pipeline.manifests.edit import parse_workload
from gitops_pipeline.manifests.workloads import container_images, workload_annotations
from gitops_pipeline.policy.annotations import PREFIXES, read_policy
from gitops_pipeline.policy.update import choose_tag
from gitops_pipeline.registry.cache import TagCache
from gitops_pipeline.registry.reference import ImageRef, InvalidReference, parse_image

Tags = Callable[[str], Mapping[str, datetime | None]]
"""A repository's known tags with their images' created times (None when unknown)."""


class ReleaseError(ValueError):
    """A release request that cannot be planned (said before anything is done)."""


@dataclass(frozen=True)
class ReleaseSpec:
    workloads: tuple[str, ...] = ()
    all_workloads: bool = False
    image: str | None = None
    """`repo:tag` to release; None releases every image to the newest its filter allows."""
    exclude: tuple[str, ...] = ()
    force: bool = False
    """Release locked workloads (and tags outside their filters) when named explicitly."""
    automated_only: bool = False
    """Automation's release: automated workloads only; the others are left out of the plan."""

    def check(self) -> None:
        """Raise ReleaseError for a request that names no workloads or a malformed one."""
        if bool(self.workloads) == self.all_workloads:
            raise ReleaseError("name workloads with --workload, or release --all (not both)")
        for workload in (*self.workloads, *self.exclude):
            try:
                parse_workload(workload)
            except ManifestError as exc:
                raise ReleaseError(str(exc)) from None
        if self.image is not None:
            try:
                ref = parse_image(self.image)
            except InvalidReference as exc:
                raise ReleaseError(f"--update-image {self.image!r}: {exc}") from None
            if ref.digest is not None or ":" not in self.image.rsplit("/", 1)[-1]:
                raise ReleaseError(f"--update-image {self.image!r} must name a tag")


@dataclass(frozen=True)
class ContainerUpdate:
    container: str
    current: str
    target: str


@dataclass
class WorkloadResult:
    workload: str
    status: str
    error: str = ""
    updates: list[ContainerUpdate] = field(default_factory=list)


@dataclass
class ReleasePlan:
    results: list[WorkloadResult] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)

    @property
    def updates(self) -> list[tuple[str, ContainerUpdate]]:
        """(workload, update) for every container the plan changes."""
        return [(r.workload, u) for r in self.results if r.status == "success" for u in r.updates]

    def message(self) -> str:
        """The commit message: one `Release <image>` line per image."""
        images = sorted({update.target for _, update in self.updates})
        return "\n".join(f"Release {image}" for image in images)

    def as_json(self) -> dict[str, Any]:
        return {"results": [asdict(r) for r in self.results], "warnings": self.warnings}


def workload_key(ref: str) -> str:
    """A workload ref compared as fluxctl does: kinds case-insensitively."""
    try:
        parsed = parse_workload(ref)
    except ManifestError as exc:
        raise ReleaseError(str(exc)) from None
    return f"{parsed.namespace}:{parsed.kind.lower()}/{parsed.name}"


def cached_tags(cache: TagCache) -> Tags:
    """Tags of a repository from the scanners' tag cache."""

    def tags(repository: str) -> Mapping[str, datetime | None]:
        digests = cache.get_tags(repository)
        infos = cache.images(digest for digest in digests.values() if digest)
        return {
            tag: (infos[digest].created if digest and digest in infos else None)
            for tag, digest in digests.items()
        }

    return tags


def _ignored(annotations: Mapping[str, str]) -> bool:
    return any(str(annotations.get(p + "ignore", "")).lower() == "true" for p in PREFIXES)


def plan_release(
    objects: Sequence[dict[str, Any]], default_namespace: str, spec: ReleaseSpec, tags: Tags
) -> ReleasePlan:
    """Plan `spec` over the workloads among `objects` (the rendered set of a revision)."""
    spec.check()
    plan = ReleasePlan()
    annotations = workload_annotations(objects, default_namespace)
    containers: dict[str, list[tuple[str, str]]] = {}
    names: dict[str, str] = {}
    for item in container_images(objects, default_namespace):
        key = workload_key(item.workload)
        names[key] = item.workload
        containers.setdefault(key, []).append((item.container, item.image))
    named = {workload_key(w): w for w in spec.workloads}
    excluded = {workload_key(w) for w in spec.exclude}
    target = parse_image(spec.image) if spec.image else None
    for key in [k for k in named if k not in containers]:
        plan.results.append(WorkloadResult(named[key], "failed", "not found in the repository"))
    for key, items in containers.items():
        workload = names[key]
        if named and key not in named:
            continue
        policy = read_policy(annotations.get(workload, {}))
        if spec.automated_only and (not policy.automated or policy.locked):
            continue
        if key in excluded:
            plan.results.append(WorkloadResult(workload, "ignored", "excluded"))
            continue
        if _ignored(annotations.get(workload, {})):
            plan.results.append(WorkloadResult(workload, "ignored", "fluxcd.io/ignore is set"))
            continue
        forced = spec.force and key in named
        if policy.locked and not forced:
            who = f" by {policy.locked_user}" if policy.locked_user else ""
            why = f": {policy.locked_msg}" if policy.locked_msg else ""
            plan.results.append(WorkloadResult(workload, "skipped", f"locked{who}{why}"))
            continue
        plan.warnings += [f"{workload}: {error}" for error in policy.errors]
        result = WorkloadResult(workload, "skipped")
        used = False
        for container, image in items:
            try:
                ref = parse_image(image)
            except InvalidReference as exc:
                plan.warnings.append(f"{workload} {container}: {exc}")
                continue
            tag_filter = policy.filter_for(container)
            if target is not None:
                if ref.name != target.name:
                    continue
                used = True
                new_tag = target.tag
                if new_tag != ref.tag and not tag_filter.matches(new_tag or "") and not forced:
                    result.error = f"tag {new_tag} does not match filter {tag_filter}"
                    continue
            else:
                used = True
                choice = choose_tag(tag_filter, ref.tag, tags(ref.name))
                if choice.warning:
                    plan.warnings.append(f"{workload} {container}: {choice.warning}")
                new_tag = choice.tag
            if new_tag is not None and new_tag != ref.tag:
                result.updates.append(ContainerUpdate(container, image, _retag(ref, new_tag)))
        if result.updates:
            result.status, result.error = "success", ""
        elif not result.error:
            result.error = "image up to date" if used else "does not use the image"
        if result.updates or named or used:
            plan.results.append(result)
    return plan


def _retag(ref: ImageRef, tag: str) -> str:
    return str(ref.with_tag(tag))
