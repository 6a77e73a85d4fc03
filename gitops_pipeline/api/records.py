"""Reading the fields of a pipeline's sync record (`<prefix>sync:<pipeline>`) for display.

The record is written by workers as strings; what the web process shows of it (the REST API,
the status page, `/metrics`) goes through these helpers, so a field that is corrupt or was
written by another version reads as "absent" or as a clear note, never as a server error.
"""

from __future__ import annotations

import json
import math

UNREADABLE_ERRORS = {"(sync record)": "the per-object errors are unreadable"}
"""What `object_errors` answers for an `errors` field that is not a JSON object."""


def number(text: str | None) -> float | None:
    """The finite number in `text`; None when it is absent, empty or not a finite number."""
    try:
        value = float(text) if text else None
    except ValueError:
        return None
    return value if value is not None and math.isfinite(value) else None


def object_errors(raw: str | None) -> dict[str, str]:
    """The record's `errors` field (JSON: object -> error of the last apply) as a dict.

    Empty when the field is absent or empty; `UNREADABLE_ERRORS` when it is not a JSON object.
    """
    try:
        errors = json.loads(raw) if raw else {}
    except (ValueError, RecursionError):  # not JSON, or nested deeper than the parser goes
        errors = None
    if not isinstance(errors, dict):
        return dict(UNREADABLE_ERRORS)
    return {str(ref): str(message) for ref, message in errors.items()}
