#!/usr/bin/env bash
# Creates .venv and installs nada-sweep with its test extras; a no-op when it is already there.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/nada-sweep ] || [ pyproject.toml -nt .venv/.installed ]; then
    [ -d .venv ] || "$PYTHON" -m venv .venv
    .venv/bin/pip install --quiet --upgrade pip "setuptools<81" wheel
    # torch first and pinned: this build is the one available offline on our machines; pyproject admits newer.
    .venv/bin/pip install --quiet "torch==2.14.1" "torchvision==0.29.1"
    .venv/bin/pip install --quiet -e ".[test]"
    touch .venv/.installed
fi
