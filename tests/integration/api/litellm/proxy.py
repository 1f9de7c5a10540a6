"""The real LiteLLM proxy server (`litellm --config deploy/litellm/config.yaml`) as a subprocess,
metered by MeterlineCallback against the test's API and topics."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import uuid
from pathlib import Path

from schemas.settings import CommonSettings
from tests.integration.api_server import free_port, wait_http

CONFIG = Path(__file__).parents[4] / "deploy" / "litellm" / "config.yaml"


class LiteLLMProxy:
    """`litellm --config … --port N`; restartable on the same port and spool."""

    def __init__(
        self, settings: CommonSettings, api_url: str, api_key: str, spool: Path, **env: str
    ) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.master_key = f"sk-meterline-test-{uuid.uuid4().hex}"
        self.env = dict(os.environ)
        self.env.update(
            LITELLM_MASTER_KEY=self.master_key,
            LITELLM_LOCAL_MODEL_COST_MAP="True",
            METERLINE_API_URL=api_url,
            METERLINE_API_KEY=api_key,
            METERLINE_KAFKA_BOOTSTRAP=settings.kafka_bootstrap,
            METERLINE_TOPIC_USAGE_EVENTS=settings.topic_usage_events,
            METERLINE_TOPIC_USAGE_DLQ=settings.topic_usage_dlq,
            METERLINE_LITELLM_SPOOL_PATH=str(spool),
        )
        self.env.update(env)
        self.log_path = f"/tmp/meterline-test-litellm-{uuid.uuid4().hex[:8]}.log"
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 90) -> LiteLLMProxy:
        log = open(self.log_path, "ab")  # noqa: SIM115
        litellm_bin = Path(sys.executable).with_name("litellm")
        self.proc = subprocess.Popen(
            [str(litellm_bin), "--config", str(CONFIG), "--port", str(self.port)],
            env=self.env,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
        wait_http(f"{self.url}/health/liveliness", self.proc, self.log_path, timeout)
        return self

    def stop(self) -> None:
        """SIGTERM: the graceful shutdown a deploy or a restart does."""
        if self.proc and self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait()

    def log(self) -> str:
        with open(self.log_path, errors="replace") as f:
            return f.read()[-6000:]
