DROP TABLE IF EXISTS credit_holds;
DROP TABLE IF EXISTS grant_burns;
DROP TABLE IF EXISTS credit_grants;
ALTER TABLE user_credits DROP COLUMN IF EXISTS overdraft_micros;
-- Expirations stay in the history (balance = Σ rows) as the adjustments they were.
UPDATE credit_transactions SET type = 'adjustment', reason = coalesce(reason, 'expiration')
    WHERE type = 'expiration';
ALTER TABLE credit_transactions DROP CONSTRAINT credit_transactions_type_check;
ALTER TABLE credit_transactions ADD CONSTRAINT credit_transactions_type_check CHECK (type IN
    ('allocation', 'usage', 'deduction', 'coupon', 'refund', 'adjustment'));
