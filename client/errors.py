"""What can go wrong between the client and the server, as exceptions a script can catch."""

from __future__ import annotations

from typing import Any


class ClientError(Exception):
    """Base of every error the client raises."""


class ApiError(ClientError):
    """The server answered 4xx or 5xx: its error JSON, taken apart.

    ``details`` are the API's ``[{"loc": "hyperparameters.learning_rate", "msg": ...}]``.
    """

    def __init__(
        self,
        status: int,
        code: str,
        message: str,
        details: list[dict[str, Any]] | None = None,
    ):
        self.status, self.code, self.message = status, code, message
        self.details = details or []
        super().__init__(self.describe())

    def describe(self) -> str:
        """One line per problem: the message, then each field path and what is wrong there
        (a detail that only repeats the message is left out)."""
        lines = [f"{self.status} {self.code}: {self.message}"]
        for detail in self.details:
            loc, msg = detail.get("loc"), detail.get("msg")
            if msg == self.message:
                continue
            if loc or msg:
                lines.append(f"  {loc or '(body)'}: {msg}")
        return "\n".join(lines)


class Unreachable(ClientError):
    """No answer from the server: refused, timed out, name not found, TLS failed."""

    def __init__(self, url: str, reason: str):
        self.url, self.reason = url, reason
        super().__init__(f"cannot reach the sweeplab server at {url}: {reason}")


class BadInput(ClientError):
    """What the user gave cannot be sent: a file that cannot be read or parsed."""


class SpecFileError(BadInput):
    """A spec file that is not a job or a sweep (bad JSON or YAML, or the wrong shape)."""
