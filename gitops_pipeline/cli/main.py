"""gitopsctl verbs. Exit codes: 0 ok, 1 operation failed, 2 usage."""

from __future__ import annotations

import json
import sys
from typing import Any, NoReturn

import click
import httpx
from rich.console import Console
from rich.table import Table

TIMEOUT = 10.0
console = Console()


class Api:
    def __init__(self, url: str, token: str | None) -> None:
        headers = {"Authorization": f"Bearer {token}"} if token else {}
        self._client = httpx.Client(base_url=url.rstrip("/"), headers=headers, timeout=TIMEOUT)
        self._url = url

    def call(self, method: str, path: str) -> Any:
        try:
            response = self._client.request(method, path)
        except httpx.HTTPError as exc:
            fail(f"cannot reach the API at {self._url}: {exc}")
        if response.status_code == 401:
            fail("the API refused the token (set --token or GITOPS_TOKEN)")
        if response.status_code >= 400:
            try:
                detail = response.json().get("detail", response.text)
            except ValueError:
                detail = response.text
            fail(f"{detail}")
        return response.json()


def fail(message: str) -> NoReturn:
    click.echo(f"Error: {message}", err=True)
    sys.exit(1)


@click.group()
@click.option(
    "--url",
    envvar="GITOPS_URL",
    default="http://127.0.0.1:8080",
    show_default=True,
    help="REST API base URL (env GITOPS_URL)",
)
@click.option("--token", envvar="GITOPS_TOKEN", help="API bearer token (env GITOPS_TOKEN)")
@click.pass_context
def cli(ctx: click.Context, url: str, token: str | None) -> None:
    """Operate gitops-pipeline: pipelines, syncs and their status."""
    ctx.obj = Api(url, token)


pipeline_option = click.option(
    "--pipeline",
    "-p",
    envvar="GITOPS_PIPELINE",
    required=True,
    help="pipeline name (env GITOPS_PIPELINE)",
)


@cli.command()
@click.option("-o", "--output", type=click.Choice(["tab", "json"]), default="tab")
@click.pass_obj
def pipelines(api: Api, output: str) -> None:
    """List pipelines with their last sync."""
    rows = api.call("GET", "/api/v1/pipelines")
    if output == "json":
        click.echo(json.dumps(rows, indent=2))
        return
    table = Table("PIPELINE", "STATUS", "REVISION", "APPLIED", "FAILED", box=None)
    for row in rows:
        table.add_row(
            row["name"],
            row.get("status", "never synced"),
            row.get("revision", "")[:7],
            row.get("applied", ""),
            row.get("failed", ""),
        )
    console.print(table)


@cli.command()
@pipeline_option
@click.pass_obj
def status(api: Api, pipeline: str) -> None:
    """Show a pipeline's last sync and recent events."""
    data = api.call("GET", f"/api/v1/pipelines/{pipeline}")
    click.echo(f"pipeline: {pipeline}")
    for field in ("status", "revision", "applied", "unchanged", "failed", "error", "verify_error"):
        if data.get(field):
            click.echo(f"{field}: {data[field]}")
    for event in data.get("events", []):
        click.echo(f"  {event['kind']:<10} {event['message']}")


@cli.command()
@pipeline_option
@click.pass_obj
def sync(api: Api, pipeline: str) -> None:
    """Ask the pipeline to sync now."""
    job = api.call("POST", f"/api/v1/pipelines/{pipeline}/sync")
    click.echo(f"Sync queued: job {job['job']}")


def main() -> None:
    cli(prog_name="gitopsctl")
