"""Git remote URLs reduced to one comparable form.

A webhook names the pushed repository the way its host spells it (``https://...``, ``git@...:``,
``ssh://...``), while a pipeline names it however its author wrote the config; both must land on
the same key for the push to find the pipeline.
"""

from __future__ import annotations

import re
from urllib.parse import urlsplit

# git's scp-like syntax: `[user@]host:path`, recognised only when no slash precedes the colon.
_SCP_LIKE = re.compile(r"^(?:[^@/]+@)?(?P<host>[^:/]+):(?P<path>.*)$")


def repo_key(url: str) -> str:
    """``host/path`` of a git remote, for comparing remotes, never for cloning.

    The user, the port and the scheme are dropped (a forge serves one repository over ssh and
    https on different ports), as are a trailing ``.git`` and slashes. The key is lower-cased
    whole: hosts are case-insensitive and the common forges resolve repository paths
    case-insensitively too, so a pipeline written in other case still gets its pushes. Local
    paths and ``file://`` URLs have an empty host: ``/srv/app.git`` gives ``/srv/app``.
    """
    text = url.strip()
    host, path = "", text
    if "://" in text:
        try:
            parts = urlsplit(text)
            host, path = parts.hostname or "", parts.path
        except ValueError:  # e.g. an unbalanced IPv6 bracket: compare the text as written
            host, path = "", text
    else:
        match = _SCP_LIKE.match(text)
        if match is not None:
            host, path = match["host"], match["path"]
    path = path.strip("/").removesuffix(".git").rstrip("/")
    return f"{host}/{path}".lower()
