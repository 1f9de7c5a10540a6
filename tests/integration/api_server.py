"""Run the real `meterline api` (uvicorn) as a subprocess on a free loopback port."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid

import httpx
from cryptography.fernet import Fernet

from schemas.settings import CommonSettings
from tests.integration.conftest import env_for
from tests.integration.tcp_proxy import free_port

__all__ = ["ApiServer", "free_port", "wait_http"]


def wait_http(url: str, proc: subprocess.Popen[bytes], log_path: str, timeout: float) -> None:
    """Poll url until it answers 200; fail with the log when the process dies or time is up."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            break
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.2)
    with open(log_path, errors="replace") as f:
        tail = f.read()[-4000:]
    raise AssertionError(f"{url} did not come up (exit {proc.poll()}):\n{tail}")


class ApiServer:
    """`meterline api` on the test's database and topics, at http://127.0.0.1:<free port>."""

    def __init__(self, settings: CommonSettings, **env: str) -> None:
        self.port = free_port()
        self.base_url = self.url = f"http://127.0.0.1:{self.port}"
        settings_env = {
            "METERLINE_ENCRYPTION_KEYS": Fernet.generate_key().decode(),
            "METERLINE_PG_POOL_MIN": "1",
            "METERLINE_PG_POOL_MAX": "5",
            # A key revoked or re-tiered by a test takes effect at once.
            "METERLINE_API_KEY_CACHE_SECONDS": "0",
        }
        settings_env.update(env)
        self.env = env_for(settings, **settings_env)
        self.log_path = f"/tmp/meterline-test-api-{uuid.uuid4().hex[:8]}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def _spawn(self) -> subprocess.Popen[bytes]:
        log = open(self.log_path, "ab")  # noqa: SIM115 - owned by the child
        return subprocess.Popen(
            [sys.executable, "-m", "meterline", "api", "--port", str(self.port)],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )

    def start_blocking(self, timeout: float = 60) -> ApiServer:
        """start() for callers outside an event loop (or that must block it)."""
        self.proc = self._spawn()
        wait_http(f"{self.url}/healthz", self.proc, self.log_path, timeout)
        return self

    async def start(self, timeout: float = 60) -> ApiServer:
        """Start the server and wait until /healthz answers (or fail with its log)."""
        self.proc = self._spawn()
        deadline = time.monotonic() + timeout
        async with httpx.AsyncClient(base_url=self.base_url) as client:
            while time.monotonic() < deadline:
                if self.proc.poll() is not None:
                    break
                try:
                    if (await client.get("/healthz")).status_code == 200:
                        return self
                except httpx.HTTPError:
                    pass
                await asyncio.sleep(0.2)
        self.stop()
        raise AssertionError(f"the API did not come up on {self.base_url}\n{self.log()}")

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()

    def log(self) -> str:
        try:
            with open(self.log_path) as f:
                return f.read()[-5000:]
        except OSError:
            return ""
