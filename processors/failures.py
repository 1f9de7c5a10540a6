"""Classify a failure where it is caught: the record is wrong (permanent) or a dependency is away.

Permanent failures are isolated and dead-lettered (DESIGN invariant 9); transient ones are
retried with capped backoff until they pass. What is neither (a bug, a missing table) is
`unknown`: the metering step treats it like a permanent failure of the records that cause it,
so one odd record can never stall a partition, and logs it with its traceback.
"""

from __future__ import annotations

import decimal
from typing import Literal

import asyncpg
from aiokafka.errors import KafkaError, MessageSizeTooLargeError

Kind = Literal["permanent", "transient", "unknown"]

# SQLSTATE classes caused by a value the database refuses: 22 data exception (numeric out of
# range, invalid byte sequence, datetime overflow, NUL in text), 23 integrity constraint
# (check violation), 54 program limit exceeded (index row or jsonb too large).
_PERMANENT_PG = (
    asyncpg.DataError,
    asyncpg.IntegrityConstraintViolationError,
    asyncpg.ProgramLimitExceededError,
)
# 08 connection exception, 57 operator intervention (admin shutdown, cannot connect now,
# query cancelled), 53 insufficient resources, 40 transaction rollback (serialization,
# deadlock): the server is away or busy, the record is fine.
_TRANSIENT_PG = (
    asyncpg.PostgresConnectionError,
    asyncpg.OperatorInterventionError,
    asyncpg.InsufficientResourcesError,
    asyncpg.TransactionRollbackError,
)
# Python cannot hold the record's values: an int past int64 for asyncpg, a date that
# overflows when moved to UTC, a string that cannot be encoded, decimal arithmetic limits.
_PERMANENT_PY = (OverflowError, UnicodeError, decimal.DecimalException, ValueError)


def classify(exc: BaseException) -> Kind:
    """Whether retrying can fix the failure (transient), cannot (permanent), or neither is known."""
    if isinstance(exc, _PERMANENT_PG):
        return "permanent"
    if isinstance(exc, _TRANSIENT_PG):
        return "transient"
    if isinstance(exc, MessageSizeTooLargeError):
        return "permanent"
    if isinstance(exc, asyncpg.InterfaceError | KafkaError | OSError | TimeoutError):
        # Connection closed under us, pool closing, broker away, socket errors, timeouts.
        return "transient"
    if isinstance(exc, asyncpg.InternalClientError):
        # The connection's protocol state, not the record: seen when the pool resets a
        # connection (after the batch committed) while the server shuts down ("cannot switch
        # to state 15; another operation (2) is in progress"); a new connection works.
        return "transient"
    if isinstance(exc, asyncpg.PostgresError):
        return "unknown"
    if isinstance(exc, _PERMANENT_PY):
        return "permanent"
    return "unknown"


def describe(exc: BaseException) -> str:
    """A one-line message for the DLQ header: the exception's class and text."""
    text = str(exc).replace("\n", " ").strip()
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__
