"""`meterline admin rotate-keys`: re-encrypt every stored BYOK key under the first Fernet key."""

from __future__ import annotations

import typer

from meterline.commands._common import addresses, console, fail, run_work


def rotate_keys(
    batch_size: int = typer.Option(500, "--batch-size", min=1, help="Rows per transaction"),
) -> None:
    """Re-encrypt every stored provider key under the first of METERLINE_ENCRYPTION_KEYS.

    Rotation: put the new key first in METERLINE_ENCRYPTION_KEYS (keep the old ones after
    it), restart the API, run this, then drop the old keys.
    """

    async def run() -> int:
        import asyncpg
        from cryptography.fernet import InvalidToken

        from api.settings import ApiSettings
        from processors.byok import EncryptionNotConfigured, multifernet, rotate_encryption
        from schemas.settings import get_settings

        settings = addresses(get_settings(ApiSettings), database=True)
        try:
            fernet = multifernet(settings.encryption_keys)
        except EncryptionNotConfigured as exc:
            fail(str(exc))
        conn = await asyncpg.connect(settings.database_url)
        try:
            return await rotate_encryption(conn, fernet, batch_size=batch_size)
        except InvalidToken:
            fail(
                "a stored key cannot be decrypted with any key in METERLINE_ENCRYPTION_KEYS; "
                "add the key it was encrypted with (after the new one) and run again"
            )
        finally:
            await conn.close()

    count = run_work(run())
    console.print(f"re-encrypted {count} stored key(s) under the first encryption key")


def register(app: typer.Typer) -> None:
    """Add `rotate-keys` to the `admin` group (created here when it is not registered yet)."""
    for group in app.registered_groups:
        if group.name == "admin" and group.typer_instance is not None:
            group.typer_instance.command("rotate-keys")(rotate_keys)
            return
    admin_app = typer.Typer(help="Admin helpers.", no_args_is_help=True)
    admin_app.command("rotate-keys")(rotate_keys)
    app.add_typer(admin_app, name="admin")
