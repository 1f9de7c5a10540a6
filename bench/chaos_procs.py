"""The processes the chaos harness runs and hurts: `meterline worker`s and `meterline api`."""

from __future__ import annotations

import asyncio
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx

from schemas.settings import CommonSettings, read_stack_state


def local_stack_or_fail(settings: CommonSettings) -> dict[str, object]:
    """The stack.json of METERLINE_HOME, checked to be the services these settings talk to.

    The harness restarts Kafka and Postgres: it must only ever touch a stack it can restart.
    """
    state = read_stack_state()
    if not state.get("kafka_bootstrap") or not state.get("postgres_data"):
        raise RuntimeError(
            "no local stack recorded in $METERLINE_HOME/stack.json: the chaos harness restarts "
            "Kafka and Postgres, so it runs only on a stack started by `meterline dev up`"
        )
    pg_at = str(state.get("database_url", "")).split("@")[-1].split("/")[0]
    if settings.kafka_bootstrap != state["kafka_bootstrap"] or pg_at not in settings.database_url:
        raise RuntimeError(
            f"METERLINE_KAFKA_BOOTSTRAP / METERLINE_DATABASE_URL point elsewhere than the local "
            f"stack ({state['kafka_bootstrap']}, {pg_at}); unset them to run the chaos harness"
        )
    return state


def free_port() -> int:
    """A loopback TCP port nothing listens on now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Child:
    """One `meterline ...` subprocess in its own session, logging to a file."""

    def __init__(self, name: str, args: list[str], env: dict[str, str], log_dir: Path) -> None:
        self.name = name
        self.args = args
        self.env = env
        self.log_path = log_dir / f"{name}.log"
        self.proc: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> Child:
        log = self.log_path.open("ab")
        log.write(f"\n=== start {self.starts + 1} at {time.strftime('%H:%M:%S')} ===\n".encode())
        log.flush()
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "meterline", *self.args],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        log.close()  # the child holds its own descriptor
        self.starts += 1
        return self

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None

    def kill(self) -> None:
        """SIGKILL the process group: no shutdown, no commit."""
        if self.proc is not None and self.alive():
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()

    def terminate(self, timeout: float) -> tuple[float, bool]:
        """SIGTERM, wait up to timeout; (seconds it took, whether it exited by itself)."""
        if self.proc is None or not self.alive():
            return 0.0, True
        started = time.monotonic()
        os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(timeout=timeout)
            return time.monotonic() - started, True
        except subprocess.TimeoutExpired:
            self.kill()
            return time.monotonic() - started, False


def child_env(settings: CommonSettings, **extra: str) -> dict[str, str]:
    """The environment that points a `meterline` subprocess at the harness's database/topics."""
    return settings.as_env(**extra)


def create_admin_key(env: dict[str, str]) -> str:
    """`meterline admin create-key --scope admin` with the harness's environment; the key."""
    done = subprocess.run(
        [sys.executable, "-m", "meterline", "admin", "create-key", "--scope", "admin"],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )
    if done.returncode != 0 or not done.stdout.strip():
        raise RuntimeError(f"create-key failed: {done.stderr.strip() or done.stdout.strip()}")
    return done.stdout.strip().splitlines()[-1].strip()


async def wait_healthy(api: Child, base_url: str, timeout: float = 90) -> None:
    """Until GET /healthz answers 200 (or fail with the API's log)."""
    deadline = time.monotonic() + timeout
    async with httpx.AsyncClient(base_url=base_url, timeout=2) as client:
        while time.monotonic() < deadline:
            if not api.alive():
                break
            try:
                if (await client.get("/healthz")).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            await asyncio.sleep(0.3)
    tail = api.log_path.read_text(errors="replace")[-3000:] if api.log_path.exists() else ""
    raise RuntimeError(f"the API did not come up on {base_url}\n{tail}")
