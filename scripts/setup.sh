#!/usr/bin/env bash
# Creates .venv and installs the project with its test extras (about 6 minutes on a fresh machine).
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python3.11}
command -v "$PY" >/dev/null || PY=python3
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet -e ".[test]"
# Compile the packing's local search now (numba caches it), not in the first run's planning.
.venv/bin/python -m engine.packing_search
# GDAL's command-line tools, used by tests to check that GIS software opens our outputs.
if ! command -v ogrinfo >/dev/null 2>&1 && command -v apt-get >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
  (apt-get update -qq && apt-get install -y -qq gdal-bin >/dev/null) || echo "setup: gdal-bin not installed; GDAL checks will be skipped" >&2
fi
