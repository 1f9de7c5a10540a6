-- Indexes that no query uses cost an insertion per usage event each. usage_events is read
-- by (source, event_id) only (its primary key); stats come from usage_daily. The ledger's
-- history is read by account (account_id, id), never by created_at alone.
DROP INDEX usage_events_account_time_idx;
DROP INDEX usage_events_occurred_idx;
DROP INDEX credit_transactions_created_idx;
