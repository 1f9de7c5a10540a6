-- Grants and holds (DESIGN.md "Grants", "Reservations", invariants 7 and 8).
-- Every credit is a grant; every debit burns grants in a fixed order and records the burn;
-- what no grant covers is the account's overdraft. balance = Σ remaining − overdraft.

ALTER TABLE credit_transactions DROP CONSTRAINT credit_transactions_type_check;
ALTER TABLE credit_transactions ADD CONSTRAINT credit_transactions_type_check CHECK (type IN
    ('allocation', 'usage', 'deduction', 'coupon', 'refund', 'adjustment', 'expiration'));

-- What debits took that no grant covered; the next grant repays it first.
ALTER TABLE user_credits ADD COLUMN overdraft_micros bigint NOT NULL DEFAULT 0
    CHECK (overdraft_micros >= 0);

CREATE TABLE credit_grants (
    grant_id          bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account_id        text NOT NULL,
    category          text NOT NULL CHECK (category IN ('paid', 'promotional')),
    amount_micros     bigint NOT NULL CHECK (amount_micros > 0),
    remaining_micros  bigint NOT NULL CHECK (remaining_micros BETWEEN 0 AND amount_micros),
    priority          smallint NOT NULL DEFAULT 50 CHECK (priority BETWEEN 0 AND 100),
    effective_at      timestamptz NOT NULL DEFAULT now(),
    expires_at        timestamptz CHECK (expires_at > effective_at),
    applies_to        text[] CHECK (cardinality(applies_to) > 0),
    -- The ledger row that brought the credit in (null: an opening grant of migration 0006).
    transaction_id    bigint UNIQUE,
    reason            text,
    created_at        timestamptz NOT NULL DEFAULT now()
);
-- The grants a debit may burn: the account's with something left.
CREATE INDEX credit_grants_open_idx ON credit_grants (account_id, priority, grant_id)
    WHERE remaining_micros > 0;
-- The expiry timer's scan.
CREATE INDEX credit_grants_expiry_idx ON credit_grants (expires_at)
    WHERE remaining_micros > 0 AND expires_at IS NOT NULL;
CREATE INDEX credit_grants_account_idx ON credit_grants (account_id, grant_id DESC);

-- Which grants each ledger row burned: a debit (kind debit), a grant repaying the overdraft
-- (kind overdraft, transaction_id = the grant's own row), an expiration (kind expiry).
-- The batch debit writes a row per usage debit: like credit_transactions (0002), no foreign
-- key (a trigger and a key-share lock per row; the ledger module writes both sides in one
-- transaction) and one index, the key, read by transaction (which grants paid a row).
-- Reconcile reads it whole.
CREATE TABLE grant_burns (
    transaction_id  bigint NOT NULL,
    grant_id        bigint NOT NULL,
    account_id      text NOT NULL,
    kind            text NOT NULL CHECK (kind IN ('debit', 'overdraft', 'expiry')),
    amount_micros   bigint NOT NULL CHECK (amount_micros > 0),
    PRIMARY KEY (transaction_id, grant_id)
);
-- A grant expires once, whatever the number of timers or reruns.
CREATE UNIQUE INDEX grant_burns_expiry_uniq ON grant_burns (grant_id) WHERE kind = 'expiry';

-- Holds (reservations): credit set aside before a call; available = balance − active holds.
CREATE TABLE credit_holds (
    reservation_id          text PRIMARY KEY,
    account_id              text NOT NULL,
    amount_micros           bigint NOT NULL CHECK (amount_micros > 0),
    status                  text NOT NULL DEFAULT 'active'
                              CHECK (status IN ('active', 'released', 'settled', 'expired')),
    expires_at              timestamptz NOT NULL,
    idempotency_key         text NOT NULL CHECK (length(idempotency_key) BETWEEN 1 AND 200),
    request_hash            bytea NOT NULL,
    metadata                jsonb,
    available_after_micros  bigint NOT NULL,
    created_at              timestamptz NOT NULL DEFAULT now(),
    closed_at               timestamptz,
    -- The usage debit that settled it (at most one: invariant 8).
    settled_transaction_id  bigint UNIQUE,
    settled_source          text,
    settled_event_id        text,
    UNIQUE (account_id, idempotency_key),
    CHECK ((status = 'settled') = (settled_transaction_id IS NOT NULL)),
    CHECK ((status = 'active') = (closed_at IS NULL))
);
CREATE INDEX credit_holds_active_idx ON credit_holds (account_id, expires_at)
    WHERE status = 'active';

-- Upgrade path: every account's balance becomes an opening paid grant (or an overdraft), so
-- invariant 7 holds as soon as this migration commits.
INSERT INTO credit_grants (account_id, category, amount_micros, remaining_micros, priority,
                           effective_at, reason)
SELECT account_id, 'paid', balance_micros, balance_micros, 50, created_at,
       'opening balance (migration 0006)'
FROM user_credits WHERE balance_micros > 0 ORDER BY account_id;
UPDATE user_credits SET overdraft_micros = -balance_micros WHERE balance_micros < 0;
