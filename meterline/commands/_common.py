"""Shared bits for subcommands: the console and a clean exit on expected errors."""

from __future__ import annotations

from datetime import datetime
from typing import TYPE_CHECKING, NoReturn, TypeVar

import typer
from rich.console import Console

if TYPE_CHECKING:
    from schemas.settings import CommonSettings

S = TypeVar("S", bound="CommonSettings")

console = Console(stderr=True)
# Results go to stdout unwrapped, so a pipe or a script reads whole lines.
out = Console(soft_wrap=True)


def fail(message: str, code: int = 1) -> NoReturn:
    """Print an error the user can act on and exit non-zero."""
    console.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code)


def addresses(settings: S, *, kafka: bool = False, database: bool = False) -> S:
    """The settings when they know the addresses this command needs; else exit naming them."""
    from schemas.settings import MissingAddress

    try:
        return settings.require(kafka=kafka, database=database)
    except MissingAddress as exc:
        fail(str(exc), code=2)


def bounded_time(at: datetime, flag: str) -> datetime:
    """An aware time within the bounds every timestamp input has, else exit naming the flag."""
    from schemas.bounds import check_time

    try:
        return check_time(at)
    except ValueError as exc:
        fail(f"{flag} {at.isoformat()} {exc}", code=2)
