#!/usr/bin/env bash
# The test suite (slow tests included), after making sure the environment exists: the venv, and the headless
# Chromium + ChromeDriver that the gallery's browser test drives.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
if ! command -v chromium >/dev/null || ! command -v chromedriver >/dev/null; then
    if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
        echo "installing Debian's chromium and chromium-driver for the browser test ..." >&2
        DEBIAN_FRONTEND=noninteractive apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver >/dev/null
    else
        echo "the browser test needs Chromium and ChromeDriver: install Debian's chromium and chromium-driver" \
             "(sudo apt-get install chromium chromium-driver) or your system's equivalent, then rerun" >&2
        exit 1
    fi
fi
exec .venv/bin/python -m pytest "$@"
