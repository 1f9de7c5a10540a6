"""Shared bits for subcommands: the console and a clean exit on expected errors."""

from __future__ import annotations

from typing import NoReturn

import typer
from rich.console import Console

console = Console(stderr=True)
# Results go to stdout unwrapped, so a pipe or a script reads whole lines.
out = Console(soft_wrap=True)


def fail(message: str, code: int = 1) -> NoReturn:
    """Print an error the user can act on and exit non-zero."""
    console.print(f"[bold red]error:[/] {message}")
    raise typer.Exit(code)
