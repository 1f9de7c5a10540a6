"""Fixtures of the LiteLLM tests: the API's fixtures, a served API, prices, LiteLLM offline."""

from __future__ import annotations

import os

# Before LiteLLM is imported: its model map from the package, not from GitHub (no network).
os.environ.setdefault("LITELLM_LOCAL_MODEL_COST_MAP", "True")

from collections.abc import AsyncIterator, Iterator  # noqa: E402

import asyncpg  # noqa: E402
import pytest  # noqa: E402

from api.settings import ApiSettings  # noqa: E402
from tests.integration.api.litellm.helpers import add_prices  # noqa: E402
from tests.integration.api_server import ApiServer  # noqa: E402
from tests.integration.worker import Worker  # noqa: E402


@pytest.fixture
async def served(api_settings: ApiSettings, db: asyncpg.Pool) -> AsyncIterator[ApiServer]:
    """The real `meterline api` on a free port, with the test models priced."""
    await add_prices(db)
    server = ApiServer(api_settings, METERLINE_PG_POOL_MAX="10").start_blocking()
    try:
        yield server
    finally:
        server.stop()


@pytest.fixture
def worker(api_settings: ApiSettings) -> Iterator[Worker]:
    """The real metering worker on the test's topics."""
    w = Worker(api_settings).start()
    try:
        yield w
    finally:
        w.stop()
