"""The `meterline` CLI: one sub-app or command per file in meterline/commands, no domain logic."""

from __future__ import annotations

import typer

from meterline.commands import (
    admin,
    api,
    bench,
    byok,
    demo,
    dev,
    migrate,
    pricing,
    produce,
    reconcile,
    worker,
)
from meterline.commands._common import console, tagged

app = typer.Typer(
    name="meterline",
    help="Usage metering and prepaid credits for LLM traffic.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Variables meterline reads that are no settings class's field: the local state folder, the
# test suite's database and browser, and the bench's lean reference service.
OTHER_VARIABLES = (
    "METERLINE_HOME",
    "METERLINE_TEST_DATABASE",
    "METERLINE_CHROMIUM",
    "METERLINE_REFERENCE_DSN",
    "METERLINE_REFERENCE_ACCOUNTS",
    "METERLINE_REFERENCE_TOKEN",
)


def known_variables() -> set[str]:
    """Every METERLINE_* variable some part of meterline reads."""
    from api.settings import ApiSettings
    from deploy.stack import StackSettings
    from processors.settings import WorkerSettings
    from producers.client import ClientSettings
    from producers.integrations.settings import IntegrationSettings
    from schemas.settings import setting_names

    classes = (ApiSettings, WorkerSettings, StackSettings, ClientSettings, IntegrationSettings)
    return setting_names(classes) | set(OTHER_VARIABLES)


@app.callback()
def _warn_unknown_variables() -> None:
    """Name each METERLINE_* variable that no part of meterline reads (a typo of a setting
    would otherwise leave its default in force without a word)."""
    import os

    from schemas.settings import unknown_variables

    for line in unknown_variables(os.environ, known_variables()):
        console.print(tagged("warning:", "yellow", f" {line}"), soft_wrap=True)


dev.register(app)
demo.register(app)
migrate.register(app)
worker.register(app)
produce.register(app)
pricing.register(app)
api.register(app)
reconcile.register(app)
bench.register(app)
admin.register(app)
byok.register(app)


def main() -> None:
    """The `meterline` command: a setting with a value its rule refuses is named, exit 2."""
    from schemas.settings import InvalidSetting

    try:
        app(prog_name="meterline")
    except InvalidSetting as exc:
        console.print(tagged("error:", "bold red", f" {exc}"))
        raise SystemExit(2) from None
