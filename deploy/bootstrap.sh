#!/usr/bin/env bash
# Install what meterline needs on a fresh Debian-like machine: a JDK and Maven (for the Kafka
# broker), PostgreSQL's server binaries, Chromium (the dashboard's browser tests drive it with
# Playwright; no browser download), and a Python 3.11+ virtualenv with meterline in it.
# Safe to run again; installs only what is missing. Needs root (or sudo) for apt-get.
set -euo pipefail
cd "$(dirname "$0")/.."

# Each step that fetches over the network is tried 3 times, 10 s apart: one dropped connection
# to a mirror must not fail a fresh machine's whole run.
retry() {
  local n
  for n in 1 2 3; do
    "$@" && return 0
    [ "$n" = 3 ] || { echo "bootstrap: '$*' failed (try $n of 3); again in 10 s" >&2; sleep 10; }
  done
  return 1
}

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
  # Acquire::Retries: apt retries a failed download itself before our retry runs it again.
  retry $SUDO apt-get -o Acquire::Retries=3 update -qq
  retry $SUDO env DEBIAN_FRONTEND=noninteractive apt-get -o Acquire::Retries=3 install -y -qq \
    --no-install-recommends "${need[@]}"
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
# A newer pip is welcome, not needed (the venv's own installs everything below): an index that
# cannot be reached here must not stop the run.
.venv/bin/python -m pip install -q --upgrade pip \
  || echo "bootstrap: could not upgrade pip; going on with $(.venv/bin/python -m pip --version)" >&2
# The litellm extra: the LiteLLM proxy the integration tests start (see docs/litellm.md).
# pip retries each connection itself (--retries 5); a whole new try covers a broken download.
retry .venv/bin/python -m pip install -q -e '.[dev,litellm]'
echo "bootstrap: ready (.venv/bin/meterline)"
