"""JSON lines in any supported shape → UsageEvents, with each bad line kept as a BadLine."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any

from producers.adapters import to_event
from producers.errors import AdapterError
from schemas.event import UsageEvent

# `meterline produce` reads files and stdin with errors="surrogateescape": a byte that is not
# UTF-8 arrives as one of these, so its line alone is reported instead of ending the run.
_UNDECODABLE = re.compile("[\udc80-\udcff]")


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
    if not line.isascii() and (bad := _UNDECODABLE.search(line)) is not None:
        return BadLine(lineno, "(line)", f"not UTF-8 text (a byte at column {bad.start() + 1})")
    try:
        obj = json.loads(line)
    except json.JSONDecodeError as exc:
        return BadLine(lineno, "(line)", f"not JSON: {exc.msg} at column {exc.colno}")
    except RecursionError:
        return BadLine(lineno, "(line)", "not JSON this reader can hold: nested too deeply")
    except ValueError:  # json.loads' only other refusal: Python's int conversion limit
        return BadLine(lineno, "(line)", "holds an integer of more than 4300 digits")
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
