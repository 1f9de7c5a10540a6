"""meterline on a Kafka that wants TLS and SASL, as managed clusters do (SASL_SSL with PLAIN or
SCRAM, or TLS with client certificates): the METERLINE_KAFKA_* security settings reach every
client the worker, the API and the CLI make.

One real broker of this module's own (tests/integration/brokers.py) listens with SASL_SSL
(PLAIN and SCRAM-SHA-256 users) and with TLS that requires a client certificate, under a CA
made here.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import ipaddress
import sys
import tempfile
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import asyncpg
import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from processors.api_keys import create_api_key
from processors.topic_admin import ensure_topics
from processors.topic_range import make_consumer
from producers.publisher import PublishError, UsagePublisher
from schemas.event import UsageEvent
from schemas.settings import CommonSettings
from tests.integration.api_server import ApiServer
from tests.integration.brokers import free_port, kraft_nodes
from tests.integration.ledger_helpers import allocate
from tests.integration.worker import TEST_MODEL, USAGE_ROWS, Worker, add_test_price, event

PLAIN_USER, PLAIN_PASSWORD = "meter", "meter-secret"
SCRAM_USER, SCRAM_PASSWORD = "scram-meter", "scram-secret"


@dataclass(frozen=True)
class SecureBroker:
    sasl_ssl: str  # bootstrap of the SASL_SSL listener
    mtls: str  # bootstrap of the TLS listener that requires a client certificate
    cafile: str
    client_cert: str
    client_key: str


def _key() -> ec.EllipticCurvePrivateKey:
    return ec.generate_private_key(ec.SECP256R1())


def _cert(
    subject: str,
    key: ec.EllipticCurvePrivateKey,
    issuer: x509.Certificate | None,
    issuer_key: ec.EllipticCurvePrivateKey,
    *,
    ca: bool = False,
) -> x509.Certificate:
    now = dt.datetime.now(dt.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(issuer.subject if issuer else name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True)
    )
    if not ca:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
            ),
            critical=False,
        )
    return builder.sign(issuer_key, hashes.SHA256())


def _pem(cert: x509.Certificate) -> bytes:
    return cert.public_bytes(serialization.Encoding.PEM)


def _pkcs8(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )


@pytest.fixture(scope="module")
def secure_broker() -> Iterator[SecureBroker]:
    root = Path(tempfile.mkdtemp(prefix="meterline-secure-kafka-"))
    ca_key = _key()
    ca = _cert("meterline test CA", ca_key, None, ca_key, ca=True)
    server_key, client_key = _key(), _key()
    server = _cert("127.0.0.1", server_key, ca, ca_key)
    client = _cert("meterline-client", client_key, ca, ca_key)
    (root / "ca.pem").write_bytes(_pem(ca))
    # Kafka's PEM key store: the PKCS#8 key, then the certificate chain.
    (root / "server.pem").write_bytes(_pkcs8(server_key) + _pem(server) + _pem(ca))
    (root / "client.pem").write_bytes(_pem(client))
    (root / "client.key").write_bytes(_pkcs8(client_key))
    sasl_port, mtls_port, internal, controller = (free_port() for _ in range(4))
    plain = "org.apache.kafka.common.security.plain.PlainLoginModule required"
    props = [
        "process.roles=broker,controller",
        "node.id=1",
        f"controller.quorum.voters=1@127.0.0.1:{controller}",
        f"listeners=SASL_SSL://127.0.0.1:{sasl_port},SSL://127.0.0.1:{mtls_port},"
        f"INTERNAL://127.0.0.1:{internal},CONTROLLER://127.0.0.1:{controller}",
        f"advertised.listeners=SASL_SSL://127.0.0.1:{sasl_port},SSL://127.0.0.1:{mtls_port},"
        f"INTERNAL://127.0.0.1:{internal}",
        "listener.security.protocol.map=SASL_SSL:SASL_SSL,SSL:SSL,INTERNAL:PLAINTEXT,"
        "CONTROLLER:PLAINTEXT",
        "controller.listener.names=CONTROLLER",
        "inter.broker.listener.name=INTERNAL",
        "sasl.enabled.mechanisms=PLAIN,SCRAM-SHA-256",
        f"listener.name.sasl_ssl.plain.sasl.jaas.config={plain}"
        f' user_{PLAIN_USER}="{PLAIN_PASSWORD}";',
        "listener.name.sasl_ssl.scram-sha-256.sasl.jaas.config="
        "org.apache.kafka.common.security.scram.ScramLoginModule required;",
        "ssl.keystore.type=PEM",
        f"ssl.keystore.location={root / 'server.pem'}",
        "ssl.truststore.type=PEM",
        f"ssl.truststore.location={root / 'ca.pem'}",
        "listener.name.ssl.ssl.client.auth=required",
    ]
    scram = ["--add-scram", f"SCRAM-SHA-256=[name={SCRAM_USER},password={SCRAM_PASSWORD}]"]
    with kraft_nodes(root, [(props, sasl_port)], format_args=scram):
        yield SecureBroker(
            sasl_ssl=f"127.0.0.1:{sasl_port}",
            mtls=f"127.0.0.1:{mtls_port}",
            cafile=str(root / "ca.pem"),
            client_cert=str(root / "client.pem"),
            client_key=str(root / "client.key"),
        )


def _sasl_settings(broker: SecureBroker, database_url: str = "-", **kw: str) -> CommonSettings:
    suffix = uuid.uuid4().hex[:8]
    values: dict[str, str] = {
        "kafka_bootstrap": broker.sasl_ssl,
        "database_url": database_url,
        "topic_usage_events": f"usage.events.{suffix}",
        "topic_usage_dlq": f"usage.dlq.{suffix}",
        "topic_credit_alerts": f"credit.alerts.{suffix}",
        "kafka_security_protocol": "SASL_SSL",
        "kafka_sasl_mechanism": "PLAIN",
        "kafka_sasl_username": PLAIN_USER,
        "kafka_sasl_password": PLAIN_PASSWORD,
        "kafka_ssl_cafile": broker.cafile,
    }
    values.update(kw)
    return CommonSettings(usage_events_partitions=2, **values)  # type: ignore[arg-type]


async def test_the_worker_and_the_api_meter_over_sasl_ssl(
    secure_broker: SecureBroker, database_url: str, db: asyncpg.Pool
) -> None:
    settings = _sasl_settings(secure_broker, database_url)
    async with db.acquire() as conn:
        await add_test_price(conn)
        await allocate(conn, "alice", 10_000_000, "g", reason="grant")
        _, key = await create_api_key(conn, account_id=None, scope="admin")
    # The worker creates its topics, joins its group, consumes and commits, and the API checks
    # the broker (/readyz) and publishes ingested events, all through the secured listener:
    # neither has another way to the broker.
    worker = Worker(settings).start()
    api = ApiServer(settings)
    await api.start()
    try:
        async with UsagePublisher(
            settings.kafka_bootstrap, settings.topic_usage_events, security=settings.kafka_options()
        ) as pub:
            for n in range(2):
                ev = event(f"s{n}", "alice", input_tokens=1000, output_tokens=500)
                await pub.publish(UsageEvent.model_validate(ev))
        async with httpx.AsyncClient(base_url=api.base_url, timeout=30) as http:
            ready = await http.get("/readyz")
            assert ready.status_code == 200, ready.text
            ingested = await http.post(
                "/api/v1/usage/events",
                json=event("s2", "alice", input_tokens=1000, output_tokens=500),
                headers={"Authorization": f"Bearer {key}"},
            )
            assert ingested.status_code == 202, ingested.text
        deadline = time.monotonic() + 90
        while await db.fetchval(USAGE_ROWS) < 3:
            assert worker.proc is not None and worker.proc.poll() is None, worker.log()
            assert time.monotonic() < deadline, worker.log()
            await asyncio.sleep(0.3)
    finally:
        api.stop()
        worker.stop()
    # 1000 in × 2/M + 500 out × 8/M = 0.006 credits each
    balance = await db.fetchval("SELECT balance_micros FROM user_credits WHERE account_id='alice'")
    assert balance == 10_000_000 - 3 * 6_000
    models = await db.fetchval("SELECT string_agg(DISTINCT model, ',') FROM usage_events")
    assert models == TEST_MODEL


async def test_scram_publishes_and_a_client_certificate_reads_back(
    secure_broker: SecureBroker,
) -> None:
    scram = _sasl_settings(
        secure_broker,
        kafka_sasl_mechanism="SCRAM-SHA-256",
        kafka_sasl_username=SCRAM_USER,
        kafka_sasl_password=SCRAM_PASSWORD,
    )
    topic = scram.topic_usage_events
    await ensure_topics(scram.kafka_bootstrap, {topic: 1}, security=scram.kafka_options())
    async with UsagePublisher(scram.kafka_bootstrap, topic, security=scram.kafka_options()) as pub:
        await pub.publish(UsageEvent.model_validate(event("scram-1", "bob", input_tokens=7)))

    mtls = CommonSettings(
        kafka_bootstrap=secure_broker.mtls,
        database_url="-",
        kafka_security_protocol="SSL",
        kafka_ssl_cafile=secure_broker.cafile,
        kafka_ssl_certfile=secure_broker.client_cert,
        kafka_ssl_keyfile=secure_broker.client_key,
    )
    values = await _read(mtls, topic, 1)
    assert len(values) == 1 and b'"scram-1"' in values[0]


async def test_a_wrong_password_is_refused_and_says_so(secure_broker: SecureBroker) -> None:
    wrong = _sasl_settings(secure_broker, kafka_sasl_password="not-the-password")
    started = time.monotonic()
    with pytest.raises(PublishError) as refused:
        async with UsagePublisher(
            wrong.kafka_bootstrap, wrong.topic_usage_events, security=wrong.kafka_options()
        ):
            pass
    # aiokafka's own error says only "Unable to bootstrap"; the reason it logged is kept.
    assert "Authentication failed: Invalid username or password" in str(refused.value)
    assert time.monotonic() - started < 30  # refused, not left to time out


async def test_produce_takes_the_security_settings_from_the_environment(
    secure_broker: SecureBroker,
) -> None:
    # The CLI and the LiteLLM plug-in build their clients without settings in hand: theirs
    # come from METERLINE_* in the environment, as every service's do.
    settings = _sasl_settings(secure_broker)
    topic = settings.topic_usage_events
    await ensure_topics(settings.kafka_bootstrap, {topic: 1}, security=settings.kafka_options())
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "meterline",
        "produce",
        "--synthetic",
        "5",
        "--accounts",
        "2",
        env=settings.as_env(),
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.STDOUT,
    )
    out, _ = await asyncio.wait_for(proc.communicate(), 120)
    assert proc.returncode == 0, out.decode()

    assert len(await _read(settings, topic, 5)) == 5


async def _read(settings: CommonSettings, topic: str, expected: int) -> list[bytes]:
    """The topic's record values, read with these settings' security (up to 20 s)."""
    consumer = make_consumer(settings.kafka_bootstrap, security=settings.kafka_options())
    await consumer.start()
    values: list[bytes] = []
    try:
        consumer.subscribe([topic])
        deadline = time.monotonic() + 20
        while len(values) < expected and time.monotonic() < deadline:
            got = await consumer.getmany(timeout_ms=1000)
            values.extend(r.value for records in got.values() for r in records if r.value)
    finally:
        await consumer.stop()
    return values
