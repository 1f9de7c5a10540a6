"""Reconcile: prove the ledger matches the stream, and correct it by appending, never editing.

Reads a range of usage.events without writing, prices every valid event with the version in
force at its occurred_at and the terms it was charged with (the tier multiplier and byok fee
stored on its usage row; for an event never metered, the terms a debit would apply now),
through the same price_event the ledger uses, COPYs the expected charges into a temp table and
compares them with the ledger in one SQL pass. A tier changed since is not a finding; a price
version corrected in the past is. Findings:

- missing: an event in the range with no usage debit;
- amount: the debit (plus earlier reconcile adjustments) differs from the expected charge,
  e.g. after a corrected price version effective in the past;
- extra: a usage debit whose occurred_at is in the range but whose event is not in the
  topic range read (retention, a window too narrow, or a debit with no event);
- balance: an account whose balance ≠ the sum of its ledger rows (all accounts);
- grant: a grant whose remaining ≠ its amount − what its recorded burns took (invariant 7);
- overdraft: an account whose ledger sum ≠ Σ its grants' remaining − its overdraft;
- hold: a settled hold whose settling debit is missing, not its account's usage, or shared
  with another hold (invariant 8: a hold settles at most once).

A record in range whose (source, event_id) was debited for another account is no finding: the
worker dead-lettered it as ``conflicting_event``; it is listed apart (``conflicting``), and
``duplicates`` counts only records of the same key and account.

Corrections (``fix``) are idempotent: adjustments go through post_entry with a key derived
from what they correct, and reconcile counts its own earlier adjustments as part of an
event's charge, so a second run finds nothing left to correct.

The package splits the roles: keys.py (adjustment keys), report.py (findings and the report),
compare.py (the read and the comparison), fix.py (the corrections), queries.py (its SQL).
"""

from processors.reconcile.compare import expected_micros, reconcile
from processors.reconcile.fix import FixResult, apply_fixes
from processors.reconcile.keys import adjustment_key, parse_adjustment_key
from processors.reconcile.report import KINDS, Finding, OnProgress, ReconcileResult

__all__ = [
    "KINDS",
    "Finding",
    "FixResult",
    "OnProgress",
    "ReconcileResult",
    "adjustment_key",
    "apply_fixes",
    "expected_micros",
    "parse_adjustment_key",
    "reconcile",
]
