ALTER TABLE usage_daily RESET (fillfactor);
ALTER TABLE monthly_spend RESET (fillfactor);
ALTER TABLE user_credits RESET (fillfactor);
CREATE INDEX monthly_spend_month_spend_idx ON monthly_spend (month, spend_micros DESC);
CREATE INDEX user_credits_balance_idx ON user_credits (balance_micros);
