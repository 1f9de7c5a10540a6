#!/usr/bin/env bash
# The test command: install, lint and type-check, bring the real Kafka + PostgreSQL stack up,
# run every test (unit and integration; integration never skips), take the stack down.
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/bootstrap.sh

echo "== lint: ruff, mypy (strict), import contracts"
.venv/bin/ruff check .
.venv/bin/ruff format --check .
.venv/bin/mypy
.venv/bin/lint-imports

started_here=0
cleanup() { if [ "$started_here" = 1 ]; then .venv/bin/meterline dev down || true; fi; }
trap cleanup EXIT
if ! .venv/bin/meterline dev status >/dev/null 2>&1; then
  echo "== stack: meterline dev up"
  started_here=1  # set before up: a half-started stack is taken down too
  .venv/bin/meterline dev up
fi

echo "== tests: unit + integration against the real services"
.venv/bin/pytest "$@"
