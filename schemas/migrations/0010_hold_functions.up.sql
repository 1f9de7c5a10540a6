-- Reserve and release, each one round trip (issue 13): the statements that ran from Python,
-- one per round trip, run inside one server-side function, in the implicit transaction of the
-- statement that calls it (no BEGIN / COMMIT from the client).
--
-- Why lock-then-read stays correct in here: a VOLATILE function (the default) written in
-- PL/pgSQL takes a fresh snapshot at the start of each statement it executes (PostgreSQL 15,
-- 38.7 Function Volatility Categories), so under READ COMMITTED the read that follows the
-- lock sees every hold committed by whoever held the account's lock before us, as the second
-- statement of ledger.queries.lock_accounts does. Do not mark these functions STABLE: they
-- would read with the calling statement's snapshot, taken before the lock wait.

-- Hold p_amount on the account under its row lock (the lock every balance writer takes).
-- outcome: 'reserved' (hold is the new hold), 'replayed' (hold is the one an earlier reserve
-- with this key made, whatever the account's state now: the caller compares request_hash),
-- or the refusal: 'no_account', 'insufficient_credit', 'monthly_cap_exceeded', with the
-- account's state (balance, held, the month's spend, cap) that decided it. The refusal
-- predicate lives here and nowhere else; the caller only names the error.
CREATE FUNCTION reserve_hold(p_reservation_id text, p_account_id text, p_amount bigint,
                             p_ttl_seconds int, p_idempotency_key text, p_request_hash bytea,
                             p_metadata jsonb, p_month date,
                             OUT outcome text, OUT state_balance bigint,
                             OUT state_held bigint, OUT state_spend bigint,
                             OUT state_cap bigint, OUT hold credit_holds)
LANGUAGE plpgsql VOLATILE AS $fn$
BEGIN
    PERFORM 1 FROM user_credits WHERE account_id = p_account_id FOR UPDATE;
    -- A statement of its own, after the lock: a fresh snapshot (see above).
    SELECT u.balance_micros,
           (SELECT coalesce(sum(h.amount_micros), 0)::bigint FROM credit_holds h
             WHERE h.account_id = u.account_id AND h.status = 'active'
               AND h.expires_at > now()),
           coalesce(m.spend_micros, 0), u.monthly_cap_micros
      INTO state_balance, state_held, state_spend, state_cap
      FROM user_credits u
      LEFT JOIN monthly_spend m ON m.account_id = u.account_id AND m.month = p_month
     WHERE u.account_id = p_account_id;
    -- In numeric: a sum near BIGINT's bounds is compared, never an overflow error.
    IF NOT FOUND THEN
        outcome := 'no_account';  -- no account, no credit: refused like an empty one
    ELSIF state_balance::numeric - state_held < p_amount THEN
        outcome := 'insufficient_credit';
    ELSIF state_cap IS NOT NULL AND state_spend::numeric + state_held + p_amount > state_cap THEN
        outcome := 'monthly_cap_exceeded';
    ELSE
        INSERT INTO credit_holds (reservation_id, account_id, amount_micros, expires_at,
                                  idempotency_key, request_hash, metadata,
                                  available_after_micros)
        VALUES (p_reservation_id, p_account_id, p_amount,
                now() + make_interval(secs => p_ttl_seconds), p_idempotency_key,
                p_request_hash, p_metadata, state_balance - state_held - p_amount)
        ON CONFLICT (account_id, idempotency_key) DO NOTHING
        RETURNING * INTO hold;
        IF FOUND THEN
            outcome := 'reserved';
            RETURN;
        END IF;
    END IF;
    -- The key was used before (the insert met it), or this one is refused: a replay answers
    -- the original whatever the account's state now.
    SELECT * INTO hold FROM credit_holds h
     WHERE h.account_id = p_account_id AND h.idempotency_key = p_idempotency_key;
    IF FOUND THEN
        outcome := 'replayed';
    END IF;
END
$fn$;

-- Release an active, unexpired hold (p_account_id given: only that account's) and read what
-- its account has available after it. released: whether this call released it; hold: the
-- hold now (NULL when there is no such id; the caller scopes a hold of another account);
-- available: the hold's account's balance less its active holds, read after the release.
CREATE FUNCTION release_hold(p_reservation_id text, p_account_id text,
                             OUT released boolean, OUT hold credit_holds,
                             OUT available bigint)
LANGUAGE plpgsql VOLATILE AS $fn$
BEGIN
    UPDATE credit_holds SET status = 'released', closed_at = now()
     WHERE reservation_id = p_reservation_id AND status = 'active' AND expires_at > now()
       AND account_id = coalesce(p_account_id, account_id)
    RETURNING * INTO hold;
    released := FOUND;
    IF NOT released THEN
        -- Unknown, another account's, or no longer active: its state now (a fresh snapshot
        -- sees a settle that committed while the update waited on the row).
        SELECT * INTO hold FROM credit_holds WHERE reservation_id = p_reservation_id;
        IF NOT FOUND THEN
            RETURN;
        END IF;
    END IF;
    SELECT u.balance_micros
           - (SELECT coalesce(sum(h.amount_micros), 0)::bigint FROM credit_holds h
               WHERE h.account_id = u.account_id AND h.status = 'active'
                 AND h.expires_at > now())
      INTO available
      FROM user_credits u WHERE u.account_id = (hold).account_id;
END
$fn$;
