-- Back to one table each: the rows, ids and sequence kept; the uniqueness back on the tables.
ALTER TABLE credit_transactions RENAME TO credit_transactions_v9;
ALTER TABLE usage_events RENAME TO usage_events_v9;

CREATE TABLE credit_transactions (
    LIKE credit_transactions_v9 INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING IDENTITY
);
INSERT INTO credit_transactions (id, account_id, type, amount_micros, balance_after_micros,
                                 source, event_id, idempotency_key, reason, model, occurred_at,
                                 created_at, request_hash, priced)
OVERRIDING SYSTEM VALUE
SELECT id, account_id, type, amount_micros, balance_after_micros, source, event_id,
       idempotency_key, reason, model, occurred_at, created_at, request_hash, priced
  FROM credit_transactions_v9;

CREATE TABLE usage_events (LIKE usage_events_v9 INCLUDING DEFAULTS INCLUDING CONSTRAINTS);
INSERT INTO usage_events (source, event_id, account_id, occurred_at, model, provider,
                          input_tokens, cached_input_tokens, cache_write_tokens, output_tokens,
                          reasoning_tokens, requests, units, byok, cost_micros, price_version_id,
                          reported_cost, metadata, kafka_partition, kafka_offset, processed_at,
                          price_multiplier, byok_fee_pct)
SELECT source, event_id, account_id, occurred_at, model, provider, input_tokens,
       cached_input_tokens, cache_write_tokens, output_tokens, reasoning_tokens, requests, units,
       byok, cost_micros, price_version_id, reported_cost, metadata, kafka_partition,
       kafka_offset, processed_at, price_multiplier, byok_fee_pct
  FROM usage_events_v9;

DO $do$
DECLARE
    old_seq text := pg_get_serial_sequence('credit_transactions_v9', 'id');
    new_seq text := pg_get_serial_sequence('credit_transactions', 'id');
    last bigint;
    called boolean;
BEGIN
    EXECUTE format('SELECT last_value, is_called FROM %s', old_seq) INTO last, called;
    PERFORM setval(new_seq, last, called);
    DROP TABLE credit_transactions_v9;
    EXECUTE format('ALTER SEQUENCE %s RENAME TO credit_transactions_id_seq', new_seq);
END
$do$;
DROP TABLE usage_events_v9;

ALTER TABLE credit_transactions ADD CONSTRAINT credit_transactions_pkey PRIMARY KEY (id);
CREATE UNIQUE INDEX credit_transactions_usage_uniq ON credit_transactions (source, event_id)
    WHERE event_id IS NOT NULL;
CREATE UNIQUE INDEX credit_transactions_idem_uniq ON credit_transactions (account_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
CREATE INDEX credit_transactions_account_page_idx ON credit_transactions (account_id, id DESC);
CREATE INDEX credit_transactions_account_type_page_idx
    ON credit_transactions (account_id, type, id DESC);
ALTER TABLE usage_events ADD CONSTRAINT usage_events_pkey PRIMARY KEY (source, event_id);

ALTER TABLE coupon_redemptions ADD CONSTRAINT coupon_redemptions_transaction_id_fkey
    FOREIGN KEY (transaction_id) REFERENCES credit_transactions (id);

DROP FUNCTION IF EXISTS ensure_ledger_partitions(timestamptz, int);
DROP FUNCTION IF EXISTS ensure_month_partition(text, text, date);
DROP TABLE IF EXISTS credit_transaction_keys;
DROP TABLE IF EXISTS debited_events;
