-- Back to reserve and release from Python, statement by statement (nothing else changed).
DROP FUNCTION release_hold(text, text);
DROP FUNCTION reserve_hold(text, text, bigint, int, text, bytea, jsonb, date);
