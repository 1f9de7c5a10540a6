-- meterline ledger schema v1. Amounts are BIGINT micro-credits; prices are exact NUMERIC
-- credits per million tokens (or per unit / request). See processors/ledger/README.md.

CREATE TABLE tiers (
    name                        text PRIMARY KEY CHECK (name ~ '^[a-z0-9_-]{1,32}$'),
    monthly_allocation_micros   bigint NOT NULL DEFAULT 0 CHECK (monthly_allocation_micros >= 0),
    price_multiplier            numeric(12, 6) NOT NULL DEFAULT 1 CHECK (price_multiplier > 0),
    default_monthly_cap_micros  bigint CHECK (default_monthly_cap_micros > 0),
    rate_limit                  text NOT NULL DEFAULT '50/second',
    updated_at                  timestamptz NOT NULL DEFAULT now()
);

INSERT INTO tiers (name, monthly_allocation_micros, price_multiplier, default_monthly_cap_micros, rate_limit)
VALUES ('free', 1000000, 1, 5000000, '20/second'),
       ('pro', 0, 1, NULL, '200/second'),
       ('enterprise', 0, 0.9, NULL, '2000/second');

-- One row per account: the balance and its state. balance = sum of the account's ledger rows.
CREATE TABLE user_credits (
    account_id            text PRIMARY KEY CHECK (length(account_id) BETWEEN 1 AND 128),
    balance_micros        bigint NOT NULL DEFAULT 0,
    tier                  text NOT NULL DEFAULT 'free' REFERENCES tiers (name),
    monthly_cap_micros    bigint CHECK (monthly_cap_micros > 0),
    blocked               boolean NOT NULL DEFAULT false,
    blocked_reason        text,
    low_balance_alerted   boolean NOT NULL DEFAULT false,
    created_at            timestamptz NOT NULL DEFAULT now(),
    updated_at            timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX user_credits_balance_idx ON user_credits (balance_micros);

-- Spend per account per calendar month (UTC), and the highest cap threshold already alerted.
CREATE TABLE monthly_spend (
    account_id        text NOT NULL REFERENCES user_credits (account_id) ON DELETE CASCADE,
    month             date NOT NULL CHECK (extract(day FROM month) = 1),
    spend_micros      bigint NOT NULL DEFAULT 0,
    alerted_pct       smallint NOT NULL DEFAULT 0,
    PRIMARY KEY (account_id, month)
);
CREATE INDEX monthly_spend_month_spend_idx ON monthly_spend (month, spend_micros DESC);

-- The transaction ledger. amount_micros is signed (debits negative); every row carries the
-- balance after it. Usage debits carry (source, event_id), API writes an idempotency key.
CREATE TABLE credit_transactions (
    id                    bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account_id            text NOT NULL REFERENCES user_credits (account_id),
    type                  text NOT NULL CHECK (type IN
                            ('allocation', 'usage', 'deduction', 'coupon', 'refund', 'adjustment')),
    amount_micros         bigint NOT NULL,
    balance_after_micros  bigint NOT NULL,
    source                text,
    event_id              text,
    idempotency_key       text,
    reason                text,
    model                 text,
    occurred_at           timestamptz,
    created_at            timestamptz NOT NULL DEFAULT now(),
    CHECK ((type = 'usage') = (event_id IS NOT NULL AND source IS NOT NULL))
);
-- A usage event debits at most once (ledger invariant 3).
CREATE UNIQUE INDEX credit_transactions_usage_uniq ON credit_transactions (source, event_id)
    WHERE event_id IS NOT NULL;
CREATE UNIQUE INDEX credit_transactions_idem_uniq ON credit_transactions (account_id, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
-- Keyset pages of an account's history, newest first, optionally by type.
CREATE INDEX credit_transactions_account_page_idx ON credit_transactions (account_id, id DESC);
CREATE INDEX credit_transactions_account_type_page_idx
    ON credit_transactions (account_id, type, id DESC);
CREATE INDEX credit_transactions_created_idx ON credit_transactions (created_at);

-- The usage fact table: one row per debited event, with its priced cost.
CREATE TABLE usage_events (
    source               text NOT NULL,
    event_id             text NOT NULL,
    account_id           text NOT NULL,
    occurred_at          timestamptz NOT NULL,
    model                text NOT NULL,
    provider             text,
    input_tokens         bigint NOT NULL DEFAULT 0,
    cached_input_tokens  bigint NOT NULL DEFAULT 0,
    cache_write_tokens   bigint NOT NULL DEFAULT 0,
    output_tokens        bigint NOT NULL DEFAULT 0,
    reasoning_tokens     bigint NOT NULL DEFAULT 0,
    requests             bigint NOT NULL DEFAULT 1,
    units                jsonb,
    byok                 boolean NOT NULL DEFAULT false,
    cost_micros          bigint NOT NULL CHECK (cost_micros >= 0),
    price_version_id     bigint,
    reported_cost        numeric,
    metadata             jsonb,
    kafka_partition      integer,
    kafka_offset         bigint,
    processed_at         timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source, event_id)
);
CREATE INDEX usage_events_account_time_idx ON usage_events (account_id, occurred_at);
CREATE INDEX usage_events_occurred_idx ON usage_events (occurred_at);

-- Redeliveries and republications that were recognised and not debited again.
CREATE TABLE duplicate_events (
    source        text NOT NULL,
    event_id      text NOT NULL,
    times_seen    bigint NOT NULL DEFAULT 1,
    last_seen_at  timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (source, event_id)
);

-- Daily rollup for usage stats and analytics (UTC days of occurred_at).
CREATE TABLE usage_daily (
    account_id            text NOT NULL,
    day                   date NOT NULL,
    model                 text NOT NULL,
    provider              text NOT NULL DEFAULT '',
    events                bigint NOT NULL DEFAULT 0,
    input_tokens          bigint NOT NULL DEFAULT 0,
    cached_input_tokens   bigint NOT NULL DEFAULT 0,
    cache_write_tokens    bigint NOT NULL DEFAULT 0,
    output_tokens         bigint NOT NULL DEFAULT 0,
    reasoning_tokens      bigint NOT NULL DEFAULT 0,
    requests              bigint NOT NULL DEFAULT 0,
    cost_micros           bigint NOT NULL DEFAULT 0,
    PRIMARY KEY (account_id, day, model, provider)
);
CREATE INDEX usage_daily_day_idx ON usage_daily (day, account_id);

-- The versioned price catalog: the version in force at an event's occurred_at prices it.
CREATE TABLE price_versions (
    id                      bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    model                   text NOT NULL,
    provider                text,
    effective_from          timestamptz NOT NULL,
    input_per_mtok          numeric NOT NULL DEFAULT 0 CHECK (input_per_mtok >= 0),
    cached_input_per_mtok   numeric CHECK (cached_input_per_mtok >= 0),
    cache_write_per_mtok    numeric CHECK (cache_write_per_mtok >= 0),
    output_per_mtok         numeric NOT NULL DEFAULT 0 CHECK (output_per_mtok >= 0),
    per_request             numeric NOT NULL DEFAULT 0 CHECK (per_request >= 0),
    units                   jsonb NOT NULL DEFAULT '{}'::jsonb,
    created_at              timestamptz NOT NULL DEFAULT now(),
    created_by              text,
    UNIQUE (model, effective_from)
);

-- API keys, stored as SHA-256 of the secret (the secret has >= 256 bits of entropy).
CREATE TABLE api_keys (
    key_id        text PRIMARY KEY,
    key_hash      bytea NOT NULL UNIQUE,
    account_id    text,
    scope         text NOT NULL CHECK (scope IN ('user', 'admin')),
    created_at    timestamptz NOT NULL DEFAULT now(),
    revoked_at    timestamptz,
    CHECK (scope = 'admin' OR account_id IS NOT NULL)
);

-- The account's own provider key (BYOK), Fernet-encrypted at rest.
CREATE TABLE openrouter_accounts (
    account_id     text PRIMARY KEY REFERENCES user_credits (account_id) ON DELETE CASCADE,
    encrypted_key  bytea NOT NULL,
    key_last4      text NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    updated_at     timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE coupon_codes (
    code               text PRIMARY KEY CHECK (length(code) BETWEEN 1 AND 64),
    amount_micros      bigint NOT NULL CHECK (amount_micros > 0),
    max_redemptions    integer NOT NULL CHECK (max_redemptions > 0),
    redemptions        integer NOT NULL DEFAULT 0 CHECK (redemptions <= max_redemptions),
    expires_at         timestamptz,
    created_at         timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE coupon_redemptions (
    code             text NOT NULL REFERENCES coupon_codes (code),
    account_id       text NOT NULL REFERENCES user_credits (account_id),
    transaction_id   bigint NOT NULL REFERENCES credit_transactions (id),
    redeemed_at      timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (code, account_id)
);

-- API idempotency: the same key and body answer the original result; another body is a 409.
CREATE TABLE idempotency_keys (
    scope          text NOT NULL,
    key            text NOT NULL CHECK (length(key) BETWEEN 1 AND 200),
    request_hash   bytea NOT NULL,
    response       jsonb NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (scope, key)
);

-- Alerts written in the same transaction as the change that caused them, then published
-- to credit.alerts and marked (a transactional outbox: none lost on a crash).
CREATE TABLE alert_outbox (
    id             bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    account_id     text NOT NULL,
    kind           text NOT NULL,
    payload        jsonb NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    published_at   timestamptz
);
CREATE INDEX alert_outbox_pending_idx ON alert_outbox (id) WHERE published_at IS NULL;
