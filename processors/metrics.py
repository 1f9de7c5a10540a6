"""The worker's Prometheus metrics, served on METERLINE_WORKER_METRICS_PORT."""

from __future__ import annotations

from prometheus_client import Counter, Gauge, Histogram

EVENTS_METERED = Counter(
    "meterline_events_metered_total", "Usage events debited to the ledger (first time)"
)
DUPLICATES = Counter(
    "meterline_duplicate_events_total", "Usage events recognised as already debited"
)
DLQ_RECORDS = Counter(
    "meterline_dlq_records_total", "Records sent to usage.dlq, by reason", ["reason"]
)
BATCH_SECONDS = Histogram(
    "meterline_batch_seconds",
    "Time to meter one batch (validate, price, debit, dead-letter)",
    buckets=(0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
)
PARTITION_FAILING = Gauge(
    "meterline_partition_failing_seconds",
    "How long the batch holding this partition has been failing transiently (0: healthy)",
    ["partition"],
)
CONSUMER_LAG = Gauge(
    "meterline_consumer_lag",
    "Records on usage.events after the worker's committed position, by partition",
    ["partition"],
)
OUTBOX_BACKLOG = Gauge(
    "meterline_outbox_backlog", "Alerts queued in the outbox and not yet published"
)
