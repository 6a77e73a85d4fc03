"""Workload verbs, as fluxctl spells them: list-workloads, list-images, automate, deautomate,
lock, unlock, policy, release.

Write verbs queue a job, wait until it has pushed its commit (or failed), print fluxctl's
`WORKLOAD STATUS UPDATES` table and `Commit pushed: <sha7>`; with `--watch` they also wait for
the sync that applies it (`Commit applied: <sha7>`).
"""

from __future__ import annotations

import getpass
from datetime import datetime
from typing import Any

import click
from rich.table import Table

from gitops_pipeline.cli.client import (
    Api,
    console,
    echo_json,
    fail,
    output_option,
    pipeline_option,
    short,
    spinner,
)

JOB_TIMEOUT = 300.0
"""Seconds a write verb waits for its job (or, with --watch, for the sync) before giving up."""
IMAGES_SHOWN = 10

workload_option = click.option(
    "--workload", "-w", required=True, help="workload as namespace:kind/name"
)
watch_option = click.option("--watch", is_flag=True, help="wait until the commit is applied")


def _login_name() -> str:
    """The login name, or "" where there is none (no USER/LOGNAME and no passwd entry)."""
    try:
        return getpass.getuser()
    except (KeyError, OSError):
        return ""


user_option = click.option(
    "--user", default=_login_name, show_default="the login name", help="who locks"
)


def _policy(workload: dict[str, Any]) -> str:
    words = []
    if workload["automated"]:
        words.append("automated")
    if workload["locked"]:
        words.append("locked")
    words += [
        f"tag.{c['name']}: {c['filter']}" for c in workload["containers"] if c["filter"] != "glob:*"
    ]
    return ", ".join(words)


@click.command("list-workloads")
@pipeline_option
@click.option("--namespace", "-n", help="only workloads in this namespace")
@click.option("--all-namespaces", "-a", is_flag=True, help="every namespace (the default)")
@click.option("--container", "-c", help="only workloads with this container")
@click.option("--no-headers", is_flag=True, help="omit the header line")
@output_option
@click.pass_obj
def list_workloads(
    api: Api,
    pipeline: str,
    namespace: str | None,
    all_namespaces: bool,
    container: str | None,
    no_headers: bool,
    output: str,
) -> None:
    """List the workloads of the last applied revision."""
    rows = api.get(
        f"/api/v1/pipelines/{pipeline}/workloads",
        namespace=None if all_namespaces else namespace,
        container=container,
    )
    if output == "json":
        echo_json(rows)
        return
    table = Table(
        "WORKLOAD", "CONTAINER", "IMAGE", "RELEASE", "POLICY", box=None, show_header=not no_headers
    )
    for workload in rows:
        for index, item in enumerate(workload["containers"]):
            first = index == 0
            table.add_row(
                workload["id"] if first else "",
                item["name"],
                item["image"],
                workload["sync"] if first else "",
                _policy(workload) if first else "",
            )
    console.print(table)


def _created(value: str | None) -> str:
    if not value:
        return ""
    return datetime.fromisoformat(value).strftime("%d %b %y %H:%M %Z").strip()


@click.command("list-images")
@pipeline_option
@click.option("--workload", "-w", help="only this workload (namespace:kind/name)")
@click.option("--namespace", "-n", help="only workloads in this namespace")
@click.option("--limit", "-l", default=IMAGES_SHOWN, show_default=True, help="tags per image")
@output_option
@click.pass_obj
def list_images(
    api: Api,
    pipeline: str,
    workload: str | None,
    namespace: str | None,
    limit: int,
    output: str,
) -> None:
    """List each container's image and the tags its filter allows, newest first."""
    rows = api.get(
        f"/api/v1/pipelines/{pipeline}/images",
        workload=workload,
        namespace=namespace,
        limit=limit if limit > 0 else None,
    )
    if output == "json":
        echo_json(rows)
        return
    table = Table("WORKLOAD", "CONTAINER", "IMAGE", "CREATED", box=None)
    for row in rows:
        name, _, _ = row["image"].rpartition(":")
        table.add_row(row["workload"], row["container"], name or row["image"], "")
        for tag in row["tags"]:
            marker = "'-> " if tag["running"] else "    "
            table.add_row("", "", f"{marker}{tag['tag']}", _created(tag["created"]))
        if not row["tags"]:
            table.add_row("", "", f"    {row['image']} (no tags cached yet)", "")
    console.print(table)


def _run_job(api: Api, pipeline: str, kind: str, body: dict[str, Any], watch: bool) -> None:
    """Queue the job, wait for it, print its outcome; exit 1 when it or a workload failed."""
    job_id = api.post(f"/api/v1/pipelines/{pipeline}/{kind}", body)["job"]
    path = f"/api/v1/jobs/{job_id}"
    with spinner(f"Waiting for job {job_id[:8]}"):
        job = api.poll(
            path,
            lambda j: j if j["status"] in ("succeeded", "failed") else None,
            timeout=JOB_TIMEOUT,
        )
    if job is None:
        fail(f"job {job_id} did not finish within {JOB_TIMEOUT:g}s (gitopsctl job status later)")
    results = (job.get("result") or {}).get("results", [])
    if results:
        table = Table("WORKLOAD", "STATUS", "UPDATES", box=None)
        for result in results:
            updates = [
                f"{u['container']}: {u['current']} -> {u['target']}" if isinstance(u, dict) else u
                for u in result["updates"]
            ]
            detail = ", ".join(updates) or result["error"]
            table.add_row(result["workload"], result["status"], detail)
        console.print(table)
    for warning in (job.get("result") or {}).get("warnings", []):
        click.echo(f"Warning: {warning}", err=True)
    if job["status"] == "failed":
        fail(job["error"])
    if (job.get("result") or {}).get("dry_run"):
        click.echo("Dry run: nothing committed")
    elif job["sha"]:
        click.echo(f"Commit pushed: {short(job['sha'])}")
        if watch:
            with spinner(f"Waiting for commit {short(job['sha'])} to be applied"):
                applied = api.poll(
                    path, lambda j: j if j["sync"] == "applied" else None, timeout=JOB_TIMEOUT
                )
            if applied is None:
                fail(
                    f"commit {short(job['sha'])} was not applied within {JOB_TIMEOUT:g}s "
                    f"(see gitopsctl status -p {pipeline})"
                )
            click.echo(f"Commit applied: {short(applied['applied_revision'])}")
    else:
        click.echo("Nothing to commit: already as asked")
    if any(r["status"] == "failed" for r in results):
        raise SystemExit(1)


def _policy_command(name: str, help_text: str, **change: bool) -> click.Command:
    """automate / deautomate / unlock: one policy change to one workload."""

    @click.command(name, help=help_text)
    @pipeline_option
    @workload_option
    @watch_option
    @click.pass_obj
    def command(api: Api, pipeline: str, workload: str, watch: bool) -> None:
        _run_job(api, pipeline, "policy", {"workloads": [workload], **change}, watch)

    return command


automate = _policy_command("automate", "Turn on automation for a workload.", automate=True)
deautomate = _policy_command("deautomate", "Turn off automation for a workload.", automate=False)
unlock = _policy_command("unlock", "Unlock a workload, so it can be released again.", lock=False)


@click.command()
@pipeline_option
@workload_option
@click.option("--message", "-m", default="", help="why it is locked")
@user_option
@watch_option
@click.pass_obj
def lock(api: Api, pipeline: str, workload: str, message: str, user: str, watch: bool) -> None:
    """Lock a workload: automation and releases leave it alone."""
    body = {"workloads": [workload], "lock": True, "message": message, "user": user}
    _run_job(api, pipeline, "policy", body, watch)


def _tag_pairs(values: tuple[str, ...]) -> dict[str, str]:
    pairs = {}
    for value in values:
        container, sep, pattern = value.partition("=")
        if not sep or not container:
            raise click.BadParameter(f"{value!r} is not container=filter", param_hint="--tag")
        pairs[container] = pattern
    return pairs


@click.command()
@pipeline_option
@workload_option
@click.option("--tag-all", help="tag filter for every container (e.g. semver:~1.2)")
@click.option("--tag", "tags", multiple=True, help="container=filter (repeatable)")
@click.option("--automate/--deautomate", default=None, help="turn automation on or off")
@click.option("--lock/--unlock", default=None, help="lock or unlock")
@click.option("--message", "-m", default="", help="why it is locked")
@user_option
@watch_option
@click.pass_obj
def policy(
    api: Api,
    pipeline: str,
    workload: str,
    tag_all: str | None,
    tags: tuple[str, ...],
    automate: bool | None,
    lock: bool | None,
    message: str,
    user: str,
    watch: bool,
) -> None:
    """Change a workload's policies: tag filters, automation, lock."""
    body = {
        "workloads": [workload],
        "tag_all": tag_all,
        "tags": _tag_pairs(tags),
        "automate": automate,
        "lock": lock,
        "message": message,
        "user": user,
    }
    _run_job(api, pipeline, "policy", body, watch)


@click.command()
@pipeline_option
@click.option("--workload", "-w", "workloads", multiple=True, help="workload (repeatable)")
@click.option("--all", "all_workloads", is_flag=True, help="every workload")
@click.option("--update-image", "-i", "image", help="image:tag to release")
@click.option("--update-all-images", is_flag=True, help="every image to the newest allowed tag")
@click.option("--exclude", multiple=True, help="workload to leave out (repeatable)")
@click.option("--dry-run", is_flag=True, help="show the plan, commit nothing")
@click.option("--force", is_flag=True, help="release named locked workloads, ignore filters")
@watch_option
@click.pass_obj
def release(
    api: Api,
    pipeline: str,
    workloads: tuple[str, ...],
    all_workloads: bool,
    image: str | None,
    update_all_images: bool,
    exclude: tuple[str, ...],
    dry_run: bool,
    force: bool,
    watch: bool,
) -> None:
    """Release new images to workloads, as one commit."""
    if bool(workloads) == all_workloads:
        raise click.UsageError("give --workload (repeatable) or --all")
    if bool(image) == update_all_images:
        raise click.UsageError("give --update-image or --update-all-images")
    body = {
        "workloads": list(workloads),
        "all": all_workloads,
        "image": image,
        "exclude": list(exclude),
        "force": force,
        "dry_run": dry_run,
    }
    _run_job(api, pipeline, "release", body, watch)


@click.command()
@click.argument("job_id")
@output_option
@click.pass_obj
def job(api: Api, job_id: str, output: str) -> None:
    """Show a job: its status, outcome, commit and whether it is applied."""
    data = api.get(f"/api/v1/jobs/{job_id}")
    if output == "json":
        echo_json(data)
        return
    for field in ("id", "pipeline", "kind", "status", "error", "sha", "sync", "applied_revision"):
        if data.get(field):
            click.echo(f"{field}: {data[field]}")


COMMANDS = [
    list_workloads,
    list_images,
    automate,
    deautomate,
    lock,
    unlock,
    policy,
    release,
    job,
]
