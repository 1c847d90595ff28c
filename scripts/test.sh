#!/usr/bin/env bash
# The test suite (slow tests included), after making sure the environment exists.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/python -m pytest "$@"
