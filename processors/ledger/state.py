"""Account state transitions: blocked/unblocked, cap thresholds, low balance — one place for both
the worker's batches and the API's single writes."""

from __future__ import annotations

from datetime import UTC, date, datetime

from processors.ledger.models import CAP_THRESHOLDS, AccountState, Alert, LedgerPolicy
from schemas.money import format_micros


def _payload(state: AccountState, kind: str, month: date, **extra: object) -> dict[str, object]:
    return {
        "account_id": state.account_id,
        "kind": kind,
        "balance": format_micros(state.balance_micros),
        "monthly_spend": format_micros(state.monthly_spend_micros),
        "monthly_cap": (
            None if state.monthly_cap_micros is None else format_micros(state.monthly_cap_micros)
        ),
        "month": month.isoformat(),
        "at": datetime.now(UTC).isoformat(),
        **extra,
    }


def evaluate(state: AccountState, policy: LedgerPolicy, month: date) -> list[Alert]:
    """Update state's blocked / alerted flags after a change and return the alerts it causes.

    Each cap threshold (50/80/100 %) alerts once per month; low balance alerts once until the
    balance recovers; blocked and unblocked alert on each change of state.
    """
    alerts: list[Alert] = []
    if state.monthly_cap_micros:
        pct = state.monthly_spend_micros * 100 // state.monthly_cap_micros
        for threshold in CAP_THRESHOLDS:
            if state.alerted_pct < threshold <= pct:
                alerts.append(
                    Alert(
                        state.account_id,
                        "cap_threshold",
                        _payload(state, "cap_threshold", month, threshold_pct=threshold),
                    )
                )
                state.alerted_pct = threshold
    low = state.balance_micros < policy.low_balance_micros
    if low and not state.low_balance_alerted:
        alerts.append(
            Alert(
                state.account_id,
                "low_balance",
                _payload(
                    state, "low_balance", month, threshold=format_micros(policy.low_balance_micros)
                ),
            )
        )
    state.low_balance_alerted = low
    reason = state.should_block()
    if reason and not state.blocked:
        alerts.append(
            Alert(state.account_id, "blocked", _payload(state, "blocked", month, reason=reason))
        )
    elif not reason and state.blocked:
        alerts.append(Alert(state.account_id, "unblocked", _payload(state, "unblocked", month)))
    state.blocked = reason is not None
    return alerts
