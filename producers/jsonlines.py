"""JSON lines in any supported shape → UsageEvents, with each bad line kept as a BadLine."""

from __future__ import annotations

import json
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from producers.adapters import to_event
from producers.errors import AdapterError
from schemas.event import UsageEvent


@dataclass(frozen=True)
class BadLine:
    """A line that did not become an event: its number (from 1), the field and the rule."""

    lineno: int
    field: str
    rule: str
    problems: tuple[tuple[str, str], ...] = ()

    def __str__(self) -> str:
        problems = self.problems or ((self.field, self.rule),)
        return f"line {self.lineno}: " + "; ".join(f"{f}: {r}" for f, r in problems)


def parse_line(
    line: str, lineno: int, *, format: str = "auto", **defaults: Any
) -> UsageEvent | BadLine:
    """One JSON line → its event, or the BadLine that says why not."""
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        return BadLine(lineno, "(line)", f"not JSON: {exc.msg} at column {exc.colno}")
    try:
        return to_event(obj, format=format, **defaults)
    except AdapterError as exc:
        return BadLine(lineno, exc.field, exc.rule, tuple(exc.problems))


def read_events(
    lines: Iterable[str], *, format: str = "auto", **defaults: Any
) -> Iterator[UsageEvent | BadLine]:
    """Every non-blank line as an event or a BadLine, in order; bad lines never stop the rest."""
    for lineno, line in enumerate(lines, start=1):
        if line.strip():
            yield parse_line(line, lineno, format=format, **defaults)
