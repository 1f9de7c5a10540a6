ALTER TABLE usage_events ALTER COLUMN processed_at SET DEFAULT now();
ALTER TABLE monthly_spend ADD CONSTRAINT monthly_spend_account_id_fkey
    FOREIGN KEY (account_id) REFERENCES user_credits (account_id) ON DELETE CASCADE;
ALTER TABLE credit_transactions ADD CONSTRAINT credit_transactions_account_id_fkey
    FOREIGN KEY (account_id) REFERENCES user_credits (account_id);
