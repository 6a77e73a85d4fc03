"""`gitopsctl install`: the deploy/kubernetes kustomize base, filled in for one repository.

Like `fluxctl install`, it needs no cluster and no API: it prints manifests to pipe into
`kubectl apply -f -`, or writes them (with their kustomization.yaml) into a directory to keep in
Git. What kustomize's `namespace:` would do is done here too (every object's namespace, the
Namespace itself, the ClusterRoleBinding's subject), plus the Redis URL's service host and the
one pipeline in the operator's config.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click
import yaml
from pydantic import ValidationError

from gitops_pipeline.cli.client import fail
from gitops_pipeline.config import Pipeline

BASE = Path(__file__).resolve().parents[2] / "deploy" / "kubernetes"
"""The kustomize base in a source checkout (and so in an editable install)."""
CONFIG_MAP = "gitops-pipeline-config"
SECRETS = (("gitops-pipeline-api", "admin-token"), ("gitops-pipeline-flower", "basic-auth"))


@dataclass(frozen=True)
class Values:
    namespace: str
    pipeline: str
    git: dict[str, Any]
    """The pipeline's `git:` section."""


class _Dumper(yaml.SafeDumper):
    """Multi-line strings (the embedded config files) as literal blocks, as written by hand."""


def _represent_str(dumper: yaml.SafeDumper, data: str) -> yaml.ScalarNode:
    style = "|" if "\n" in data else None
    return dumper.represent_scalar("tag:yaml.org,2002:str", data, style=style)


_Dumper.add_representer(str, _represent_str)


def _dump(doc: Any) -> str:
    return yaml.dump(doc, Dumper=_Dumper, sort_keys=False, default_flow_style=False)


def pipeline_name(url: str) -> str:
    """A pipeline name from the repository's name: `.../sample-app.git` -> `sample-app`."""
    last = re.split(r"[/:]", url.rstrip("/"))[-1].removesuffix(".git").lower()
    name = re.sub(r"[^a-z0-9-]+", "-", last).strip("-")[:63].strip("-")
    return name or "default"


def render(base: Path, values: Values) -> dict[str, str]:
    """Every file of the base with `values` applied, by file name (kustomization.yaml last)."""
    kustomization = yaml.safe_load((base / "kustomization.yaml").read_text())
    old = str(kustomization.get("namespace", ""))
    files = {}
    for name in kustomization["resources"]:
        docs = [doc for doc in yaml.safe_load_all((base / name).read_text()) if doc]
        files[name] = "---\n".join(_dump(_apply(doc, old, values)) for doc in docs)
    kustomization["namespace"] = values.namespace
    files["kustomization.yaml"] = _dump(kustomization)
    return files


def _apply(doc: dict[str, Any], old: str, values: Values) -> dict[str, Any]:
    meta = doc.setdefault("metadata", {})
    if doc.get("kind") == "Namespace" and meta.get("name") == old:
        meta["name"] = values.namespace
    if "namespace" in meta:
        meta["namespace"] = values.namespace
    for subject in doc.get("subjects", []):
        if subject.get("kind") == "ServiceAccount" and subject.get("namespace") == old:
            subject["namespace"] = values.namespace
    if doc.get("kind") == "ConfigMap" and meta.get("name") == CONFIG_MAP:
        data = doc["data"]
        data["gitops.yaml"] = _configure(data["gitops.yaml"], old, values)
    return doc


def _configure(text: str, old: str, values: Values) -> str:
    config = yaml.safe_load(text)
    redis_url = str(config.get("redis_url", ""))
    config["redis_url"] = redis_url.replace(f".{old}.svc", f".{values.namespace}.svc")
    config["pipelines"] = [{"name": values.pipeline, "git": values.git}]
    return _dump(config)


@click.command()
@click.option("--git-url", required=True, help="URL of the repository to sync")
@click.option("--git-branch", default="master", show_default=True)
@click.option(
    "--git-path",
    multiple=True,
    help="path in the repository to sync (repeat, or separate with commas; default: all)",
)
@click.option("--git-user", help="committer name for image updates")
@click.option("--git-email", help="committer email for image updates")
@click.option("--git-readonly", is_flag=True, help="never push to the repository")
@click.option(
    "--namespace", default="gitops-pipeline", show_default=True, help="namespace to install into"
)
@click.option(
    "--pipeline", "-p", "name", help="pipeline name (default: from the repository's name)"
)
@click.option(
    "-o",
    "--output-dir",
    type=click.Path(file_okay=False, path_type=Path),
    help="write the files (with kustomization.yaml) here instead of printing them",
)
@click.option(
    "--base",
    type=click.Path(exists=True, file_okay=False, path_type=Path),
    default=BASE,
    show_default="deploy/kubernetes of this source tree",
    help="the kustomize base to fill in",
)
def install(
    git_url: str,
    git_branch: str,
    git_path: tuple[str, ...],
    git_user: str | None,
    git_email: str | None,
    git_readonly: bool,
    namespace: str,
    name: str | None,
    output_dir: Path | None,
    base: Path,
) -> None:
    """Print the manifests that install gitops-pipeline for one repository."""
    paths = [p.strip() for entry in git_path for p in entry.split(",") if p.strip()] or ["."]
    git: dict[str, Any] = {"url": git_url, "branch": git_branch, "paths": paths}
    git.update({k: v for k, v in (("user", git_user), ("email", git_email)) if v})
    if git_readonly:
        git["readonly"] = True
    values = Values(namespace, name or pipeline_name(git_url), git)
    _check(values)
    if not (base / "kustomization.yaml").is_file():
        fail(f"{base} is not a kustomize base (no kustomization.yaml); pass --base")
    try:
        files = render(base, values)
    except OSError as exc:
        fail(f"cannot read the kustomize base {base}: {_reason(exc)}")
    if output_dir is None:
        manifests = [text for file, text in files.items() if file != "kustomization.yaml"]
        click.echo("---\n".join(manifests), nl=False)
    else:
        try:
            output_dir.mkdir(parents=True, exist_ok=True)
            for file, text in files.items():
                (output_dir / file).write_text(text)
        except OSError as exc:
            fail(f"cannot write the manifests into {output_dir}: {_reason(exc)}")
    secrets = ", ".join(f"{secret} (key {key})" for secret, key in SECRETS)
    click.echo(f"note: create the secrets {secrets} in namespace {namespace}", err=True)


def _reason(exc: OSError) -> str:
    """`exc` in one line: what failed and on which file, without Python's error number."""
    where = f" ({exc.filename})" if exc.filename else ""
    return f"{exc.strerror or exc}{where}"


def _check(values: Values) -> None:
    """Refuse what the operator would refuse at start, as a usage error (exit 2)."""
    if not re.fullmatch(r"[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?", values.namespace):
        raise click.BadParameter("not a valid namespace name", param_hint="--namespace")
    try:
        Pipeline.model_validate({"name": values.pipeline, "git": values.git})
    except ValidationError as exc:
        error = exc.errors()[0]
        where = ".".join(str(part) for part in error["loc"])
        raise click.UsageError(f"{where}: {error['msg'].removeprefix('Value error, ')}") from None


COMMANDS = (install,)
