"""Grants: where credit comes from, the order debits burn it, and the overdraft (invariant 7).

Every writer calls this module under the accounts' row locks: `GrantBook.debit` decides the
burn of a debit in DESIGN order (applicable to the model, effective, unexpired, something left;
by priority, then soonest expires_at with never last, then oldest), `add_grant` writes the grant
of a credit after repaying the overdraft, and `GrantBook.flush` writes what a transaction burned
in two statements, however many debits it holds.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import UTC, datetime

import asyncpg

from processors.ledger import grant_queries as gq
from processors.ledger.models import AccountState, Burn, Grant, GrantTerms

_NEVER = datetime.max.replace(tzinfo=UTC)


def burn_order(grant: Grant) -> tuple[int, bool, datetime, int]:
    """Lower burns first: priority, then soonest expiry (never last), then oldest."""
    return (grant.priority, grant.expires_at is None, grant.expires_at or _NEVER, grant.grant_id)


def applies(applies_to: Sequence[str] | None, model: str | None, provider: str | None) -> bool:
    """Whether a grant limited to these prefixes pays for a call of model (None: any usage).

    A prefix matches the model id (`openai/gpt-4o`) or, when the id carries no provider,
    `<provider>/<model>` (`anthropic/claude-sonnet-4-5`). A debit with no model (a plain
    deduction) is paid only by grants that apply to any usage.
    """
    if applies_to is None:
        return True
    if model is None:
        return False
    names = [model]
    if provider and "/" not in model:
        names.append(f"{provider}/{model}")
    return any(name.startswith(prefix) for prefix in applies_to for name in names)


class GrantBook:
    """The open grants of locked accounts, and what one transaction burns from them."""

    def __init__(self, grants: Iterable[Grant], at: datetime) -> None:
        self.at = at
        self._grants: dict[str, list[Grant]] = {}
        for g in sorted(grants, key=burn_order):
            self._grants.setdefault(g.account_id, []).append(g)
        self._remaining = {
            g.grant_id: g.remaining_micros for gs in self._grants.values() for g in gs
        }
        self._touched: set[int] = set()
        self.burns: list[Burn] = []

    @classmethod
    async def load(
        cls, conn: asyncpg.Connection, *, account_ids: Sequence[str], at: datetime
    ) -> GrantBook:
        """The open grants of accounts the caller has locked."""
        return cls(await gq.open_grants(conn, account_ids=account_ids), at)

    def remaining(self, grant_id: int) -> int:
        """A grant's remaining amount as this transaction left it."""
        return self._remaining[grant_id]

    def debit(
        self,
        state: AccountState,
        *,
        transaction_id: int,
        amount_micros: int,
        model: str | None,
        provider: str | None = None,
    ) -> list[Burn]:
        """Burn amount_micros from the account's grants; the uncovered rest is overdraft."""
        left = amount_micros
        burned: list[Burn] = []
        for g in self._grants.get(state.account_id, ()):
            if left == 0:
                break
            have = self._remaining[g.grant_id]
            if (
                have <= 0
                or g.effective_at > self.at
                or (g.expires_at is not None and g.expires_at <= self.at)
                or not applies(g.applies_to, model, provider)
            ):
                continue
            take = min(have, left)
            self._remaining[g.grant_id] = have - take
            self._touched.add(g.grant_id)
            left -= take
            burned.append(Burn(transaction_id, g.grant_id, state.account_id, "debit", take))
        state.overdraft_micros += left
        self.burns.extend(burned)
        return burned

    def expire(self, state: AccountState, grant: Grant, transaction_id: int) -> Burn:
        """Take a grant's whole remainder as an expiry burn."""
        amount = self._remaining[grant.grant_id]
        self._remaining[grant.grant_id] = 0
        self._touched.add(grant.grant_id)
        burn = Burn(transaction_id, grant.grant_id, state.account_id, "expiry", amount)
        self.burns.append(burn)
        return burn

    def due(self, account_id: str) -> list[Grant]:
        """The account's grants past their expiry with something left, oldest first."""
        return sorted(
            (
                g
                for g in self._grants.get(account_id, ())
                if g.expires_at is not None
                and g.expires_at <= self.at
                and self._remaining[g.grant_id] > 0
            ),
            key=lambda g: g.grant_id,
        )

    async def flush(self, conn: asyncpg.Connection) -> None:
        """Write the burns and the grants' new remaining amounts (two statements)."""
        if self._touched:
            ids = sorted(self._touched)
            await gq.save_remaining(
                conn, grant_ids=ids, remaining=[self._remaining[i] for i in ids]
            )
            self._touched.clear()
        await gq.insert_burns(conn, burns=self.burns)
        self.burns = []


def repay_overdraft(state: AccountState, amount_micros: int) -> int:
    """What of a credit repays the account's overdraft first (state is updated)."""
    repay = min(amount_micros, state.overdraft_micros)
    state.overdraft_micros -= repay
    return repay


async def add_grant(
    conn: asyncpg.Connection,
    state: AccountState,
    *,
    transaction_id: int,
    amount_micros: int,
    terms: GrantTerms,
    reason: str | None,
    at: datetime,
) -> tuple[Grant, Burn | None]:
    """The grant of a credit row; it repays the account's overdraft first (state is updated)."""
    repay = repay_overdraft(state, amount_micros)
    grant = await gq.insert_grant(
        conn,
        account_id=state.account_id,
        category=terms.category,
        amount_micros=amount_micros,
        remaining_micros=amount_micros - repay,
        priority=terms.priority,
        effective_at=terms.effective_at or at,
        expires_at=terms.expires_at,
        applies_to=terms.applies_to,
        transaction_id=transaction_id,
        reason=reason,
    )
    burn = None
    if repay:
        burn = Burn(transaction_id, grant.grant_id, state.account_id, "overdraft", repay)
        await gq.insert_burns(conn, burns=[burn])
    return grant, burn
