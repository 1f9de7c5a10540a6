ALTER TABLE credit_grants RESET (fillfactor);
DROP INDEX IF EXISTS credit_grants_expiry_due_idx;
ALTER TABLE credit_grants DROP COLUMN IF EXISTS expiry_done;
CREATE INDEX credit_grants_open_idx ON credit_grants (account_id, priority, grant_id)
    WHERE remaining_micros > 0;
CREATE INDEX credit_grants_expiry_idx ON credit_grants (expires_at)
    WHERE remaining_micros > 0 AND expires_at IS NOT NULL;
