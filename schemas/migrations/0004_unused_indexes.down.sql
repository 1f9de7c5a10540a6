CREATE INDEX credit_transactions_created_idx ON credit_transactions (created_at);
CREATE INDEX usage_events_occurred_idx ON usage_events (occurred_at);
CREATE INDEX usage_events_account_time_idx ON usage_events (account_id, occurred_at);
