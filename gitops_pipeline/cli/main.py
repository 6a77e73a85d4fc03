"""gitopsctl: the command group, its global options and the command modules it gathers.

Exit codes: 0 ok, 1 operation failed, 2 usage. A command module defines its commands as
plain `click.command`s using `cli.client`, and lists them in `COMMANDS`; this module adds
them to the group.
"""

from __future__ import annotations

import click
from click.shell_completion import get_completion_class

from gitops_pipeline.cli import install, pipelines, workloads
from gitops_pipeline.cli.client import Api

PROG_NAME = "gitopsctl"
COMPLETE_VAR = "_GITOPSCTL_COMPLETE"


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


@cli.command()
@click.argument("shell", type=click.Choice(["bash", "zsh", "fish"]))
def completion(shell: str) -> None:
    """Print the shell completion script, e.g. `source <(gitopsctl completion bash)`."""
    complete = get_completion_class(shell)
    assert complete is not None  # click ships all three
    click.echo(complete(cli, {}, PROG_NAME, COMPLETE_VAR).source())


for module in (pipelines, workloads, install):
    for command in module.COMMANDS:
        cli.add_command(command)


def main() -> None:
    cli(prog_name=PROG_NAME)
