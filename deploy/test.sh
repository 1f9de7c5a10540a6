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
if ! .venv/bin/meterline dev status >/dev/null 2>&1; then
  echo "== stack: meterline dev up"
  .venv/bin/meterline dev up
  started_here=1
fi
cleanup() { if [ "$started_here" = 1 ]; then .venv/bin/meterline dev down || true; fi; }
trap cleanup EXIT

echo "== tests: unit + integration against the real services"
.venv/bin/pytest "$@"
