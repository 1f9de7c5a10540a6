"""The real `meterline api` as a subprocess on a free port, for clients in other processes."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
import uuid

import httpx

from schemas.settings import CommonSettings
from tests.integration.conftest import env_for


def free_port() -> int:
    """A TCP port nobody listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


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
    """`meterline api --port N` with the test's settings; `url` once started."""

    def __init__(self, settings: CommonSettings, **env: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = env_for(settings, **env)
        self.log_path = f"/tmp/meterline-test-api-{uuid.uuid4().hex[:8]}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 60) -> ApiServer:
        log = open(self.log_path, "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "meterline", "api", "--port", str(self.port)]
            + ["--log-level", "warning", "--no-access-log"],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_http(f"{self.url}/healthz", self.proc, self.log_path, timeout)
        return self

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()
