"""The local stack: a real Kafka broker (KRaft, jars from Maven Central) and a real PostgreSQL,
started as plain processes on 127.0.0.1 — no Docker needed. `meterline dev up|down|status`."""

from __future__ import annotations

import asyncio
import base64
import json
import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from importlib import resources
from pathlib import Path
from typing import Any

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from schemas.settings import get_settings, meterline_home, read_stack_state, stack_state_file

KAFKA_VERSION = "4.0.1"
# Resolving the broker's jars is the stack's one download (first use on a machine): a network
# hiccup gets another try.
MAVEN_ATTEMPTS = 3
MAVEN_PAUSE_S = 10.0
Progress = Callable[[str], None]


class StackSettings(BaseSettings):
    """Where the local stack listens and keeps its files."""

    model_config = SettingsConfigDict(env_prefix="METERLINE_STACK_", extra="ignore")

    kafka_port: int = Field(default=19092, ge=1, le=65535)
    kafka_controller_port: int = Field(default=19093, ge=1, le=65535)
    kafka_heap: str = "768m"
    postgres_port: int = Field(default=15432, ge=1, le=65535)
    postgres_bin: str = Field(default="", description="folder with initdb/pg_ctl; found if empty")
    cache_dir: str = Field(default="", description="where the Kafka jars are cached")
    start_timeout_s: float = 90.0


class StackError(RuntimeError):
    """The local stack could not be started or stopped; the message says what to do."""


@dataclass
class StackStatus:
    """What runs where."""

    kafka_bootstrap: str
    kafka_running: bool
    kafka_pid: int | None
    database_url: str
    postgres_running: bool
    postgres_data: str


# ---------------------------------------------------------------- helpers


def _port_open(port: int, host: str = "127.0.0.1") -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex((host, port)) == 0


def _pid_alive(pid: int | None, needle: str) -> bool:
    if not pid:
        return False
    try:
        cmdline = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()
    except OSError:
        return False
    return needle in cmdline


def _cache_dir() -> Path:
    configured = get_settings(StackSettings).cache_dir
    if configured:
        return Path(configured)
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "meterline"


def _save_state(**changes: Any) -> dict[str, Any]:
    state = read_stack_state()
    state.update(changes)
    path = stack_state_file()
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(state, indent=2))
    tmp.chmod(0o600)  # holds the database password
    tmp.replace(path)
    return state


def _is_root() -> bool:
    return os.geteuid() == 0


# ---------------------------------------------------------------- Kafka


def kafka_jars(progress: Progress) -> Path:
    """The broker's jar folder, resolved with Maven into the cache on first use."""
    libs = _cache_dir() / f"kafka-{KAFKA_VERSION}" / "libs"
    if libs.is_dir() and any(libs.glob("kafka_2.13-*.jar")):
        return libs
    mvn = shutil.which("mvn")
    if mvn is None:
        raise StackError(
            "Maven (mvn) is needed once to fetch the Kafka jars: apt-get install maven, "
            "or set METERLINE_STACK_CACHE_DIR to a folder that already holds them"
        )
    progress(f"resolving Kafka {KAFKA_VERSION} jars from Maven Central (once)")
    pom = resources.files("deploy").joinpath("kafka/pom.xml")
    tmp = libs.with_name("libs.partial")
    for attempt in range(1, MAVEN_ATTEMPTS + 1):
        shutil.rmtree(tmp, ignore_errors=True)
        with resources.as_file(pom) as pom_path:
            proc = subprocess.run(
                [
                    mvn,
                    "-q",
                    "-B",
                    # Wagon retries a request that failed on the connection (3 times) and
                    # drops pooled connections a middlebox may have cut (WAGON-545).
                    "-Dmaven.wagon.http.retryHandler.count=3",
                    "-Dmaven.wagon.httpconnectionManager.ttlSeconds=25",
                    "-f",
                    str(pom_path),
                    f"-Dkafka.version={KAFKA_VERSION}",
                    "dependency:copy-dependencies",
                    f"-DoutputDirectory={tmp}",
                ],
                capture_output=True,
                text=True,
            )
        if proc.returncode == 0:
            break
        if attempt == MAVEN_ATTEMPTS:
            raise StackError(
                f"Maven could not resolve the Kafka jars ({attempt} tries):\n"
                f"{proc.stdout}{proc.stderr}"
            )
        # What was downloaded stays in ~/.m2: the next try fetches only what is missing.
        progress(f"Maven failed (try {attempt} of {MAVEN_ATTEMPTS}); again in {MAVEN_PAUSE_S:g} s")
        time.sleep(MAVEN_PAUSE_S)
    shutil.rmtree(libs, ignore_errors=True)
    tmp.rename(libs)
    return libs


def _kafka_dir() -> Path:
    return meterline_home() / "kafka"


def _kafka_properties(cfg: StackSettings, data: Path) -> str:
    return "\n".join(
        [
            "process.roles=broker,controller",
            "node.id=1",
            f"controller.quorum.voters=1@127.0.0.1:{cfg.kafka_controller_port}",
            f"listeners=PLAINTEXT://127.0.0.1:{cfg.kafka_port},"
            f"CONTROLLER://127.0.0.1:{cfg.kafka_controller_port}",
            f"advertised.listeners=PLAINTEXT://127.0.0.1:{cfg.kafka_port}",
            "controller.listener.names=CONTROLLER",
            "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,CONTROLLER:PLAINTEXT",
            "inter.broker.listener.name=PLAINTEXT",
            f"log.dirs={data}",
            "num.partitions=1",
            "offsets.topic.replication.factor=1",
            "offsets.topic.num.partitions=12",
            "transaction.state.log.replication.factor=1",
            "transaction.state.log.min.isr=1",
            "share.coordinator.state.topic.replication.factor=1",
            "group.initial.rebalance.delay.ms=0",
            "auto.create.topics.enable=true",
            "log.retention.hours=168",
            "",
        ]
    )


def _java() -> str:
    java = shutil.which("java")
    if java is None:
        raise StackError("a JDK 17+ is needed for Kafka: apt-get install openjdk-17-jre-headless")
    return java


def kafka_java(libs: Path, log4j: Path) -> list[str]:
    """java with the broker's jars and its log4j configuration (a logging binding declared
    explicitly); the main class and its arguments follow."""
    return [_java(), "-cp", f"{libs}/*", f"-Dlog4j.configuration=file:{log4j}"]


def new_cluster_id() -> str:
    """A KRaft cluster id (a base64url UUID, as kafka-storage random-uuid makes).

    One uuid in 64 encodes to a string that starts with "-", which a command line reads as an
    option; Kafka's own Uuid.randomUuid() draws again for those, and so does this.
    """
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).decode().rstrip("=")
        if not cluster_id.startswith("-"):
            return cluster_id


def format_storage(
    java: list[str], props: Path, cluster_id: str, extra: Sequence[str] = ()
) -> None:
    """`kafka.tools.StorageTool format` of a node's log.dirs (extra: e.g. --add-scram)."""
    proc = subprocess.run(
        [
            *java,
            "kafka.tools.StorageTool",
            "format",
            f"--cluster-id={cluster_id}",
            "-c",
            str(props),
            *extra,
        ],
        capture_output=True,
        text=True,
    )
    if proc.returncode != 0:
        raise StackError(f"kafka-storage format failed:\n{proc.stdout}{proc.stderr}")


def broker_command(java: list[str], props: Path, *, heap: str, min_heap: str = "256m") -> list[str]:
    """The command line of a broker process for `props`."""
    return [
        java[0],
        f"-Xmx{heap}",
        f"-Xms{min_heap}",
        "-XX:+UseG1GC",
        "-Djava.awt.headless=true",
        *java[1:],
        "kafka.Kafka",
        str(props),
    ]


def start_kafka(progress: Progress) -> tuple[str, int]:
    """Start the single-node KRaft broker unless ours already runs; returns (bootstrap, pid)."""
    cfg = get_settings(StackSettings)
    bootstrap = f"127.0.0.1:{cfg.kafka_port}"
    state = read_stack_state()
    props = _kafka_dir() / "server.properties"
    if _pid_alive(state.get("kafka_pid"), str(props)) and _port_open(cfg.kafka_port):
        progress(f"Kafka already running at {bootstrap}")
        return bootstrap, int(state["kafka_pid"])
    if _port_open(cfg.kafka_port):
        raise StackError(
            f"port {cfg.kafka_port} is taken by another process; set METERLINE_STACK_KAFKA_PORT"
        )
    libs = kafka_jars(progress)
    data = _kafka_dir() / "data"
    data.mkdir(parents=True, exist_ok=True)
    props.write_text(_kafka_properties(cfg, data))
    log4j = _kafka_dir() / "log4j.properties"
    log4j.write_text(resources.files("deploy").joinpath("kafka/log4j.properties").read_text())
    java = kafka_java(libs, log4j)
    if not (data / "meta.properties").exists():
        progress("formatting KRaft storage")
        format_storage(java, props, new_cluster_id())
    progress(f"starting Kafka {KAFKA_VERSION} on {bootstrap}")
    log = open(_kafka_dir() / "kafka.log", "ab")  # noqa: SIM115 - handed to the child
    child = subprocess.Popen(
        broker_command(java, props, heap=cfg.kafka_heap),
        stdout=log,
        stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL,
        start_new_session=True,
    )
    _save_state(kafka_pid=child.pid, kafka_bootstrap=bootstrap, kafka_dir=str(_kafka_dir()))
    deadline = time.monotonic() + cfg.start_timeout_s
    while not _port_open(cfg.kafka_port):
        if child.poll() is not None:
            raise StackError(f"Kafka exited with {child.returncode}; see {_kafka_dir()}/kafka.log")
        if time.monotonic() > deadline:
            raise StackError(f"Kafka did not listen within {cfg.start_timeout_s}s")
        time.sleep(0.25)
    return bootstrap, child.pid


def ensure_topics(bootstrap: str, progress: Progress) -> list[str]:
    """Create usage.events (12 partitions), usage.dlq and credit.alerts when missing."""
    from processors.topic_admin import ensure_topics as create
    from processors.topic_admin import wanted_topics
    from schemas.settings import CommonSettings

    topics = wanted_topics(CommonSettings(kafka_bootstrap=bootstrap, database_url="-"))
    created = asyncio.run(
        # The local broker listens in plain text, whatever METERLINE_KAFKA_* says for others.
        create(
            bootstrap, topics, timeout_s=get_settings(StackSettings).start_timeout_s, security={}
        )
    )
    progress(f"topics ready ({', '.join(topics)}; created {len(created)})")
    return created


def stop_kafka(progress: Progress) -> None:
    """Stop our broker (SIGTERM, then SIGKILL after 30 s)."""
    state = read_stack_state()
    pid = state.get("kafka_pid")
    needle = str(_kafka_dir() / "server.properties")
    if not isinstance(pid, int) or not _pid_alive(pid, needle):
        progress("Kafka not running")
        return
    progress(f"stopping Kafka (pid {pid})")
    os.killpg(pid, signal.SIGTERM)
    deadline = time.monotonic() + 30
    while _pid_alive(pid, needle) and time.monotonic() < deadline:
        time.sleep(0.2)
    if _pid_alive(pid, needle):
        os.killpg(pid, signal.SIGKILL)
        while _pid_alive(pid, needle):
            time.sleep(0.1)
    _save_state(kafka_pid=None)


# ---------------------------------------------------------------- PostgreSQL


def postgres_bin() -> Path:
    """The folder holding initdb and pg_ctl (Debian's postgresql package, or as configured)."""
    configured = get_settings(StackSettings).postgres_bin
    candidates = [Path(configured)] if configured else []
    candidates += sorted(Path("/usr/lib/postgresql").glob("*/bin"), reverse=True)
    initdb = shutil.which("initdb")
    if initdb:
        candidates.append(Path(os.path.realpath(initdb)).parent)
    for folder in candidates:
        if (folder / "initdb").exists() and (folder / "pg_ctl").exists():
            return folder
    raise StackError(
        "PostgreSQL server binaries not found: apt-get install postgresql "
        "(or set METERLINE_STACK_POSTGRES_BIN to the folder holding initdb and pg_ctl)"
    )


def _pg_root() -> Path:
    if _is_root():
        # The server refuses to run as root: it runs as the `postgres` user, which cannot
        # enter root's home, so its files live outside it.
        import hashlib

        tag = hashlib.sha1(str(meterline_home()).encode()).hexdigest()[:8]
        return Path("/var/lib/meterline") / tag
    return meterline_home() / "postgres"


def _as_pg_user(cmd: list[str]) -> list[str]:
    if not _is_root():
        return cmd
    runuser = shutil.which("runuser")
    if runuser is None:
        raise StackError("running as root needs runuser (util-linux) to start PostgreSQL")
    try:
        import pwd

        pwd.getpwnam("postgres")
    except KeyError as exc:
        raise StackError(
            "running as root needs a `postgres` user: apt-get install postgresql "
            "(or useradd postgres)"
        ) from exc
    return [runuser, "-u", "postgres", "--", *cmd]


def _run(cmd: list[str], what: str) -> str:
    proc = subprocess.run(cmd, capture_output=True, text=True, cwd="/")
    if proc.returncode != 0:
        raise StackError(f"{what} failed ({proc.returncode}):\n{proc.stdout}{proc.stderr}")
    return proc.stdout


def start_postgres(progress: Progress) -> str:
    """Initialise (once) and start PostgreSQL on 127.0.0.1; returns the meterline DSN."""
    cfg = get_settings(StackSettings)
    bindir = postgres_bin()
    root = _pg_root()
    data, sock = root / "data", root / "run"
    for d in (root, sock):
        d.mkdir(parents=True, exist_ok=True)
    # The password lives beside the data it opens (readable by us only), so a new clone or a
    # lost stack.json still reaches a database initialised earlier in the same place.
    secret = root / "meterline.password"
    state = read_stack_state()
    password = secret.read_text().strip() if secret.exists() else ""
    if not password and state.get("postgres_data") == str(data):
        password = str(state.get("postgres_password") or "")  # written by an older dev up
    if (data / "PG_VERSION").exists() and not password:
        if (data / "postmaster.pid").exists():
            raise StackError(
                f"PostgreSQL runs from {data} but its password is unknown here; stop it "
                f"(pg_ctl stop -D {data}) or set METERLINE_DATABASE_URL to reach it"
            )
        aside = root / f"data.orphaned-{int(time.time())}"
        progress(f"no password is known for {data}; moving it aside to {aside}")
        data.rename(aside)
    if not password:
        password = secrets.token_urlsafe(24)
    if not secret.exists():
        secret.write_text(password + "\n")
        secret.chmod(0o600)
    dsn = f"postgresql://meterline:{password}@127.0.0.1:{cfg.postgres_port}/meterline"
    if _is_root():
        shutil.chown(root, "postgres", "postgres")
        shutil.chown(sock, "postgres", "postgres")
        Path("/var/lib/meterline").chmod(0o755)
    if not (data / "PG_VERSION").exists():
        progress(f"initialising PostgreSQL in {data}")
        pwfile = root / "pwfile"
        pwfile.write_text(password + "\n")
        if _is_root():
            shutil.chown(pwfile, "postgres", "postgres")
        pwfile.chmod(0o600)
        try:
            _run(
                _as_pg_user(
                    [
                        str(bindir / "initdb"),
                        "-D",
                        str(data),
                        "-U",
                        "meterline",
                        f"--pwfile={pwfile}",
                        "--auth=scram-sha-256",
                        "-E",
                        "UTF8",
                        "--locale=C.UTF-8",
                    ]
                ),
                "initdb",
            )
        finally:
            pwfile.unlink(missing_ok=True)
        _save_state(postgres_password=password)
    _save_state(
        postgres_data=str(data),
        postgres_bin=str(bindir),
        database_url=dsn,
        postgres_password=password,
    )
    running = (
        subprocess.run(
            _as_pg_user([str(bindir / "pg_ctl"), "status", "-D", str(data)]),
            capture_output=True,
            cwd="/",
        ).returncode
        == 0
    )
    if running:
        progress(f"PostgreSQL already running on 127.0.0.1:{cfg.postgres_port}")
    else:
        if _port_open(cfg.postgres_port):
            raise StackError(
                f"port {cfg.postgres_port} is taken; set METERLINE_STACK_POSTGRES_PORT"
            )
        progress(f"starting PostgreSQL on 127.0.0.1:{cfg.postgres_port}")
        opts = (
            f"-p {cfg.postgres_port} -k {sock} -c listen_addresses=127.0.0.1 "
            "-c max_connections=200 -c shared_buffers=256MB"
        )
        _run(
            _as_pg_user(
                [
                    str(bindir / "pg_ctl"),
                    "start",
                    "-w",
                    "-t",
                    str(int(cfg.start_timeout_s)),
                    "-D",
                    str(data),
                    "-o",
                    opts,
                    "-l",
                    str(root / "postgres.log"),
                ]
            ),
            "pg_ctl start",
        )
    asyncio.run(_create_database(dsn))
    return dsn


async def _create_database(dsn: str) -> None:
    import asyncpg

    admin_dsn = dsn.rsplit("/", 1)[0] + "/postgres"
    conn = await asyncpg.connect(admin_dsn)
    try:
        if not await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = 'meterline'"):
            await conn.execute("CREATE DATABASE meterline")
    finally:
        await conn.close()


def restart_postgres(progress: Progress) -> None:
    """Restart our PostgreSQL with a fast shutdown (clients lose their connections)."""
    state = read_stack_state()
    data, bindir = state.get("postgres_data"), state.get("postgres_bin")
    if not data or not bindir:
        raise StackError("PostgreSQL of the local stack is not set up: meterline dev up")
    progress("restarting PostgreSQL")
    # -l as at start: without it the server inherits our pipes and pg_ctl never returns.
    log = str(Path(data).parent / "postgres.log")
    cmd = [str(Path(bindir) / "pg_ctl"), "restart", "-w", "-m", "fast", "-D", data, "-l", log]
    _run(_as_pg_user(cmd), "pg_ctl restart")


def restart_kafka(progress: Progress, *, down_s: float = 0.0) -> None:
    """Stop our broker, wait down_s, start it again (same data: topics and offsets kept)."""
    stop_kafka(progress)
    time.sleep(down_s)
    start_kafka(progress)


def stop_postgres(progress: Progress) -> None:
    """Stop our PostgreSQL (fast shutdown)."""
    state = read_stack_state()
    data, bindir = state.get("postgres_data"), state.get("postgres_bin")
    if not data or not bindir or not Path(data, "postmaster.pid").exists():
        progress("PostgreSQL not running")
        return
    progress("stopping PostgreSQL")
    _run(
        _as_pg_user([str(Path(bindir) / "pg_ctl"), "stop", "-w", "-m", "fast", "-D", data]),
        "pg_ctl stop",
    )


async def _migrate(dsn: str) -> tuple[int, int]:
    import asyncpg

    from schemas import migrate

    conn = await asyncpg.connect(dsn)
    try:
        applied = await migrate.up(conn)
        tables = await conn.fetchval(
            "SELECT count(*) FROM information_schema.tables WHERE table_schema = current_schema()"
        )
        return len(applied), int(tables)
    finally:
        await conn.close()


# ---------------------------------------------------------------- the stack


def up(progress: Progress) -> StackStatus:
    """Bring Kafka and PostgreSQL up, create topics, apply migrations. Harmless when up."""
    bootstrap, _ = start_kafka(progress)
    dsn = start_postgres(progress)
    applied, tables = asyncio.run(_migrate(dsn))
    progress(f"schema applied ({applied} new migrations, {tables} tables)")
    ensure_topics(bootstrap, progress)
    return status()


def down(progress: Progress, *, purge: bool = False) -> None:
    """Stop both services; with purge, delete their data too."""
    errors = []
    for stop in (stop_kafka, stop_postgres):
        try:
            stop(progress)
        except (StackError, OSError) as exc:
            errors.append(str(exc))
    if purge:
        shutil.rmtree(_kafka_dir(), ignore_errors=True)
        shutil.rmtree(_pg_root(), ignore_errors=True)
        stack_state_file().unlink(missing_ok=True)
        progress("data removed")
    if errors:
        raise StackError("; ".join(errors))


def status() -> StackStatus:
    """What runs where, from the state file and live checks."""
    cfg = get_settings(StackSettings)
    state = read_stack_state()
    kafka_pid = state.get("kafka_pid")
    kafka_ok = _pid_alive(kafka_pid, str(_kafka_dir() / "server.properties")) and _port_open(
        cfg.kafka_port
    )
    data = state.get("postgres_data") or ""
    pg_ok = bool(data) and Path(data, "postmaster.pid").exists() and _port_open(cfg.postgres_port)
    return StackStatus(
        kafka_bootstrap=state.get("kafka_bootstrap") or f"127.0.0.1:{cfg.kafka_port}",
        kafka_running=kafka_ok,
        kafka_pid=kafka_pid if kafka_ok else None,
        database_url=state.get("database_url") or "",
        postgres_running=pg_ok,
        postgres_data=data,
    )
