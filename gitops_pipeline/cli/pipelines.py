"""Pipeline verbs: pipelines, status, events, sync, identity."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import UTC, datetime
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

FOLLOW_INTERVAL = 1.0
EVENT_PAGE = 100
FINISHED = ("synced", "synced-with-errors", "failed")


def _cell(value: Any) -> str:
    return "" if value is None else str(value)


@click.command()
@output_option
@click.pass_obj
def pipelines(api: Api, output: str) -> None:
    """List pipelines with their last sync."""
    rows = api.get("/api/v1/pipelines")
    if output == "json":
        echo_json(rows)
        return
    table = Table("PIPELINE", "STATUS", "REVISION", "APPLIED", "FAILED", box=None)
    for row in rows:
        table.add_row(
            row["name"],
            row.get("status", "never synced"),
            short(row.get("revision")),
            _cell(row.get("applied")),
            _cell(row.get("failed")),
        )
    console.print(table)


@click.command()
@pipeline_option
@click.pass_obj
def status(api: Api, pipeline: str) -> None:
    """Show a pipeline's last sync and recent events."""
    data = api.get(f"/api/v1/pipelines/{pipeline}")
    click.echo(f"pipeline: {pipeline}")
    for field in ("status", "revision", "applied", "unchanged", "failed", "error", "verify_error"):
        if data.get(field) not in (None, ""):
            click.echo(f"{field}: {data[field]}")
    for event in data.get("events", []):
        click.echo(f"  {event['kind']:<10} {event['message']}")


def _show_event(event: dict[str, Any], output: str) -> None:
    if output == "json":
        click.echo(json.dumps(event))
        return
    when = datetime.fromtimestamp(event["time"], UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    click.echo(f"{when}  {event['kind']:<10} {event['message']}")


@click.command()
@pipeline_option
@click.option("-f", "--follow", is_flag=True, help="keep printing new events (Ctrl-C stops)")
@click.option(
    "-n",
    "--count",
    type=click.IntRange(1, 1000),
    default=20,
    show_default=True,
    help="how many of the newest events to show first",
)
@output_option
@click.pass_obj
def events(api: Api, pipeline: str, follow: bool, count: int, output: str) -> None:
    """Show a pipeline's events, oldest first; `-o json` prints one JSON object a line."""
    path = f"/api/v1/pipelines/{pipeline}/events"
    shown = api.get(path, count=count)
    for event in shown:
        _show_event(event, output)
    if not follow:
        return
    cursor = shown[-1]["id"] if shown else "0-0"
    try:
        while True:
            page = api.get(path, after=cursor, count=EVENT_PAGE)
            for event in page:
                _show_event(event, output)
                cursor = event["id"]
            if len(page) < EVENT_PAGE:
                time.sleep(FOLLOW_INTERVAL)
    except KeyboardInterrupt:
        return


class _SyncRun:
    """Follows the run that answers one sync request: announces the revision it fetched and
    recognises its end in the pipeline's status.

    The answering run is the first to finish with a run id other than the one current at the
    request (a running sync is not it: the request becomes its rerun). Its revision comes from
    its `fetched` event, the first after a `start` event newer than the request.
    """

    def __init__(
        self, api: Api, pipeline: str, requested: dict[str, Any], update: Callable[[str], None]
    ) -> None:
        self._api = api
        self._events = f"/api/v1/pipelines/{pipeline}/events"
        self._previous_run = requested["previous_run"]
        self._cursor = requested["events_after"]
        self._update = update
        self._started = False
        self.revision: str | None = None

    def __call__(self, status: dict[str, Any]) -> dict[str, Any] | None:
        """The pipeline's status once the answering run finished, else None."""
        self._read_events()  # after the status, so a finished run's events are all there
        run = status.get("run") or ""
        if run and run != self._previous_run and status.get("status") in FINISHED:
            return status
        return None

    def _read_events(self) -> None:
        while True:
            page = self._api.get(self._events, after=self._cursor, count=EVENT_PAGE)
            for event in page:
                self._cursor = event["id"]
                if event["kind"] == "start":
                    self._started = True
                    self._update("Fetching")
                elif self._started and event["kind"] == "fetched" and self.revision is None:
                    self.revision = str(event["data"].get("revision", ""))
                    click.echo(f"Revision to apply: {short(self.revision)}")
                    self._update(f"Waiting for {short(self.revision)} to be applied")
            if len(page) < EVENT_PAGE:
                return


@click.command()
@pipeline_option
@click.option(
    "--wait/--no-wait",
    default=True,
    show_default=True,
    help="wait until the sync finished; --no-wait prints the job id only",
)
@click.option(
    "--timeout",
    type=click.FloatRange(min=0, min_open=True),
    default=60.0,
    show_default=True,
    help="seconds to wait for the sync to finish",
)
@click.pass_obj
def sync(api: Api, pipeline: str, wait: bool, timeout: float) -> None:
    """Fetch the pipeline's branch and apply it now, and wait until that is done.

    Exits 0 once the revision is applied (objects that failed are listed by `status`), 1 when
    the sync failed or did not finish within --timeout.
    """
    requested = api.post(f"/api/v1/pipelines/{pipeline}/sync")
    if not wait:
        click.echo(requested["job"])
        return
    click.echo(f"Synchronizing pipeline {pipeline} (job {requested['job']})")
    with spinner("Waiting for the sync to start") as update:
        run = _SyncRun(api, pipeline, requested, update)
        final = api.poll(f"/api/v1/pipelines/{pipeline}", run, timeout=timeout)
    if final is None:
        fail(
            f"no sync of {pipeline} finished within {timeout:g}s; it may still run "
            f"(gitopsctl status -p {pipeline})"
        )
    if final["status"] == "failed":
        fail(final.get("error") or "the sync failed")
    click.echo(f"Commit applied: {short(final.get('revision'))}")
    if final.get("failed"):
        click.echo(
            f"{final['failed']} objects failed to apply (gitopsctl status -p {pipeline})", err=True
        )


@click.command()
@pipeline_option
@click.option(
    "-r",
    "--regenerate",
    is_flag=True,
    help="replace the generated deploy key (admin); give the git host the new one",
)
@click.option("-l", "--fingerprint", is_flag=True, help="print the key's fingerprint instead")
@click.pass_obj
def identity(api: Api, pipeline: str, regenerate: bool, fingerprint: bool) -> None:
    """Print the SSH public key the pipeline uses for git (add it to the repository as a
    deploy key, with write access unless the pipeline is read-only)."""
    path = f"/api/v1/pipelines/{pipeline}/identity"
    data = api.post(f"{path}/regenerate") if regenerate else api.get(path)
    click.echo(data["fingerprint"] if fingerprint else data["public_key"])
    if not data["in_use"]:
        click.echo(
            f"note: pipeline {pipeline} does not reach git over ssh, so git does not use this key",
            err=True,
        )


COMMANDS = (pipelines, status, events, sync, identity)
