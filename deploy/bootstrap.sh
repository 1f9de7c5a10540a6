#!/usr/bin/env bash
# Install what meterline needs on a fresh Debian-like machine: a JDK and Maven (for the Kafka
# broker), PostgreSQL's server binaries, Chromium (the dashboard's browser tests drive it with
# Playwright; no browser download), and a Python 3.11+ virtualenv with meterline in it.
# Safe to run again; installs only what is missing. Needs root (or sudo) for apt-get.
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v java >/dev/null 2>&1 || need+=(openjdk-17-jre-headless)
command -v mvn >/dev/null 2>&1 || need+=(maven)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || command -v initdb >/dev/null 2>&1 \
  || need+=(postgresql)
command -v runuser >/dev/null 2>&1 || need+=(util-linux)
[ -x "${METERLINE_CHROMIUM:-/usr/bin/chromium}" ] || need+=(chromium)
if [ "${#need[@]}" -gt 0 ]; then
  echo "bootstrap: installing ${need[*]} with apt-get"
  SUDO=""; [ "$(id -u)" -eq 0 ] || SUDO="sudo"
  $SUDO apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

PY="${PYTHON:-python3}"
"$PY" - <<'PYCHECK'
import sys
if sys.version_info < (3, 11):
    sys.exit(f"meterline needs Python 3.11+, found {sys.version.split()[0]}")
PYCHECK
if [ ! -x .venv/bin/python ]; then
  echo "bootstrap: creating .venv"
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install -q --upgrade pip
# The litellm extra: the LiteLLM proxy the integration tests start (see docs/litellm.md).
.venv/bin/python -m pip install -q -e '.[dev,litellm]'
echo "bootstrap: ready (.venv/bin/meterline)"
