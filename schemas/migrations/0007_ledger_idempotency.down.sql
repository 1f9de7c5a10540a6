CREATE TABLE idempotency_keys (
    scope          text NOT NULL,
    key            text NOT NULL CHECK (length(key) BETWEEN 1 AND 200),
    request_hash   bytea NOT NULL,
    response       jsonb NOT NULL,
    created_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (scope, key)
);
-- The answers of calculate-and-deduct, rebuilt from the ledger rows that carry them.
INSERT INTO idempotency_keys (scope, key, request_hash, response, created_at)
SELECT 'calculate-and-deduct:' || account_id, idempotency_key, request_hash,
       jsonb_build_object(
           'transaction', jsonb_build_object(
               'id', id, 'account_id', account_id, 'type', type,
               'amount', to_char(amount_micros / 1000000.0, 'FM999999999999990.000000'),
               'balance_after',
               to_char(balance_after_micros / 1000000.0, 'FM999999999999990.000000'),
               'reason', reason, 'idempotency_key', idempotency_key, 'model', model,
               'source', source, 'event_id', event_id, 'created_at', created_at),
           'balance', to_char(balance_after_micros / 1000000.0, 'FM999999999999990.000000'),
           'replayed', false,
           'cost', priced),
       created_at
  FROM credit_transactions
 WHERE priced IS NOT NULL AND request_hash IS NOT NULL AND idempotency_key IS NOT NULL;
ALTER TABLE credit_transactions DROP COLUMN priced, DROP COLUMN request_hash;
