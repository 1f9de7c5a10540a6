-- The ledger ready to grow: credit_transactions and usage_events partitioned by month
-- (declarative RANGE partitioning), converting a populated database in place.
--
-- Partition keys. credit_transactions by created_at: always about now when a row is written,
-- so writes go to the current month and a month's rows are the rows recorded in it (history
-- pages read by account and id, balance_at by account and created_at). usage_events by
-- occurred_at: the usage fact as it happened, the time that chooses its price and its month of
-- spend (monthly_spend, caps), the time reconcile and stats windows are expressed in, and what
-- retention of usage detail would go by. An event may be far in the past (bounds allow
-- 2000-01-01 .. now + 300 s): months without a partition land in the DEFAULT partition of
-- each table, which only ever catches old or odd months because partitions are created ahead
-- (ensure_ledger_partitions: the migration, `meterline migrate up` and the worker's timer).
--
-- A unique index of a partitioned table must include the partition key, so the global
-- uniqueness the ledger relies on moves to two small tables, written in the same statement as
-- the rows they guard:
--   debited_events (source, event_id): a usage event debits at most once (invariant 3). The
--     batch inserts the keys ON CONFLICT DO NOTHING and writes usage and ledger rows only for
--     the keys that were new; a concurrent writer of the same event waits on this primary key
--     and then sees the conflict, as it did on usage_events' primary key.
--   credit_transaction_keys (account_id, idempotency_key) -> (transaction_id, created_at): the
--     ledger's idempotency (API writes, expiry's `expiration:grant:<id>`, reconcile's
--     adjustments); lookups by key find the row through it, in one partition.

CREATE TABLE debited_events (
    source    text NOT NULL,
    event_id  text NOT NULL,
    PRIMARY KEY (source, event_id)
);
-- Debited is what either table says: a ledger debit whose usage row was lost still counts.
INSERT INTO debited_events (source, event_id)
SELECT source, event_id FROM usage_events
UNION
SELECT source, event_id FROM credit_transactions WHERE event_id IS NOT NULL;

CREATE TABLE credit_transaction_keys (
    account_id       text NOT NULL,
    idempotency_key  text NOT NULL,
    transaction_id   bigint NOT NULL,
    created_at       timestamptz NOT NULL,
    PRIMARY KEY (account_id, idempotency_key)
);
INSERT INTO credit_transaction_keys (account_id, idempotency_key, transaction_id, created_at)
SELECT account_id, idempotency_key, id, created_at FROM credit_transactions
 WHERE idempotency_key IS NOT NULL;

-- A foreign key to a partitioned table needs a unique key including the partition key; like
-- the ledger's own (0002) and grant_burns' (0006), this one goes: coupons.py writes the ledger
-- row and the redemption in one transaction.
ALTER TABLE coupon_redemptions DROP CONSTRAINT IF EXISTS coupon_redemptions_transaction_id_fkey;

-- One month's partition of a table partitioned by a timestamptz, idempotently. Rows of that
-- month already in the DEFAULT partition (a month nobody created in time) move into it first,
-- under the default's lock: Postgres refuses a partition whose range has rows in DEFAULT.
-- The partition is made apart and attached (ATTACH takes SHARE UPDATE EXCLUSIVE on the parent,
-- where CREATE TABLE ... PARTITION OF would take ACCESS EXCLUSIVE and stop every reader).
CREATE FUNCTION ensure_month_partition(p_parent text, p_key text, p_month date)
RETURNS boolean LANGUAGE plpgsql AS $fn$
DECLARE
    v_name text := format('%s_y%sm%s', p_parent, to_char(p_month, 'YYYY'), to_char(p_month, 'MM'));
    v_default text := p_parent || '_default';
    v_from timestamptz := date_trunc('month', p_month::timestamp) AT TIME ZONE 'UTC';
    v_to timestamptz := (date_trunc('month', p_month::timestamp) + interval '1 month')
                        AT TIME ZONE 'UTC';
BEGIN
    IF to_regclass(v_name) IS NOT NULL THEN
        RETURN false;
    END IF;
    EXECUTE format('CREATE TABLE %I (LIKE %I INCLUDING DEFAULTS INCLUDING CONSTRAINTS)',
                   v_name, p_parent);
    IF to_regclass(v_default) IS NOT NULL THEN
        EXECUTE format('LOCK TABLE %I IN ACCESS EXCLUSIVE MODE', v_default);
        EXECUTE format('WITH moved AS (DELETE FROM %I WHERE %I >= $1 AND %I < $2 RETURNING *)'
                       ' INSERT INTO %I SELECT * FROM moved', v_default, p_key, p_key, v_name)
            USING v_from, v_to;
    END IF;
    EXECUTE format('ALTER TABLE %I ATTACH PARTITION %I FOR VALUES FROM (%L) TO (%L)',
                   p_parent, v_name, v_from, v_to);
    RETURN true;
END
$fn$;

-- The ledger's partitions from `at`'s month to months_ahead after it (UTC months), for both
-- tables; returns how many were created. Serialised (two workers' timers, a migrate).
CREATE FUNCTION ensure_ledger_partitions(p_at timestamptz DEFAULT now(),
                                         p_months_ahead int DEFAULT 2)
RETURNS int LANGUAGE plpgsql AS $fn$
DECLARE
    v_first date := date_trunc('month', p_at AT TIME ZONE 'UTC')::date;
    v_created int := 0;
    v_month date;
BEGIN
    PERFORM pg_advisory_xact_lock(hashtext('meterline ledger partitions'));
    FOR i IN 0 .. p_months_ahead LOOP
        v_month := (v_first + make_interval(months => i))::date;
        v_created := v_created
            + ensure_month_partition('credit_transactions', 'created_at', v_month)::int
            + ensure_month_partition('usage_events', 'occurred_at', v_month)::int;
    END LOOP;
    RETURN v_created;
END
$fn$;

-- ---- the conversion ---------------------------------------------------------------------
-- New partitioned tables with the same columns, in the same order, with the same defaults,
-- NOT NULL and CHECK constraints (LIKE), the rows moved in with their ids, then the indexes
-- the reads use, built once over the loaded rows.
ALTER TABLE credit_transactions RENAME TO credit_transactions_v8;
ALTER TABLE usage_events RENAME TO usage_events_v8;

CREATE TABLE credit_transactions (
    LIKE credit_transactions_v8 INCLUDING DEFAULTS INCLUDING CONSTRAINTS INCLUDING IDENTITY
) PARTITION BY RANGE (created_at);
CREATE TABLE credit_transactions_default PARTITION OF credit_transactions DEFAULT;

CREATE TABLE usage_events (
    LIKE usage_events_v8 INCLUDING DEFAULTS INCLUDING CONSTRAINTS
) PARTITION BY RANGE (occurred_at);
CREATE TABLE usage_events_default PARTITION OF usage_events DEFAULT;

-- Monthly partitions over the ledger's life (its first row's month) to two months ahead, for
-- both tables; usage that occurred before the ledger's first row stays in usage's DEFAULT.
DO $do$
DECLARE
    m date := date_trunc('month', coalesce(
        (SELECT min(created_at) FROM credit_transactions_v8), now()) AT TIME ZONE 'UTC')::date;
BEGIN
    WHILE m <= date_trunc('month', now() AT TIME ZONE 'UTC') + interval '2 months' LOOP
        PERFORM ensure_month_partition('credit_transactions', 'created_at', m);
        PERFORM ensure_month_partition('usage_events', 'occurred_at', m);
        m := (m + interval '1 month')::date;
    END LOOP;
END
$do$;

INSERT INTO credit_transactions (id, account_id, type, amount_micros, balance_after_micros,
                                 source, event_id, idempotency_key, reason, model, occurred_at,
                                 created_at, request_hash, priced)
OVERRIDING SYSTEM VALUE
SELECT id, account_id, type, amount_micros, balance_after_micros, source, event_id,
       idempotency_key, reason, model, occurred_at, created_at, request_hash, priced
  FROM credit_transactions_v8;

INSERT INTO usage_events (source, event_id, account_id, occurred_at, model, provider,
                          input_tokens, cached_input_tokens, cache_write_tokens, output_tokens,
                          reasoning_tokens, requests, units, byok, cost_micros, price_version_id,
                          reported_cost, metadata, kafka_partition, kafka_offset, processed_at,
                          price_multiplier, byok_fee_pct)
SELECT source, event_id, account_id, occurred_at, model, provider, input_tokens,
       cached_input_tokens, cache_write_tokens, output_tokens, reasoning_tokens, requests, units,
       byok, cost_micros, price_version_id, reported_cost, metadata, kafka_partition,
       kafka_offset, processed_at, price_multiplier, byok_fee_pct
  FROM usage_events_v8;

-- Ids keep increasing from where the old sequence stood (not from max(id): a deleted newest
-- row's id is never given again), and the sequence keeps its old name.
DO $do$
DECLARE
    old_seq text := pg_get_serial_sequence('credit_transactions_v8', 'id');
    new_seq text := pg_get_serial_sequence('credit_transactions', 'id');
    last bigint;
    called boolean;
BEGIN
    EXECUTE format('SELECT last_value, is_called FROM %s', old_seq) INTO last, called;
    PERFORM setval(new_seq, last, called);
    DROP TABLE credit_transactions_v8;
    EXECUTE format('ALTER SEQUENCE %s RENAME TO credit_transactions_id_seq', new_seq);
END
$do$;
DROP TABLE usage_events_v8;

-- Lookups by id (a hold's settling row, a grant's credit row, reconcile's hold check).
ALTER TABLE credit_transactions ADD CONSTRAINT credit_transactions_pkey
    PRIMARY KEY (id, created_at);
-- Keyset pages of an account's history, newest first, optionally by type (api/queries).
CREATE INDEX credit_transactions_account_page_idx ON credit_transactions (account_id, id DESC);
CREATE INDEX credit_transactions_account_type_page_idx
    ON credit_transactions (account_id, type, id DESC);
-- Reconcile reads the terms a debited event was rated with by (source, event_id).
ALTER TABLE usage_events ADD CONSTRAINT usage_events_pkey
    PRIMARY KEY (source, event_id, occurred_at);

ANALYZE credit_transactions, usage_events, debited_events, credit_transaction_keys;
