"""Who holds a job's lease, a range test's or a mirror lock: a ``host:pid`` name, and
whether that process is known to be gone."""

from __future__ import annotations

import os
import socket


def died_here(holder: str | None) -> bool:
    """Whether ``holder`` (``host:pid``) was a process of this host that no longer exists
    (killed, out of memory): what it held may be taken over at once. A process of
    another host, or one this process may not signal, is never known to be gone."""
    host, _, pid = (holder or "").rpartition(":")
    if host != socket.gethostname() or not pid.isdigit():
        return False
    try:
        os.kill(int(pid), 0)
    except ProcessLookupError:
        return True
    except PermissionError:
        return False
    return False
