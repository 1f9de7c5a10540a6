"""The CLI prints values from outside as they are: rich markup in a path, an account id or an
error ("[/]", "[red]") is neither read as markup (a MarkupError traceback, or brackets that
vanish) nor able to lose what the command did."""

from __future__ import annotations

import asyncio
from pathlib import Path

import asyncpg

from processors.api_keys import authenticate_key
from schemas.settings import CommonSettings
from tests.integration.reconcile_helpers import cli

ACCOUNT = "acme[/]x[red]y"


async def test_a_key_for_an_account_with_markup_in_its_id_is_shown(
    test_settings: CommonSettings, db: asyncpg.Pool
) -> None:
    """Before: the key was stored, then printing "created user key … for acme[/]…" raised
    MarkupError, and the key was never shown."""
    code, output = await asyncio.to_thread(
        cli, test_settings, "admin", "create-key", "--scope", "user", "--account", ACCOUNT
    )
    assert code == 0, output
    assert "Traceback" not in output
    assert f"for {ACCOUNT}; it is shown once" in " ".join(output.split())
    key = output.split("\n", 1)[0].strip()  # stdout: the key alone
    principal = await authenticate_key(db, key, default_tier="free")
    assert principal is not None and principal.account_id == ACCOUNT


async def test_a_report_path_with_markup_is_named_as_it_is(
    test_settings: CommonSettings, tmp_path: Path
) -> None:
    report = tmp_path / "[/]no[red]dir" / "r.json"
    code, output = await asyncio.to_thread(
        cli,
        test_settings,
        "reconcile",
        "--from",
        "2026-01-01T00:00:00Z",
        "--to",
        "2026-01-02T00:00:00Z",
        "--report",
        str(report),
    )
    assert code == 2, output
    assert "Traceback" not in output and "MarkupError" not in output
    assert f"directory '{report.parent}' does not exist" in " ".join(output.split())
