#!/usr/bin/env bash
# The demo: install what is missing, bring Kafka + PostgreSQL up, start the worker and the API,
# publish a synthetic stream, and show throughput and balances checked against the ledger.
set -euo pipefail
cd "$(dirname "$0")/.."
bash deploy/bootstrap.sh
exec .venv/bin/meterline demo "$@"
