"""Shared bits for subcommands: the console and a clean exit on expected errors."""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from datetime import datetime
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import typer
from rich.console import Console
from rich.text import Text

if TYPE_CHECKING:
    from schemas.settings import CommonSettings

S = TypeVar("S", bound="CommonSettings")
T = TypeVar("T")

# No rich markup in what is printed: messages carry values from outside (paths, account and
# event ids, Kafka's and Postgres' errors), and one holding "[/]" raised MarkupError (a
# traceback, after `admin create-key` had stored the key it then never showed) while "[red]"
# vanished from what was shown. Styles are set with `tagged` instead.
console = Console(stderr=True, markup=False)
# Results go to stdout unwrapped, so a pipe or a script reads whole lines.
out = Console(soft_wrap=True, markup=False)


def tagged(tag: str, style: str, rest: str = "") -> Text:
    """`tag` in `style`, then `rest` as it is (the consoles read no markup)."""
    return Text.assemble((tag, style), rest)


PLAIN_PROGRESS_EVERY_S = 10.0


def plain_progress(
    label: str, every_s: float = PLAIN_PROGRESS_EVERY_S
) -> Callable[[int, int], None]:
    """Progress as a plain line on stderr (after the first step, then every `every_s`) for
    when stderr is not a terminal: rich draws its bar there only once, at the end, so a long
    run in a log, a pipe or a Kubernetes Job showed nothing for as long as it ran."""
    import time

    began = time.monotonic()
    last: float | None = None

    def update(done: int, total: int) -> None:
        nonlocal last
        now = time.monotonic()
        if last is not None and now - last < every_s:
            return
        last = now
        secs = now - began
        rate = f"{done / secs:,.0f}/s" if secs > 0 else "-"
        of = f" of {total:,} ({done * 100 // total}%)" if total else ""
        console.print(f"{label}: {done:,}{of}, {rate}, {secs:,.0f} s", highlight=False)

    return update


REPEAT_EVERY_S = 10.0


def quiet_repeated_warnings(every_s: float = REPEAT_EVERY_S) -> None:
    """Library warnings on stderr, each kind at most once per `every_s` with a count of the
    rest: with the broker away aiokafka logs 'Unable connect to node …' for every pending
    send, and a produce of 60,000 events printed 198,004 such lines in 10 s, burying the
    progress and the summary. (No handler was set: Python's last-resort one printed them all.)"""
    import logging
    import sys
    import time

    class Repeats(logging.Filter):
        def __init__(self) -> None:
            super().__init__()
            self.last: dict[tuple[str, object], tuple[float, int]] = {}

        def filter(self, record: logging.LogRecord) -> bool:
            key = (record.name, record.msg)
            now = time.monotonic()
            shown, hidden = self.last.get(key, (0.0, 0))
            if shown and now - shown < every_s:
                self.last[key] = (shown, hidden + 1)
                return False
            self.last[key] = (now, 0)
            if hidden:
                record.msg = f"{record.msg} (and {hidden} more like it in {now - shown:.0f} s)"
            return True

    class Stderr(logging.StreamHandler):  # type: ignore[type-arg]
        """sys.stderr as it is when a record is written (it may be replaced after)."""

        @property
        def stream(self) -> Any:
            return sys.stderr

        @stream.setter
        def stream(self, _: Any) -> None:
            pass

    root = logging.getLogger()
    if any(getattr(h, "meterline_quiet", False) for h in root.handlers):
        return
    handler = Stderr()
    handler.setLevel(logging.WARNING)
    handler.addFilter(Repeats())
    handler.meterline_quiet = True  # type: ignore[attr-defined]
    root.addHandler(handler)


def fail(message: str, code: int = 1) -> NoReturn:
    """Print an error the user can act on and exit non-zero."""
    console.print(tagged("error:", "bold red", f" {message}"))
    raise typer.Exit(code)


def addresses(settings: S, *, kafka: bool = False, database: bool = False) -> S:
    """The settings when they know the addresses this command needs; else exit naming them."""
    from schemas.settings import MissingAddress

    try:
        return settings.require(kafka=kafka, database=database)
    except MissingAddress as exc:
        fail(str(exc), code=2)


def bounded_time(at: datetime, flag: str) -> datetime:
    """An aware time within the bounds every timestamp input has, else exit naming the flag."""
    from schemas.bounds import check_time

    try:
        return check_time(at)
    except ValueError as exc:
        fail(f"{flag} {at.isoformat()} {exc}", code=2)


def run_work(work: Coroutine[Any, Any, T], *, done: Callable[[], str] | None = None) -> T:
    """Run a command's async work; a Kafka or Postgres that cannot be reached ends it with exit
    1 naming the address and its setting (and what `done` says was done), never a traceback.
    With `done`, Ctrl-C exits 130 saying what was done."""
    import asyncio

    from schemas.settings import CommonSettings, get_settings

    quiet_repeated_warnings()
    try:
        return asyncio.run(work)
    except KeyboardInterrupt:
        if done is None:
            raise
        console.print(tagged("interrupted", "yellow", f": {done()}"))
        raise typer.Exit(130) from None
    except Exception as exc:
        message = unreachable(exc, get_settings(CommonSettings))
        if message is None:
            raise
        fail(message + (f"\n{done()}" if done is not None else ""))


def unreachable(exc: BaseException, settings: CommonSettings) -> str | None:
    """The message for a Kafka or Postgres that cannot be reached (or was lost mid-run), naming
    the setting that points at it, or for a file that cannot be read or written, naming the
    file; None when exc is something else (or an OSError of none of them: it is shown whole).

    An OSError or TimeoutError is laid at the door of the library it was raised in (asyncpg
    or aiokafka, the deepest of their frames in its traceback): aiokafka wraps most of its
    socket errors in KafkaConnectionError, but not all, and a missing file is an OSError too.
    """
    import asyncpg
    from aiokafka.errors import KafkaError

    kafka = (
        f"cannot reach Kafka at {settings.kafka_bootstrap} (METERLINE_KAFKA_BOOTSTRAP): "
        f"{type(exc).__name__}: {exc}"
    )
    postgres = (
        f"cannot reach Postgres at {postgres_address(settings.database_url)} "
        f"(METERLINE_DATABASE_URL): {type(exc).__name__}: {exc}"
    )
    if isinstance(exc, KafkaError):
        return kafka
    if isinstance(exc, asyncpg.PostgresError | asyncpg.InterfaceError):
        return postgres
    if not isinstance(exc, OSError | TimeoutError):
        return None
    origin = raised_in(exc, ("asyncpg", "aiokafka"))
    if origin == "aiokafka":
        return kafka
    if origin == "asyncpg":
        return postgres
    filename = getattr(exc, "filename", None)
    if filename is not None:
        return f"cannot use the file {filename!r}: {exc.strerror or exc}"
    return None


def raised_in(exc: BaseException, packages: tuple[str, ...]) -> str | None:
    """Which of `packages` has the deepest frame in exc's traceback (or in the exceptions it
    was raised from, or during), or None."""
    found: str | None = None
    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        tb = current.__traceback__
        while tb is not None:
            module = tb.tb_frame.f_globals.get("__name__", "")
            top = module.partition(".")[0] if isinstance(module, str) else ""
            if top in packages:
                found = top
            tb = tb.tb_next
        if found is not None:
            return found
        current = current.__cause__ or current.__context__
    return None


def postgres_address(dsn: str) -> str:
    """host:port/database of a DSN, without the user or password."""
    from urllib.parse import urlsplit

    try:
        url = urlsplit(dsn)
        return f"{url.hostname or '?'}:{url.port or 5432}{url.path}"
    except ValueError:
        return "(unparsable METERLINE_DATABASE_URL)"
