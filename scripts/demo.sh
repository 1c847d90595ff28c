#!/usr/bin/env bash
# The whole pipeline on built-in tiny random-weight models: sweep, leaderboard and gallery, a few minutes on CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
exec .venv/bin/nada-sweep run sweep.yaml --demo "$@"
