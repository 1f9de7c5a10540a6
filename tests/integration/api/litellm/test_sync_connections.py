"""The sync LiteLLM path (litellm.completion, metered after the call from LiteLLM's logging
thread) publishes over one long-lived connection, reconnects by itself, and flushes at
interpreter exit. Before, every sync call opened (and closed) a Kafka producer or an HTTP
connection of its own."""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import textwrap
from pathlib import Path

import asyncpg
import litellm
import pytest

from api.settings import ApiSettings
from tests.integration.api.litellm.helpers import MOCK_COST, MODEL, fund, usage_debits
from tests.integration.api.litellm.test_sdk import (  # noqa: F401 - `installed` is a fixture
    MESSAGES,
    Recording,
    installed,
    make_callback,
    use,
)
from tests.integration.api_server import ApiServer
from tests.integration.tcp_proxy import TcpProxy
from tests.integration.worker import USAGE_ROWS, Worker, consume_to_end, wait_for


class CountingProxy(TcpProxy):
    """A TCP proxy that counts the connections it accepts."""

    accepted = 0

    async def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.accepted += 1
        await super()._accept(reader, writer)


async def _sync_calls(db: asyncpg.Pool, worker: Worker, start: int, n: int) -> None:
    """n sync calls, one after the other's usage is debited (LiteLLM meters them in its
    logging threads, concurrent calls would rightly take concurrent connections)."""
    for i in range(start + 1, start + n + 1):
        await asyncio.to_thread(
            litellm.completion, model=MODEL, messages=MESSAGES, mock_response="x", user="acme"
        )
        await wait_for(db, USAGE_ROWS, i, worker=worker)


@pytest.mark.parametrize("transport", ["kafka", "http"])
async def test_sync_calls_share_one_connection_and_reconnect(
    served: ApiServer,
    admin_key: str,
    api_settings: ApiSettings,
    db: asyncpg.Pool,
    worker: Worker,
    installed: list[Recording],  # noqa: F811 - the fixture
    tmp_path: Path,
    transport: str,
) -> None:
    await fund(db, "acme", 5_000_000)
    if transport == "kafka":
        host, port = api_settings.kafka_bootstrap.split(",")[0].rsplit(":", 1)
        proxy = CountingProxy(host, int(port))  # in front of the bootstrap server
        options = {"kafka_bootstrap": proxy.address}
    else:
        proxy = CountingProxy("127.0.0.1", int(served.url.rsplit(":", 1)[1]))
        options = {"kafka_bootstrap": "", "api_url": f"http://{proxy.address}"}
    await proxy.open()
    try:
        use(installed, make_callback(served, admin_key, api_settings, tmp_path, **options))
        await _sync_calls(db, worker, 0, 5)
        assert proxy.accepted == 1  # was 5: a connection per call

        await proxy.close()  # every connection cut, as a restart of the server would
        await proxy.open()
        await _sync_calls(db, worker, 5, 5)  # the first after the cut reconnects (or spools)
    finally:
        await proxy.close()
    assert await usage_debits(db, "acme") == [MOCK_COST] * 10


SCRIPT = textwrap.dedent(
    """
    import os, sys
    os.environ["LITELLM_LOCAL_MODEL_COST_MAP"] = "True"
    import litellm
    from producers.integrations.litellm import MeterlineCallback

    bootstrap, topic, spool = sys.argv[1:4]
    litellm.callbacks = [
        MeterlineCallback(kafka_bootstrap=bootstrap, topic_usage_events=topic, spool_path=spool)
    ]
    for _ in range(3):
        litellm.completion(
            model="openai/meterline-test",
            messages=[{"role": "user", "content": "hi"}],
            mock_response="x",
            user="acme",
        )
    print("done", flush=True)
    # no aclose(): what the process published must be flushed at exit all the same
    """
)


async def test_usage_of_the_last_sync_calls_is_flushed_at_interpreter_exit(
    api_settings: ApiSettings, tmp_path: Path
) -> None:
    spool = tmp_path / "spool.jsonl"
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-c",
        SCRIPT,
        api_settings.kafka_bootstrap,
        api_settings.topic_usage_events,
        str(spool),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, err.decode()[-2000:]
    assert out.decode().strip() == "done"
    records = await consume_to_end(api_settings.kafka_bootstrap, api_settings.topic_usage_events, 3)
    assert [json.loads(r.value)["account_id"] for r in records] == ["acme"] * 3
    assert not spool.exists() or spool.read_text() == ""


async def test_concurrent_sync_calls_from_many_threads_share_the_one_producer(
    served: ApiServer,
    admin_key: str,
    api_settings: ApiSettings,
    db: asyncpg.Pool,
    worker: Worker,
    installed: list[Recording],  # noqa: F811 - the fixture
    tmp_path: Path,
) -> None:
    await fund(db, "acme", 5_000_000)
    host, port = api_settings.kafka_bootstrap.split(",")[0].rsplit(":", 1)
    proxy = CountingProxy(host, int(port))
    await proxy.open()
    try:
        use(
            installed,
            make_callback(served, admin_key, api_settings, tmp_path, kafka_bootstrap=proxy.address),
        )

        def five() -> None:
            for _ in range(5):
                litellm.completion(model=MODEL, messages=MESSAGES, mock_response="x", user="acme")

        await asyncio.gather(*(asyncio.to_thread(five) for _ in range(4)))
        await wait_for(db, USAGE_ROWS, 20, worker=worker)
        assert proxy.accepted == 1
    finally:
        await proxy.close()
    assert await usage_debits(db, "acme") == [MOCK_COST] * 20
    records = await consume_to_end(
        api_settings.kafka_bootstrap, api_settings.topic_usage_events, 20
    )
    assert len({json.loads(r.value)["event_id"] for r in records}) == len(records) == 20
