-- Every usage row records the terms it was charged with, so the charge can be reproduced
-- exactly later: the price version (price_version_id, already stored), the account tier's
-- multiplier and the byok fee percent in force when it was debited. Reconcile prices history
-- with these, not with the account's current tier (after a tier change it used to report
-- every past event as an amount mismatch, and --fix would have re-priced history).
ALTER TABLE usage_events
    ADD COLUMN price_multiplier numeric CHECK (price_multiplier > 0),
    ADD COLUMN byok_fee_pct numeric CHECK (byok_fee_pct BETWEEN 0 AND 100);
-- Rows written before this migration: the best record left is the account's tier now and the
-- default fee (5 %); a deployment that changed either since should reconcile once after it.
UPDATE usage_events u
   SET price_multiplier = coalesce(
           (SELECT t.price_multiplier FROM user_credits c JOIN tiers t ON t.name = c.tier
             WHERE c.account_id = u.account_id), 1),
       byok_fee_pct = 5;
-- No default: a writer that forgot the terms must fail, not record list price.
ALTER TABLE usage_events
    ALTER COLUMN price_multiplier SET NOT NULL,
    ALTER COLUMN byok_fee_pct SET NOT NULL;
