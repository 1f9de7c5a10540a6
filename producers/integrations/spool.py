"""A bounded local spool: usage events that could not be published wait here, one JSON line
each, until meterline takes them.

Appends and the hand-over to a drain are serialised by an flock on ``<path>.lock``, so several
proxy processes may share one spool. A drain first renames the file to ``<path>.draining``
(new appends start a fresh file), publishes what it holds and deletes it; what fails goes back
into the spool. A process that dies mid-drain leaves ``.draining`` behind and the next drain
publishes it again — harmless, as the ledger debits each (source, event_id) once.
"""

from __future__ import annotations

import fcntl
import json
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


class SpoolFull(Exception):
    """The spool holds its maximum size: nothing more can wait without being lost."""


class Spool:
    """A JSON-lines file of events of at most `max_bytes`."""

    def __init__(self, path: Path, max_bytes: int) -> None:
        self.path = Path(path)
        self.max_bytes = max_bytes
        self.draining = self.path.with_name(self.path.name + ".draining")
        # Usage that can never become an event, kept for an operator when usage.dlq is away.
        self.rejected = self.path.with_name(self.path.name + ".rejected")
        self._lock_path = self.path.with_name(self.path.name + ".lock")

    @contextmanager
    def _locked(self) -> Iterator[None]:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with open(self._lock_path, "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def size(self) -> int:
        """Bytes waiting, in the spool and in an unfinished drain."""
        total = 0
        for p in (self.path, self.draining):
            try:
                total += p.stat().st_size
            except FileNotFoundError:
                pass
        return total

    def pending(self) -> bool:
        """Whether anything waits."""
        return self.size() > 0

    def full(self) -> bool:
        """Whether the spool is at its bound."""
        return self.size() >= self.max_bytes

    def append(self, events: list[dict[str, Any]]) -> None:
        """Write events durably (flushed and fsynced); SpoolFull when they do not fit."""
        data = "".join(json.dumps(e, separators=(",", ":")) + "\n" for e in events).encode()
        with self._locked():
            if self.size() + len(data) > self.max_bytes:
                raise SpoolFull(
                    f"usage spool {self.path} is full ({self.size()} of {self.max_bytes} bytes)"
                )
            _append_lines(self.path, data)

    def reject(self, entry: dict[str, Any]) -> None:
        """Keep one record of usage meterline cannot meter (reason, message, the data) in the
        rejected file, fsynced; SpoolFull when that file is at the bound."""
        data = (json.dumps(entry, separators=(",", ":"), default=str) + "\n").encode()
        with self._locked():
            size = self.rejected.stat().st_size if self.rejected.exists() else 0
            if size + len(data) > self.max_bytes:
                raise SpoolFull(f"rejected-usage file {self.rejected} is full ({size} bytes)")
            _append_lines(self.rejected, data)

    def take(self) -> list[Any]:
        """Start a drain: the events waiting (an unfinished drain's first), each as its JSON
        value, or as the line's text when it is not JSON (a process killed mid-append tears
        its last line: it used to fail every drain after it). Call done() after."""
        with self._locked():
            if not self.draining.exists():
                if not self.path.exists():
                    return []
                os.replace(self.path, self.draining)
            lines = self.draining.read_bytes().splitlines()
        return [_parse(line) for line in lines if line.strip()]

    def done(self, failed: list[dict[str, Any]]) -> None:
        """Finish a drain: `failed` go back to the spool, the drained file is removed."""
        with self._locked():
            if failed:
                data = "".join(json.dumps(e, separators=(",", ":")) + "\n" for e in failed)
                _append_lines(self.path, data.encode())
            self.draining.unlink(missing_ok=True)


def _append_lines(path: Path, data: bytes) -> None:
    """Append whole lines, fsynced; after a torn last line (no newline: a process killed
    mid-write) a line of their own, so the torn text does not swallow the first of them."""
    with open(path, "ab+") as f:
        if f.tell() > 0:
            f.seek(-1, os.SEEK_END)
            if f.read(1) != b"\n":
                data = b"\n" + data
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def _parse(line: bytes) -> Any:
    try:
        return json.loads(line)
    except ValueError:  # JSONDecodeError, or bytes that are not UTF-8
        return line.decode("utf-8", "replace")
