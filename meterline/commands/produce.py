"""`meterline produce`: publish usage events from a file, stdin or a synthetic generator (#3)."""

from __future__ import annotations

import io
import sys
from datetime import timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from meterline.commands._common import (
    addresses,
    console,
    fail,
    out,
    plain_progress,
    quiet_repeated_warnings,
    tagged,
)

if TYPE_CHECKING:
    from producers.pump import ProduceSummary

_FORMATS = ("auto", "event", "openai", "anthropic", "litellm", "cloudevents")
_SHOW_BAD = 50  # bad lines printed one by one; the rest are counted


def register(app: typer.Typer) -> None:
    @app.command("produce")
    def produce(
        file: str | None = typer.Argument(
            None, help="JSON-lines file to publish, or - for stdin.", show_default=False
        ),
        fmt: str = typer.Option(
            "auto", "--format", help=f"Input shape: {'|'.join(_FORMATS)} (auto: per line)."
        ),
        synthetic: int | None = typer.Option(
            None, "--synthetic", min=0, help="Publish N generated events instead of a file."
        ),
        accounts: int = typer.Option(100, "--accounts", min=1, help="Synthetic accounts."),
        seed: int | None = typer.Option(
            None, "--seed", help="Synthetic seed (same seed, same events); random if unset."
        ),
        window_days: float = typer.Option(
            0.0,
            "--window-days",
            min=0.0,
            max=366.0,
            help="Spread synthetic occurred_at over this many days before now "
            "(default: the last 5 minutes).",
        ),
        byok_fraction: float = typer.Option(
            0.0,
            "--byok-fraction",
            min=0.0,
            max=1.0,
            help="Share of byok events.",
        ),
        rate: float | None = typer.Option(
            None,
            "--rate",
            min=0.0,
            help="At most R events/s (default: as fast as possible).",
        ),
        source: str | None = typer.Option(
            None, "--source", help="Source for events that name none."
        ),
        account_field: str = typer.Option(
            "user_api_key_user_id",
            "--litellm-account-field",
            help="LiteLLM field naming the account: end_user, user_api_key_team_id, ...",
        ),
        bootstrap: str | None = typer.Option(None, "--bootstrap", help="Kafka bootstrap servers."),
        topic: str | None = typer.Option(None, "--topic", help="Topic (default: usage.events)."),
    ) -> None:
        """Publish usage events (any supported shape) from a file, stdin or a generator."""
        if fmt not in _FORMATS:
            fail(f"--format must be one of {', '.join(_FORMATS)}; got {fmt!r}", code=2)
        if synthetic is not None and file is not None:
            fail("give either a FILE or --synthetic N, not both", code=2)
        if synthetic is None and file is None:
            if sys.stdin.isatty():
                fail("give a JSON-lines FILE, - for stdin, or --synthetic N", code=2)
            file = "-"
        if file is not None and file != "-" and not Path(file).is_file():
            fail(f"no such file: {file}", code=2)
        if source is not None:
            _check_source(source)

        from schemas.settings import CommonSettings, get_settings

        settings = get_settings(CommonSettings)
        target_bootstrap = bootstrap or addresses(settings, kafka=True).kafka_bootstrap
        target_topic = topic or settings.topic_usage_events
        defaults: dict[str, Any] = {"source": source, "litellm_account_field": account_field}
        summary = _run(
            file=file,
            fmt=fmt,
            synthetic=synthetic,
            accounts=accounts,
            seed=seed,
            window_days=window_days,
            byok_fraction=byok_fraction,
            rate=rate,
            defaults=defaults,
            bootstrap=target_bootstrap,
            topic=target_topic,
        )
        for failure in summary.failed[:_SHOW_BAD]:
            console.print(
                tagged(
                    "not delivered:",
                    "red",
                    f" event {failure.event.event_id!r}: {failure.error!r}",
                )
            )
        out.print(
            f"published {summary.published}, bad {len(summary.bad)}, failed {len(summary.failed)}"
            f" in {summary.seconds:.2f}s ({summary.events_per_second:.0f} events/s)"
            f" to {target_topic}"
        )
        if not summary.ok:
            raise typer.Exit(1)


def _check_source(source: str) -> None:
    """--source by the event's own rule (1-64 characters, no control character), exit 2."""
    from pydantic import TypeAdapter, ValidationError

    from schemas.event import Source

    try:
        TypeAdapter(Source).validate_python(source)
    except ValidationError as exc:
        fail(f"--source: {exc.errors(include_url=False)[0]['msg']}", code=2)


def _run(
    *,
    file: str | None,
    fmt: str,
    synthetic: int | None,
    accounts: int,
    seed: int | None,
    window_days: float,
    byok_fraction: float,
    rate: float | None,
    defaults: dict[str, Any],
    bootstrap: str,
    topic: str,
) -> ProduceSummary:
    import asyncio
    import random

    from rich.progress import (
        BarColumn,
        MofNCompleteColumn,
        Progress,
        TextColumn,
        TimeElapsedColumn,
    )

    from producers.jsonlines import BadLine
    from producers.publisher import PublishError
    from producers.pump import ProduceSummary, produce, read_items
    from producers.synthetic import DEFAULT_WINDOW, synthetic_events

    items: Any
    total: int | None
    stream = None
    if synthetic is not None:
        if seed is None:
            seed = random.SystemRandom().randrange(1 << 31)
            console.print(f"synthetic seed {seed} (pass --seed {seed} to repeat this run)")
        total = synthetic
        items = synthetic_events(
            synthetic,
            accounts,
            seed=seed,
            byok_fraction=byok_fraction,
            source=defaults["source"] or "synthetic",
            window=timedelta(days=window_days) if window_days else DEFAULT_WINDOW,
        )
    else:
        # surrogateescape: a byte that is not UTF-8 makes its own line bad (parse_line says
        # so), instead of a UnicodeDecodeError that ends the run halfway.
        if file == "-":
            stream, total = sys.stdin, None
            if isinstance(sys.stdin, io.TextIOWrapper):
                sys.stdin.reconfigure(errors="surrogateescape")
        else:
            assert file is not None
            with open(file, encoding="utf-8", errors="surrogateescape") as f:
                total = sum(1 for line in f if line.strip())
            stream = open(file, encoding="utf-8", errors="surrogateescape")  # closed below
        items = read_items(stream, format=fmt, **defaults)

    shown = 0

    with Progress(
        TextColumn("[bold]producing"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        transient=False,
    ) as progress:
        task = progress.add_task("produce", total=total)
        # Off a terminal rich draws the bar once, at the end: say how far it got meanwhile.
        plain = None if console.is_terminal else plain_progress("producing")
        sent = 0

        def advance(n: int) -> None:
            nonlocal sent
            progress.advance(task, n)
            sent += n
            if plain is not None:
                plain(sent, total or 0)

        def on_bad(bad: BadLine) -> None:
            nonlocal shown
            shown += 1
            if shown <= _SHOW_BAD:
                progress.console.print(tagged("bad", "yellow", f" {bad}"))
            elif shown == _SHOW_BAD + 1:
                progress.console.print(tagged("more bad lines: only counted from here", "yellow"))

        summary = ProduceSummary()
        quiet_repeated_warnings()
        try:
            return asyncio.run(
                produce(
                    items,
                    bootstrap=bootstrap,
                    topic=topic,
                    rate=rate,
                    on_progress=advance,
                    on_bad=on_bad,
                    summary=summary,
                )
            )
        except KeyboardInterrupt:
            again = f"the same --seed {seed}" if synthetic is not None else "the same input"
            console.print(
                tagged(
                    "interrupted",
                    "yellow",
                    f": published {summary.published} events (acknowledged by Kafka), "
                    f"{len(summary.bad)} bad lines; the rest was not sent. Publishing "
                    f"{again} again is safe: an event published twice is debited once "
                    "(source, event_id)",
                )
            )
            raise typer.Exit(130) from None
        except PublishError as exc:
            fail(f"{exc}\n(Kafka's address comes from --bootstrap or METERLINE_KAFKA_BOOTSTRAP)")
        finally:
            if stream is not None and stream is not sys.stdin:
                stream.close()
