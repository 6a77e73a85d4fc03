"""The Grafana dashboard and docs/metrics.md name only metrics `/metrics` exports, and all of them.

The exported names come from the collectors' `describe()`, which needs no Redis.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import redis

from gitops_pipeline.api.metrics import collectors
from gitops_pipeline.config import parse_settings

ROOT = Path(__file__).parents[2]
DASHBOARD = ROOT / "deploy" / "grafana-dashboard.json"
DOCS = ROOT / "docs" / "metrics.md"

SETTINGS = """\
pipelines:
  - name: sample-app
    git:
      url: file:///srv/git/sample-app.git
"""

# PromQL words that are neither metrics nor followed by "(".
_KEYWORDS = {"and", "or", "unless", "bool", "offset", "group_left", "group_right", "inf", "nan"}
_GROUPING = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENTIFIER = re.compile(r"(?<![\w:.])([a-zA-Z_:][a-zA-Z0-9_:]*)(\s*\()?")


def exported_names() -> set[str]:
    """The series names Prometheus sees: a counter family `x` is exported as `x_total`."""
    never_contacted = redis.Redis.from_url("redis://unused.invalid:1")
    settings = parse_settings(SETTINGS, "test", {})
    names: set[str] = set()
    for collector in collectors(settings, never_contacted):
        for family in collector.describe():
            names.add(f"{family.name}_total" if family.type == "counter" else family.name)
    return names


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression reads (Grafana variables removed first)."""
    text = re.sub(r'"(?:[^"\\]|\\.)*"', '""', expr)
    text = re.sub(r"\$\{?\w+\}?", "1", text)
    text = re.sub(r"\{[^}]*\}", "", text)
    text = re.sub(r"\[[^\]]*\]", "", text)
    text = _GROUPING.sub("", text)
    return {
        name
        for name, call in _IDENTIFIER.findall(text)
        if not call and name.lower() not in _KEYWORDS
    }


def _panels(panels: list[dict[str, Any]]) -> Iterator[dict[str, Any]]:
    for panel in panels:
        yield panel
        yield from _panels(panel.get("panels", []))


@pytest.fixture(scope="module")
def dashboard() -> dict[str, Any]:
    return dict(json.loads(DASHBOARD.read_text()))


def expressions(dashboard: dict[str, Any]) -> list[str]:
    return [
        target["expr"]
        for panel in _panels(dashboard["panels"])
        for target in panel.get("targets", [])
    ]


def test_the_parser_finds_metrics_and_skips_functions_labels_and_variables() -> None:
    expr = (
        'sum by (host) (rate(gitops_a_total{result="hit",x=~"$v"}[$__rate_interval])) '
        "/ on (host) group_left sum without (kind) (gitops_b) > bool 0 and time() - c_d"
    )
    assert metric_names(expr) == {"gitops_a_total", "gitops_b", "c_d"}


def test_every_expression_reads_only_exported_metrics(dashboard: dict[str, Any]) -> None:
    exported = exported_names()
    exprs = expressions(dashboard)
    assert exprs
    for expr in exprs:
        used = metric_names(expr)
        assert used, f"no metric in {expr!r}"
        assert used <= exported, f"{expr!r} reads {sorted(used - exported)}, not exported"
    for variable in dashboard["templating"]["list"]:
        query = variable["query"]
        query = query["query"] if isinstance(query, dict) else query
        match = re.fullmatch(r"label_values\((\w+),\s*\w+\)", query)
        assert match and match.group(1) in exported, query


def test_every_exported_metric_has_a_panel(dashboard: dict[str, Any]) -> None:
    used = set().union(*(metric_names(expr) for expr in expressions(dashboard)))
    assert exported_names() - used == set()


def test_panels_use_the_datasource_input(dashboard: dict[str, Any]) -> None:
    assert [i["name"] for i in dashboard["__inputs"]] == ["DS_PROMETHEUS"]
    for panel in _panels(dashboard["panels"]):
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]
        for target in panel["targets"]:
            assert target["datasource"]["uid"] == "${DS_PROMETHEUS}", panel["title"]


def test_every_exported_metric_is_documented() -> None:
    documented = set(re.findall(r"^\| `(gitops_\w+)`", DOCS.read_text(), re.MULTILINE))
    assert documented == exported_names()
