"""Exit codes scripts can branch on (as ``gh`` and ``kubectl`` do).

- 0: done, and it succeeded (a job ``succeeded``; a sweep ended with a succeeded trial)
- 1: the job or sweep ended otherwise (failed, diverged, cancelled, ...), with --wait/watch
- 2: bad usage, a spec file that is not a job or a sweep, or a 4xx from the API
- 3: the server is unreachable (no answer, or 5xx: the API or what it needs is down)
"""

from __future__ import annotations

from typing import Any

from client.api import is_final, kind_of
from client.errors import ApiError, BadInput, Unreachable

OK, ENDED_BADLY, USAGE, UNREACHABLE = 0, 1, 2, 3


def exit_code_for(error: BaseException) -> int:
    """The exit code of an error the client raised."""
    if isinstance(error, Unreachable):
        return UNREACHABLE
    if isinstance(error, ApiError):
        return USAGE if error.status < 500 else UNREACHABLE
    if isinstance(error, BadInput):
        return USAGE
    return ENDED_BADLY


def outcome_code(resource: dict[str, Any]) -> int:
    """0 for a job that succeeded or a sweep that ended with a succeeded trial; 1 for
    anything else that ended (or is still going). A sweep's ``best_trial`` is not
    enough: with no trial succeeded it names the best of the others (a cancelled or
    pruned one)."""
    if not is_final(resource):
        return ENDED_BADLY
    if kind_of(resource) == "job":
        return OK if resource.get("status") == "succeeded" else ENDED_BADLY
    succeeded = (resource.get("counts") or {}).get("succeeded") or 0
    if resource.get("status") == "done" and succeeded:
        return OK
    return ENDED_BADLY
