"""Kafka topic names and their defaults (the names themselves are settings)."""

USAGE_EVENTS = "usage.events"
USAGE_DLQ = "usage.dlq"
CREDIT_ALERTS = "credit.alerts"
USAGE_EVENTS_PARTITIONS = 12
# A usage.events record larger than this is dead-lettered as `oversized` (a setting's default).
MAX_EVENT_BYTES = 64 * 1024

# DLQ records keep the original bytes as value; the reason travels in these headers.
DLQ_HEADER_REASON = "meterline.reason"
DLQ_HEADER_MESSAGE = "meterline.message"
DLQ_HEADER_TOPIC = "meterline.source_topic"
DLQ_HEADER_PARTITION = "meterline.source_partition"
DLQ_HEADER_OFFSET = "meterline.source_offset"
# Set (to the original size in bytes) when the DLQ value keeps only a prefix of the record.
DLQ_HEADER_TRUNCATED = "meterline.truncated"
