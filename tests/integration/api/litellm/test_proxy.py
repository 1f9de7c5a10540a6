"""The real LiteLLM proxy server metered by MeterlineCallback, called with the openai SDK as any
client would: each call debited once, concurrent calls never over-commit, restarts lose
nothing, and an account that cannot pay gets a 402 with the reason."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Iterator
from decimal import Decimal
from pathlib import Path

import asyncpg
import litellm
import openai
import pytest
from aiokafka import AIOKafkaConsumer, TopicPartition
from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from cryptography.fernet import Fernet

from api.settings import ApiSettings
from processors.api_key_queries import insert_key
from processors.api_keys import hash_key, new_key
from producers.client import MeterlineClient
from tests.integration.api.litellm.helpers import (
    DEMO_MODEL,
    MOCK_COST,
    add_prices,
    balance,
    fund,
    usage_debits,
)
from tests.integration.api.litellm.proxy import LiteLLMProxy
from tests.integration.api_server import ApiServer, free_port
from tests.integration.worker import USAGE_ROWS, Worker, wait_for

MESSAGES = [{"role": "user", "content": "What is metering?"}]
CHAT = "demo-chat"  # deploy/litellm/config.yaml: openai/meterline-demo, mocked


# One LiteLLM proxy (10-15 s of imports to start) and one API for the module, on the module's
# own topics and admin key, instead of one of each per test. What a test could leave for the
# next is cut off by the fixtures below: the database is emptied before each test (the `db`
# fixture) and the admin key and prices written again; each test's worker starts at the end
# of the usage topic, so it meters only what its own test publishes; the spool is empty at the
# end of every test (asserted).


@pytest.fixture(scope="module")
async def module_settings(kafka_bootstrap: str, database_url: str) -> AsyncIterator[ApiSettings]:
    """ApiSettings on the test database and topics of this module's own."""
    admin = AIOKafkaAdminClient(bootstrap_servers=kafka_bootstrap)
    await admin.start()
    run = uuid.uuid4().hex[:10]
    specs = {"usage.events": 4, "usage.dlq": 1, "credit.alerts": 1}
    topics = {name: f"t{run}.{name}" for name in specs}
    await admin.create_topics(
        [NewTopic(topics[n], num_partitions=p, replication_factor=1) for n, p in specs.items()]
    )
    try:
        yield ApiSettings(
            kafka_bootstrap=kafka_bootstrap,
            database_url=database_url,
            topic_usage_events=topics["usage.events"],
            topic_usage_dlq=topics["usage.dlq"],
            topic_credit_alerts=topics["credit.alerts"],
            usage_events_partitions=4,
            encryption_keys=Fernet.generate_key().decode(),
            pg_pool_min=1,
            pg_pool_max=20,
        )
    finally:
        try:
            await admin.delete_topics(list(topics.values()))
        finally:
            await admin.close()


@pytest.fixture(scope="module")
def module_key() -> tuple[str, str]:
    """(key_id, key) of the module's admin key; stored again after each test's reset."""
    return new_key()


@pytest.fixture(scope="module")
def module_api(module_settings: ApiSettings) -> Iterator[ApiServer]:
    server = ApiServer(module_settings, METERLINE_PG_POOL_MAX="10").start_blocking()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture(scope="module")
def spool(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("litellm-spool") / "spool.jsonl"


@pytest.fixture(scope="module")
def module_proxy(
    module_settings: ApiSettings, module_api: ApiServer, module_key: tuple[str, str], spool: Path
) -> Iterator[LiteLLMProxy]:
    p = LiteLLMProxy(module_settings, module_api.url, module_key[1], spool).start()
    try:
        yield p
    finally:
        p.stop()


@pytest.fixture
def api_settings(module_settings: ApiSettings) -> ApiSettings:
    return module_settings


@pytest.fixture
async def admin_key(db: asyncpg.Pool, module_key: tuple[str, str]) -> str:
    """The module's admin key, stored in the freshly emptied database, and the test models
    priced (as the `served` fixture of the other LiteLLM tests does)."""
    key_id, key = module_key
    await insert_key(db, key_id=key_id, key_hash=hash_key(key), account_id=None, scope="admin")
    await add_prices(db)
    return key


@pytest.fixture
def served(module_api: ApiServer, admin_key: str) -> ApiServer:
    return module_api


def spooled(spool: Path) -> int:
    """How many events wait in the spool."""
    return len(spool.read_text().splitlines()) if spool.exists() else 0


@pytest.fixture
def proxy(module_proxy: LiteLLMProxy, served: ApiServer, spool: Path) -> Iterator[LiteLLMProxy]:
    if module_proxy.proc is None or module_proxy.proc.poll() is not None:
        module_proxy.start()  # a test stopped it and failed before starting it again
    yield module_proxy
    assert spooled(spool) == 0, "usage left in the spool for the next test"


async def usage_topic_end(settings: ApiSettings) -> dict[TopicPartition, int]:
    """Where the module's usage topic ends now: what this test publishes comes after."""
    consumer = AIOKafkaConsumer(bootstrap_servers=settings.kafka_bootstrap)
    await consumer.start()
    try:
        topic = settings.topic_usage_events
        parts = [TopicPartition(topic, p) for p in range(settings.usage_events_partitions)]
        return dict(await consumer.end_offsets(parts))
    finally:
        await consumer.stop()


async def worker_from(settings: ApiSettings, start: dict[TopicPartition, int]) -> Worker:
    """The real worker in a new group that reads the usage topic from `start` on: it meters
    this test's usage only."""
    group = f"w-{uuid.uuid4().hex[:8]}"
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka_bootstrap, group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    try:
        consumer.assign(list(start))
        await consumer.commit(start)
    finally:
        await consumer.stop()
    return Worker(settings, group=group).start()


@pytest.fixture
async def worker(api_settings: ApiSettings, admin_key: str) -> AsyncIterator[Worker]:
    w = await worker_from(api_settings, await usage_topic_end(api_settings))
    try:
        yield w
    finally:
        w.stop()


def openai_client(proxy: LiteLLMProxy) -> openai.AsyncOpenAI:
    return openai.AsyncOpenAI(base_url=f"{proxy.url}/v1", api_key=proxy.master_key, max_retries=0)


def worst_case(max_tokens: int) -> Decimal:
    """The hold of one demo-chat call: LiteLLM's prompt count + max_tokens, test prices."""
    prompt = litellm.token_counter(model=DEMO_MODEL, messages=MESSAGES)
    return Decimal(prompt * 2000 + max_tokens * 8000) / 1_000_000


async def test_each_proxied_call_is_debited_once_and_settles_its_hold(
    proxy: LiteLLMProxy,
    served: ApiServer,
    admin_key: str,
    db: asyncpg.Pool,
    worker: Worker,
) -> None:
    await fund(db, "acme", 10_000_000)
    async with openai_client(proxy) as ai:
        holds = []
        for _ in range(5):
            raw = await ai.chat.completions.with_raw_response.create(
                model=CHAT,
                messages=MESSAGES,
                user="acme",
                max_tokens=50,
            )
            answer = raw.parse()
            assert answer.choices[0].message.content
            assert raw.headers["x-meterline-account"] == "acme"
            holds.append(raw.headers["x-meterline-reservation-id"])
    await wait_for(db, USAGE_ROWS, 5, worker=worker)
    assert await usage_debits(db, "acme") == [MOCK_COST] * 5
    assert await balance(db, "acme") == Decimal(10) - 5 * MOCK_COST
    async with MeterlineClient(served.url, admin_key) as ml:
        states = [(await ml.get_reservation(h, account_id="acme")).status for h in holds]
        assert states == ["settled"] * 5
        assert await ml.reservations(account_id="acme") == []


async def test_an_account_that_cannot_pay_gets_402_with_the_reason(
    proxy: LiteLLMProxy, db: asyncpg.Pool
) -> None:
    await fund(db, "small", 100_000)  # 0.1 credit; the worst case of 50 tokens is 0.4+
    async with openai_client(proxy) as ai:
        with pytest.raises(openai.APIStatusError) as refused:
            await ai.chat.completions.create(
                model=CHAT,
                messages=MESSAGES,
                user="small",
                max_tokens=50,
            )
    assert refused.value.status_code == 402
    error = refused.value.body
    assert isinstance(error, dict)
    assert "meterline refused the call for account 'small'" in error["message"]
    assert error["provider_specific_fields"]["code"] == "insufficient_credit"


async def test_50_concurrent_calls_on_credit_for_20_holds(
    proxy: LiteLLMProxy,
    served: ApiServer,
    admin_key: str,
    api_settings: ApiSettings,
    db: asyncpg.Pool,
) -> None:
    hold = worst_case(100)
    await fund(db, "acme", int(20 * hold * 1_000_000))

    refusals: list[str] = []

    async def call(ai: openai.AsyncOpenAI) -> int:
        try:
            await ai.chat.completions.create(
                model=CHAT, messages=MESSAGES, user="acme", max_tokens=100
            )
            return 200
        except openai.APIStatusError as exc:
            refusals.append(exc.message)
            return exc.status_code

    start = await usage_topic_end(api_settings)
    async with openai_client(proxy) as ai:
        codes = await asyncio.gather(*(call(ai) for _ in range(50)))
    # No worker yet: no hold settles during the burst, so exactly 20 fit.
    assert codes.count(200) == 20 and codes.count(402) == 30, (codes, refusals[:3])
    assert all("insufficient_credit" in r or "available" in r for r in refusals), refusals[:3]
    worker = await worker_from(api_settings, start)
    try:
        await wait_for(db, USAGE_ROWS, 20, worker=worker)
    finally:
        worker.stop()
    left = await balance(db, "acme")
    assert left == 20 * hold - 20 * MOCK_COST and left >= 0
    async with MeterlineClient(served.url, admin_key) as ml:
        assert await ml.reservations(account_id="acme") == []


async def test_a_proxy_restarted_mid_run_loses_no_usage(
    proxy: LiteLLMProxy, db: asyncpg.Pool, worker: Worker
) -> None:
    await fund(db, "acme", 50_000_000)

    async def burst() -> int:
        async with openai_client(proxy) as ai:
            answers = await asyncio.gather(
                *(
                    ai.chat.completions.create(
                        model=CHAT,
                        messages=MESSAGES,
                        user="acme",
                        max_tokens=20,
                    )
                    for _ in range(10)
                )
            )
        return len(answers)

    served_calls = await burst()
    proxy.stop()  # at once: the usage of the last calls may still be in LiteLLM's logging queue
    proxy.start()
    served_calls += await burst()
    await wait_for(db, USAGE_ROWS, served_calls, worker=worker)
    assert await usage_debits(db, "acme") == [MOCK_COST] * 20, proxy.log()


async def test_a_failing_proxied_call_releases_its_hold(
    proxy: LiteLLMProxy, served: ApiServer, admin_key: str, db: asyncpg.Pool
) -> None:
    await fund(db, "acme", 5_000_000)
    async with openai_client(proxy) as ai:
        with pytest.raises(openai.InternalServerError) as failed:
            await ai.chat.completions.create(
                model="demo-failing", messages=MESSAGES, user="acme", max_tokens=50
            )
    hold_id = failed.value.response.headers["x-meterline-reservation-id"]
    async with MeterlineClient(served.url, admin_key) as ml:
        for _ in range(100):  # the failure hook runs as the error is answered
            hold = await ml.get_reservation(hold_id, account_id="acme")
            if hold.status != "active":
                break
            await asyncio.sleep(0.05)
        assert hold.status == "released" and hold.amount > 0
        after = await ml.balance(account_id="acme")
        assert after.held == 0 and after.available == after.balance == Decimal(5)
        assert await ml.reservations(account_id="acme") == []
    assert await usage_debits(db, "acme") == []


async def test_usage_spooled_by_a_proxy_is_published_by_the_next_one(
    proxy: LiteLLMProxy,
    served: ApiServer,
    admin_key: str,
    api_settings: ApiSettings,
    db: asyncpg.Pool,
    worker: Worker,
    spool: Path,
) -> None:
    await fund(db, "acme", 50_000_000)
    # This proxy's Kafka is unreachable (fail-open): its usage can only go to the spool.
    cut_off = LiteLLMProxy(
        api_settings,
        served.url,
        admin_key,
        spool,  # the spool of the `proxy` fixture too
        METERLINE_KAFKA_BOOTSTRAP=f"127.0.0.1:{free_port()}",
    ).start()
    try:
        async with openai_client(cut_off) as ai:
            for _ in range(5):
                await ai.chat.completions.create(
                    model=CHAT, messages=MESSAGES, user="acme", max_tokens=20
                )
        for _ in range(200):
            if spooled(spool) == 5:
                break
            await asyncio.sleep(0.05)
        assert spooled(spool) == 5, cut_off.log()
    finally:
        cut_off.stop()
    assert await db.fetchval(USAGE_ROWS) == 0
    # The next proxy on that spool publishes it with its first call.
    async with openai_client(proxy) as ai:
        await ai.chat.completions.create(model=CHAT, messages=MESSAGES, user="acme", max_tokens=20)
    await wait_for(db, USAGE_ROWS, 6, worker=worker)
    assert await usage_debits(db, "acme") == [MOCK_COST] * 6
    async with MeterlineClient(served.url, admin_key) as ml:
        assert await ml.reservations(account_id="acme") == []  # the spooled events settled too
