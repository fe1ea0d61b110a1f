#!/usr/bin/env bash
# Sets up (venv, chromium for the page tests) and runs the linters and the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh --browser
.venv/bin/ruff check .
.venv/bin/ruff format --check .
exec .venv/bin/python -m pytest "$@"
