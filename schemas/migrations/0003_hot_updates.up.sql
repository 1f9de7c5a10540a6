-- Balances and monthly spend are updated on every batch. An index on the updated column
-- (balance_micros, spend_micros) forbids HOT updates, so every update rewrote both indexes;
-- without them, and with room left on each page, updates stay HOT. Measured: the balance
-- UPDATE and the spend upsert of a 2,000-event batch take half the time. Top spenders and
-- totals are aggregate queries that do not need these indexes.
DROP INDEX user_credits_balance_idx;
DROP INDEX monthly_spend_month_spend_idx;
ALTER TABLE user_credits SET (fillfactor = 70);
ALTER TABLE monthly_spend SET (fillfactor = 70);
ALTER TABLE usage_daily SET (fillfactor = 80);
