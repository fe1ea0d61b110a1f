#!/usr/bin/env bash
# Creates .venv with hibt and its test tools installed; safe to run again.
# With --browser, also installs Debian's chromium for the page tests if it is missing.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
    echo "setup: creating .venv"
    "$PYTHON" -m venv .venv
fi
stamp=.venv/.hibt-installed
if [ ! -f "$stamp" ] || [ pyproject.toml -nt "$stamp" ]; then
    echo "setup: installing hibt and its dependencies (torch is large: a few minutes the first time)"
    .venv/bin/python -m pip install --quiet --upgrade pip
    # The ray extra too: the tests of building on a Ray cluster run in CI.
    .venv/bin/python -m pip install --quiet -e '.[test,ray]'
    # The tests drive the server with clip-retrieval's own ClipClient, which needs only
    # requests; the package's dependencies (torch pins, Flask, img2dataset...) are not wanted.
    .venv/bin/python -m pip install --quiet --no-deps 'clip-retrieval>=2.44'
    touch "$stamp"
fi

if [ "${1:-}" = "--browser" ] && [ ! -x /usr/bin/chromium ]; then
    echo "setup: installing Debian's chromium for the browser tests"
    SUDO=""
    [ "$(id -u)" -ne 0 ] && SUDO="sudo"
    $SUDO apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $SUDO apt-get install -y -qq chromium >/dev/null
fi
