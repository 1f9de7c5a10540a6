"""What a reconcile found: findings by kind, per account, and the JSON or CSV report."""

from __future__ import annotations

import csv
import json
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

from schemas.money import format_micros

KINDS = ("missing", "amount", "extra", "balance", "grant", "overdraft", "hold")
# Findings about derived state (invariants 2, 7, 8), not about an event's charge.
STATE_KINDS = ("balance", "grant", "overdraft", "hold")

OnProgress = Callable[[int, int], None]


@dataclass(frozen=True, slots=True)
class Finding:
    """One disagreement between the stream and the ledger (or a balance and its ledger)."""

    kind: str
    account_id: str
    source: str | None = None
    event_id: str | None = None
    expected_micros: int = 0  # balance: the ledger sum
    charged_micros: int = 0  # usage debit + earlier reconcile adjustments; balance: the column
    adjustments: int = 0  # earlier reconcile adjustments on this event
    metered: bool = True  # missing: whether the event was debited (its key in debited_events)
    partition: int | None = None
    offset: int | None = None

    @property
    def difference_micros(self) -> int:
        """What the account still owes (negative: it was charged too much)."""
        return self.expected_micros - self.charged_micros

    def as_dict(self) -> dict[str, Any]:
        """JSON/CSV-ready: micros as ints and as decimal strings."""
        d = asdict(self)
        d["difference_micros"] = self.difference_micros
        for name in ("expected", "charged", "difference"):
            d[name] = format_micros(d[f"{name}_micros"])
        return d


@dataclass
class ReconcileResult:
    """What a reconcile read and found."""

    topic: str
    start: datetime
    end: datetime
    read: int = 0  # records read from the topic (grace included)
    in_range: int = 0  # valid events with occurred_at in [start, end)
    distinct: int = 0
    outside: int = 0
    invalid: dict[str, int] = field(default_factory=dict)
    unpriced: int = 0
    # Events in range nothing can price (a cost beyond the bound, a value pricing refuses):
    # (source, event_id, why), reported instead of stopping the whole reconcile.
    unpriceable: list[tuple[str, str, str]] = field(default_factory=list)
    findings: list[Finding] = field(default_factory=list)
    # Records in range never debited because their (source, event_id) was debited for another
    # account: (source, event_id, account), accounted in usage.dlq as conflicting_event.
    conflicting: list[tuple[str, str, str]] = field(default_factory=list)
    truncated: dict[int, int] = field(default_factory=dict)
    seconds: float = 0.0

    @property
    def duplicates(self) -> int:
        """Events in range seen more than once on the topic (counted once): same key, same
        account (a record of another account with the key is no duplicate: `conflicting`)."""
        return self.in_range - self.distinct

    @property
    def clean(self) -> bool:
        """True when the ledger matches the stream and every balance its ledger."""
        return not self.findings

    def counts(self) -> dict[str, int]:
        """Findings per kind (every kind present, zero when none)."""
        out = dict.fromkeys(KINDS, 0)
        for f in self.findings:
            out[f.kind] += 1
        return out

    def by_account(self) -> dict[str, dict[str, int]]:
        """Per account: findings and the total difference (balance findings excluded)."""
        out: dict[str, dict[str, int]] = {}
        for f in self.findings:
            if f.kind in STATE_KINDS:
                continue
            a = out.setdefault(f.account_id, {"findings": 0, "difference_micros": 0})
            a["findings"] += 1
            a["difference_micros"] += f.difference_micros
        return out

    def summary(self) -> dict[str, Any]:
        """Counts and timing, JSON-ready."""
        return {
            "topic": self.topic,
            "from": self.start.isoformat(),
            "to": self.end.isoformat(),
            "read": self.read,
            "in_range": self.in_range,
            "distinct": self.distinct,
            "duplicates": self.duplicates,
            "outside_range": self.outside,
            "invalid": dict(self.invalid),
            "unpriced": self.unpriced,
            "unpriceable": [
                {"source": s, "event_id": e, "reason": why} for s, e, why in self.unpriceable
            ],
            "conflicting": [
                {"source": s, "event_id": e, "account_id": a} for s, e, a in self.conflicting
            ],
            "findings": self.counts(),
            "truncated_partitions": {str(p): o for p, o in self.truncated.items()},
            "seconds": round(self.seconds, 3),
        }

    def write_report(self, path: Path) -> None:
        """JSON (summary, per account, findings) or CSV (one row per finding), by extension."""
        rows = [f.as_dict() for f in self.findings]
        if path.suffix.lower() == ".csv":
            cols = list(rows[0]) if rows else list(Finding("", "").as_dict())
            with path.open("w", newline="", encoding="utf-8") as fh:
                w = csv.DictWriter(fh, fieldnames=cols)
                w.writeheader()
                w.writerows(rows)
            return
        if path.suffix.lower() != ".json":
            raise ValueError(f"--report must end in .json or .csv, got {path.name!r}")
        doc = {
            "summary": self.summary(),
            "by_account": {
                a: {**v, "difference": format_micros(v["difference_micros"])}
                for a, v in sorted(self.by_account().items())
            },
            "findings": rows,
        }
        path.write_text(json.dumps(doc, indent=2) + "\n", encoding="utf-8")
