"""Failures are classified where they are caught: the record's fault, or a dependency away."""

from __future__ import annotations

import asyncpg
import pytest
from aiokafka.errors import KafkaConnectionError, MessageSizeTooLargeError

from processors.failures import classify


@pytest.mark.parametrize(
    "exc",
    [
        asyncpg.ConnectionDoesNotExistError("connection was closed in the middle of operation"),
        asyncpg.CannotConnectNowError("the database system is shutting down"),
        asyncpg.AdminShutdownError("terminating connection due to administrator command"),
        asyncpg.InterfaceError("pool is closing"),
        # What the pool's reset raised on a connection of a server shutting down, after the
        # batch had committed; classified unknown, it dead-lettered an event already debited
        # (chaos run a5050f36, Postgres restarted mid-stream).
        asyncpg.InternalClientError(
            "cannot switch to state 15; another operation (2) is in progress"
        ),
        KafkaConnectionError("broker away"),
        ConnectionRefusedError(111, "Connection refused"),
        TimeoutError(),
    ],
)
def test_a_dependency_away_is_transient(exc: BaseException) -> None:
    assert classify(exc) == "transient"


@pytest.mark.parametrize(
    "exc",
    [
        asyncpg.NumericValueOutOfRangeError("bigint out of range"),
        asyncpg.CheckViolationError("violates check constraint"),
        asyncpg.CharacterNotInRepertoireError("invalid byte sequence"),
        OverflowError("int too big to convert"),
        MessageSizeTooLargeError(),
    ],
)
def test_a_value_that_cannot_pass_is_permanent(exc: BaseException) -> None:
    assert classify(exc) == "permanent"


def test_anything_else_is_unknown() -> None:
    assert classify(RuntimeError("a bug")) == "unknown"
