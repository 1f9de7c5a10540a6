"""`meterline replay` and `meterline reconcile` (issue #5): options, progress and summaries only;
the work is in processors.replay and processors.reconcile."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from meterline.commands._common import (
    addresses,
    bounded_time,
    console,
    fail,
    out,
    plain_progress,
    run_work,
    tagged,
)

if TYPE_CHECKING:
    from processors.reconcile import ReconcileResult
    from processors.settings import WorkerSettings


def parse_time(text: str, flag: str) -> datetime:
    """RFC 3339 / ISO 8601 ('2025-06-01T00:00:00Z'; no offset means UTC) or 'now'."""
    if text.strip().lower() == "now":
        return datetime.now(UTC)
    try:
        at = datetime.fromisoformat(text.strip())
    except ValueError:
        fail(f"{flag} wants a time such as 2025-06-01T00:00:00Z, got {text!r}", code=2)
    return bounded_time(at if at.utcoffset() is not None else at.replace(tzinfo=UTC), flag)


@contextmanager
def _progress(label: str) -> Iterator[Callable[[int, int], None]]:
    if not console.is_terminal:
        yield plain_progress(label)
        return
    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TaskProgressColumn,
        TextColumn,
        TimeElapsedColumn,
    )

    with Progress(
        TextColumn(f"[bold]{label}"),
        BarColumn(),
        MofNCompleteColumn(),
        TaskProgressColumn(),
        TextColumn("{task.fields[rate]} events/s"),
        TimeElapsedColumn(),
        console=console,
    ) as progress:
        task = progress.add_task(label, total=None, rate="-")
        began = datetime.now(UTC)

        def update(done: int, total: int) -> None:
            secs = (datetime.now(UTC) - began).total_seconds()
            rate = f"{done / secs:,.0f}" if secs > 0 else "-"
            progress.update(task, completed=done, total=total or None, rate=rate)

        yield update


def _settings() -> WorkerSettings:
    from processors.settings import WorkerSettings
    from schemas.settings import get_settings

    return addresses(get_settings(WorkerSettings), kafka=True, database=True)


def register(app: typer.Typer) -> None:
    @app.command("replay")
    def replay(
        topic: str = typer.Option(
            ..., "--topic", help="usage.events or usage.dlq (or their configured names)."
        ),
        start: str | None = typer.Option(None, "--from", help="Start time (RFC 3339)."),
        end: str | None = typer.Option(
            None, "--to", help="End time (RFC 3339); default: the current end of the topic."
        ),
        from_offset: list[str] = typer.Option(
            [], "--from-offset", help="PARTITION:OFFSET to start at (repeatable)."
        ),
        group: str | None = typer.Option(
            None, "--group", help="Consumer group to commit the offsets reached to (optional)."
        ),
        retry: list[str] = typer.Option(
            [],
            "--retry",
            help="On usage.dlq, also re-rate records of this reason (repeatable): rejected, "
            "invalid_event, invalid_json or oversized, once what refused them is fixed "
            "(never conflicting_event: its key is another account's for good).",
        ),
    ) -> None:
        """Re-read a range through the worker's pricing and ledger path (duplicates change
        nothing); on usage.dlq, re-rate `unpriced` records (and those of each --retry reason)
        and report the rest. Without --from or --from-offset the whole retained topic is read."""
        from processors.metering import DLQ_REASONS
        from processors.replay import DEFAULT_RETRY, NEVER_RETRIED, ReplaySummary
        from processors.replay import replay as run_replay
        from processors.topic_range import RangeError, check_window, parse_partition_offsets
        from schemas.money import format_micros

        retryable = [r for r in DLQ_REASONS if r not in NEVER_RETRIED]
        for reason in retry:
            if reason not in DLQ_REASONS:
                fail(f"--retry must be one of {', '.join(retryable)}, got {reason!r}", code=2)
            if reason in NEVER_RETRIED:
                fail(f"--retry {reason}: cannot succeed: {NEVER_RETRIED[reason]}", code=2)
        s = _settings()
        if topic in ("usage.events", "events", s.topic_usage_events):
            name, dlq = s.topic_usage_events, False
        elif topic in ("usage.dlq", "dlq", s.topic_usage_dlq):
            name, dlq = s.topic_usage_dlq, True
        else:
            fail(f"--topic must be usage.events or usage.dlq, got {topic!r}", code=2)
        if retry and not dlq:
            fail("--retry applies to usage.dlq only (usage.events is read whole)", code=2)
        if start is not None and from_offset:
            fail("give --from or --from-offset, not both", code=2)
        if group is not None and group == s.worker_group:
            fail(f"--group {group!r} is the worker's group; replay must use its own", code=2)
        summary = ReplaySummary(topic=name)

        def replayed() -> str:
            return (
                f"read {summary.read} of {summary.total} records: debited {summary.debited} "
                f"({format_micros(summary.debited_micros)} credits), duplicates "
                f"{summary.duplicates}. Each batch commits whole, so nothing is half-written; "
                "run the same replay again to finish (what was debited comes back as "
                "duplicates)" + (f"; no offsets were committed to --group {group}" if group else "")
            )

        try:
            offsets = parse_partition_offsets(from_offset)
            t0 = parse_time(start, "--from") if start else None
            t1 = parse_time(end, "--to") if end else None
            check_window(t0, t1)
            with _progress("replaying") as progress:
                summary = run_work(
                    run_replay(
                        bootstrap=s.kafka_bootstrap,
                        database_url=s.database_url,
                        topic=name,
                        dlq=dlq,
                        policy=s.ledger_policy(),
                        start=t0,
                        end=t1,
                        from_offsets=offsets or None,
                        group=group,
                        batch_size=s.batch_max,
                        max_event_bytes=s.max_event_bytes,
                        on_progress=progress,
                        retry=DEFAULT_RETRY | frozenset(retry),
                        summary=summary,
                    ),
                    done=replayed,
                )
        except RangeError as exc:
            fail(str(exc), code=2)

        for p, first in sorted(summary.truncated.items()):
            console.print(
                tagged(
                    f"partition {p} starts at offset {first}: older records were deleted by "
                    "retention",
                    "yellow",
                )
            )
        out.print(
            f"read {summary.read}, debited {summary.debited} "
            f"({format_micros(summary.debited_micros)} credits), duplicates {summary.duplicates}"
            f" in {summary.seconds:.2f}s ({summary.events_per_second:,.0f} events/s)"
        )
        if summary.still_failing:
            out.print("still failing (not republished): " + _by_reason(summary.still_failing))
            for line in summary.samples:
                out.print(f"  {line}")
        if summary.not_retried:
            out.print("not retried (DLQ reason): " + _by_reason(summary.not_retried))

    @app.command("reconcile")
    def reconcile(
        start: str = typer.Option(..., "--from", help="Start of occurred_at (RFC 3339)."),
        end: str = typer.Option(..., "--to", help="End of occurred_at, exclusive (RFC 3339)."),
        report: Path | None = typer.Option(
            None, "--report", help="Write the findings to FILE (.json or .csv)."
        ),
        fix: bool = typer.Option(
            False, "--fix", help="Post corrections (idempotent adjustments; balances rebuilt)."
        ),
        fix_extra: bool = typer.Option(
            False, "--fix-extra", help="With --fix, also refund debits that have no event."
        ),
        grace_min: float = typer.Option(
            10.0, "--grace", min=0.0, help="Minutes of topic read around the range (late events)."
        ),
    ) -> None:
        """Compare the ledger with usage.events for events that occurred in [--from, --to)."""
        from processors.reconcile import apply_fixes
        from processors.reconcile import reconcile as run_reconcile
        from processors.reconcile.fix import FixResult
        from processors.topic_range import RangeError
        from schemas.money import format_micros

        s = _settings()
        if report is not None:
            _check_report(report)
        t0, t1 = parse_time(start, "--from"), parse_time(end, "--to")
        try:
            with _progress("reading") as progress:
                result = run_work(
                    run_reconcile(
                        bootstrap=s.kafka_bootstrap,
                        database_url=s.database_url,
                        topic=s.topic_usage_events,
                        start=t0,
                        end=t1,
                        policy=s.ledger_policy(),
                        grace=timedelta(minutes=grace_min),
                        max_event_bytes=s.max_event_bytes,
                        on_progress=progress,
                    ),
                    done=lambda: "nothing was written (reconcile only reads until --fix)",
                )
        except (RangeError, ValueError) as exc:
            fail(str(exc), code=2)
        _print_result(result)
        if report is not None:
            try:
                result.write_report(report)
            except OSError as exc:
                fail(f"--report {report}: {exc}; nothing was fixed")
            out.print(f"report written to {report}")
        if fix and result.findings:
            fixed = FixResult()

            def fixed_so_far() -> str:
                return (
                    f"fixed so far: {fixed.adjusted} adjustments, {fixed.already} already "
                    f"posted, {fixed.metered} events metered, {fixed.balances} balances rebuilt "
                    f"of {len(result.findings)} findings. Each correction commits whole and at "
                    "most once: run the same reconcile --fix again to finish"
                )

            with _progress("fixing") as progress:
                fixed = run_work(
                    apply_fixes(
                        result,
                        bootstrap=s.kafka_bootstrap,
                        database_url=s.database_url,
                        policy=s.ledger_policy(),
                        fix_extra=fix_extra,
                        max_event_bytes=s.max_event_bytes,
                        on_progress=progress,
                        out=fixed,
                    ),
                    done=fixed_so_far,
                )
            out.print(
                f"fixed: {fixed.adjusted} adjustments ({format_micros(fixed.adjusted_micros)}"
                f" credits), {fixed.already} already posted, {fixed.metered} events metered,"
                f" {fixed.balances} balances rebuilt from the ledger, {fixed.grants} grants and"
                f" {fixed.overdrafts} overdrafts rebuilt from their burns"
                + (
                    f", {fixed.skipped_extra} extra debits left (use --fix-extra)"
                    if fixed.skipped_extra
                    else ""
                )
            )
            for c in fixed.conflicts:
                console.print(tagged("conflict:", "red", f" {c}"))
            if fixed.conflicts:
                raise typer.Exit(1)
        elif not result.clean:
            raise typer.Exit(3)


def _check_report(report: Path) -> None:
    """--report before any work: a name that ends in .json or .csv, in a directory that exists
    and can be written (else the whole run was done for a report that could not be written)."""
    import os

    if report.suffix.lower() not in (".json", ".csv"):
        fail(f"--report must end in .json or .csv, got {report.name!r}", code=2)
    folder = report.parent
    if not folder.is_dir():
        fail(f"--report {report}: directory {str(folder)!r} does not exist", code=2)
    if not os.access(folder, os.W_OK) or (report.exists() and not os.access(report, os.W_OK)):
        fail(f"--report {report}: cannot write there (permission denied)", code=2)
    if report.is_dir():
        fail(f"--report {report} is a directory; name a file", code=2)


def _by_reason(counts: dict[str, int]) -> str:
    return ", ".join(f"{k} {v}" for k, v in sorted(counts.items()))


def _print_result(result: ReconcileResult) -> None:
    from schemas.money import format_micros

    c = result.counts()
    out.print(
        f"read {result.read} records, {result.in_range} events in range ({result.duplicates}"
        f" duplicates, {result.outside} outside, {result.unpriced} unpriced"
        + (f", {len(result.unpriceable)} cannot be priced" if result.unpriceable else "")
        + (f", {len(result.conflicting)} conflicting" if result.conflicting else "")
        + (f", invalid {_by_reason(result.invalid)}" if result.invalid else "")
        + f") in {result.seconds:.2f}s ({result.in_range / max(result.seconds, 1e-9):,.0f}"
        " events/s)"
    )
    for source, event_id, why in result.unpriceable[:20]:
        console.print(tagged("cannot price", "yellow", f" event {source}/{event_id}: {why}"))
    if len(result.unpriceable) > 20:
        console.print(f"… {len(result.unpriceable) - 20} more events cannot be priced (--report)")
    for source, event_id, account in result.conflicting[:20]:
        console.print(
            tagged(
                "conflicting",
                "yellow",
                f" event {source}/{event_id} of {account}: its key was debited for another"
                " account; not debited, in usage.dlq as conflicting_event",
            )
        )
    if len(result.conflicting) > 20:
        console.print(f"… {len(result.conflicting) - 20} more conflicting events (--report)")
    for p, first in sorted(result.truncated.items()):
        console.print(
            tagged(
                f"partition {p} starts at offset {first}: older records were deleted; debits "
                "of their events show as extra",
                "yellow",
            )
        )
    if result.clean:
        out.print(
            tagged(
                "clean",
                "green",
                ": the ledger matches the stream, every balance its ledger and its grants",
            )
        )
        return
    out.print(
        f"missing debits {c['missing']}, amount differences {c['amount']}, extra debits"
        f" {c['extra']}, balances ≠ ledger {c['balance']}, grants ≠ their burns {c['grant']},"
        f" overdrafts ≠ grants − ledger {c['overdraft']}, holds settled wrongly {c['hold']}"
    )
    per_account = sorted(
        result.by_account().items(), key=lambda kv: -abs(kv[1]["difference_micros"])
    )
    for account, v in per_account[:20]:
        out.print(
            f"  {account}: {v['findings']} events, owes {format_micros(v['difference_micros'])}"
        )
    if len(per_account) > 20:
        out.print(f"  … {len(per_account) - 20} more accounts (see --report)")
    for f in [f for f in result.findings if f.kind == "balance"][:20]:
        out.print(
            f"  {f.account_id}: balance {format_micros(f.charged_micros)}, ledger sum "
            f"{format_micros(f.expected_micros)}"
        )
