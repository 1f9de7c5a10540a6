ALTER TABLE usage_events DROP COLUMN byok_fee_pct, DROP COLUMN price_multiplier;
