-- The ledger owns idempotency for every write it makes. A keyed write may record the hash of
-- the request it answered (then the same key with another request is a conflict, whatever it
-- would cost now) and, for a deduction meterline priced (calculate-and-deduct), the pricing it
-- answered with, so a replay answers the original. The API's own store of answers
-- (idempotency_keys), which calculate-and-deduct kept beside the ledger's key, goes.
ALTER TABLE credit_transactions
    ADD COLUMN request_hash bytea,
    ADD COLUMN priced jsonb;
UPDATE credit_transactions c
   SET request_hash = i.request_hash, priced = i.response -> 'cost'
  FROM idempotency_keys i
 WHERE i.scope = 'calculate-and-deduct:' || c.account_id AND i.key = c.idempotency_key;
DROP TABLE idempotency_keys;
