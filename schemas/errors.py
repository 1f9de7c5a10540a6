"""The one base of meterline's domain errors: a machine code, the HTTP status it means, and a
message that says what happened and what to do (written once, where the error is raised).

The API renders every DomainError with one handler (api/errors.py); the CLI prints the message
and exits non-zero. Extra members of the problem+json answer travel in `extra` (JSON-ready).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any


class DomainError(Exception):
    """A refusal by the domain; subclasses set `code` and `status`, the message says why."""

    code: str = "domain_error"
    status: int = 400
    headers: Mapping[str, str] = {}

    def __init__(self, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.extra: dict[str, Any] = extra

    @property
    def detail(self) -> str:
        """The human-readable message."""
        return str(self.args[0]) if self.args else self.code
