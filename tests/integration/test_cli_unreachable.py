"""The CLI names the dependency that actually failed: an OSError or TimeoutError raised in
aiokafka is Kafka's, in asyncpg Postgres', one with a file name is that file's; one from
neither is shown as it is, never as "cannot reach Postgres"."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any

import aiokafka.conn
import asyncpg
import pytest
import typer

from meterline.commands import _common
from meterline.commands._common import run_work, unreachable
from schemas import settings as settings_module
from schemas.settings import CommonSettings
from tests.integration.tcp_proxy import free_port


async def raised(work: Callable[[], Awaitable[Any]]) -> BaseException:
    """What `work` raised (it must raise)."""
    try:
        await work()
    except BaseException as exc:  # noqa: BLE001 - the exception is what the test looks at
        return exc
    raise AssertionError("the work did not fail")


@pytest.fixture
def settings(test_settings: CommonSettings, monkeypatch: pytest.MonkeyPatch) -> CommonSettings:
    """The test's settings, also as the ones run_work reads."""
    monkeypatch.setitem(settings_module._LOADED, CommonSettings, test_settings)
    return test_settings


async def in_thread(work: Callable[[], Coroutine[Any, Any, Any]]) -> Any:
    """run_work(work()) in a thread of its own: its asyncio.run would leave the test runner's
    thread without an event loop."""
    return await asyncio.to_thread(lambda: run_work(work()))


async def run_work_message(
    work: Callable[[], Coroutine[Any, Any, Any]], capsys: pytest.CaptureFixture[str]
) -> str:
    """run_work's message, on stderr, for work that fails (exit 1)."""
    with pytest.raises(typer.Exit) as exit_:
        await in_thread(work)
    assert exit_.value.exit_code == 1
    return " ".join(capsys.readouterr().err.split())


async def test_a_socket_error_raised_in_aiokafka_names_kafka(settings: CommonSettings) -> None:
    """aiokafka wraps most socket errors in KafkaConnectionError, not all: a connection of its
    own to a closed port raises ConnectionRefusedError as it is."""
    port = free_port()
    exc = await raised(lambda: aiokafka.conn.create_conn("127.0.0.1", port))
    assert isinstance(exc, ConnectionRefusedError)
    message = unreachable(exc, settings)
    assert message is not None
    assert message.startswith(f"cannot reach Kafka at {settings.kafka_bootstrap}")
    assert "METERLINE_KAFKA_BOOTSTRAP" in message and "Postgres" not in message


async def test_postgres_refusing_hanging_or_missing_its_tls_file_names_postgres(
    settings: CommonSettings, database_url: str
) -> None:
    refused = await raised(lambda: asyncpg.connect(f"postgresql://u@127.0.0.1:{free_port()}/x"))
    assert isinstance(refused, ConnectionRefusedError)
    # The real database, a query past its command timeout: asyncpg's TimeoutError.
    conn = await asyncpg.connect(database_url, command_timeout=0.2)
    try:
        slow = await raised(lambda: conn.execute("SELECT pg_sleep(5)"))
    finally:
        await conn.close(timeout=5)
    assert isinstance(slow, TimeoutError)
    # A DSN whose sslrootcert is missing: a FileNotFoundError raised in asyncpg.
    no_ca = await raised(
        lambda: asyncpg.connect(f"{database_url}?sslmode=verify-full&sslrootcert=/no/ca.pem")
    )
    assert isinstance(no_ca, FileNotFoundError)
    for exc in (refused, slow, no_ca):
        message = unreachable(exc, settings)
        assert message is not None, exc
        assert (
            message.startswith("cannot reach Postgres at ") and "METERLINE_DATABASE_URL" in message
        )
        assert "Kafka" not in message


async def test_a_missing_file_is_named_not_postgres(
    settings: CommonSettings, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    missing = tmp_path / "events[/][red].jsonl"  # printed as it is, not read as rich markup

    async def work() -> None:
        missing.read_text()

    message = await run_work_message(work, capsys)
    named = f"cannot use the file '{missing}': No such file or directory"
    assert "".join(named.split()) in "".join(message.split())  # wrapped at the terminal width
    assert "Postgres" not in message and "Kafka" not in message


async def test_an_os_error_of_neither_is_shown_as_it_is(
    settings: CommonSettings, capsys: pytest.CaptureFixture[str]
) -> None:
    """A socket of no dependency's (here asyncio's own, to a closed port): no dependency is
    blamed; the error goes on (with its traceback) to whoever runs the command."""
    port = free_port()

    async def work() -> None:
        await asyncio.open_connection("127.0.0.1", port)

    with pytest.raises(ConnectionRefusedError):
        await in_thread(work)
    assert "cannot reach" not in capsys.readouterr().err


async def test_raised_in_looks_through_the_exceptions_it_was_raised_from() -> None:
    try:
        try:
            await asyncpg.connect(f"postgresql://u@127.0.0.1:{free_port()}/x")
        except OSError as exc:
            raise TimeoutError("gave up") from exc
    except TimeoutError as outer:
        assert _common.raised_in(outer, ("asyncpg", "aiokafka")) == "asyncpg"
