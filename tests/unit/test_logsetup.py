"""Log lines carry the pipeline and task id, as text or as one JSON object per line."""

from __future__ import annotations

import json
import logging

import pytest

from gitops_pipeline.logsetup import configure_logging, current_pipeline, current_task_id


def test_text_lines_name_pipeline_and_task(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("text", "INFO")
    task, pipeline = current_task_id.set("task-42"), current_pipeline.set("sample-app")
    try:
        logging.getLogger("gitops_pipeline.test").info("applied 2 objects")
    finally:
        current_task_id.reset(task)
        current_pipeline.reset(pipeline)
    line = capsys.readouterr().err.strip()
    assert "\n" not in line
    assert line.endswith(
        "INFO pipeline=sample-app task=task-42 gitops_pipeline.test: applied 2 objects"
    )


def test_json_lines(capsys: pytest.CaptureFixture[str]) -> None:
    configure_logging("json", "INFO")
    pipeline = current_pipeline.set("web-app")
    try:
        logging.getLogger("x").warning("commit %s has no valid signature", "abc123")
    finally:
        current_pipeline.reset(pipeline)
    logging.getLogger("x").debug("not shown at INFO")
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1
    entry = json.loads(lines[0])
    assert entry["pipeline"] == "web-app"
    assert entry["task_id"] == "-"
    assert entry["level"] == "WARNING"
    assert entry["message"] == "commit abc123 has no valid signature"
