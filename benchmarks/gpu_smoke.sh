#!/usr/bin/env bash
# nada-sweep's GPU smoke test: one command on one GPU, PASS/FAIL/SKIP per check and a total (benchmarks/README.md).
#   bash benchmarks/gpu_smoke.sh [--cpu] [--only CHECK,...] [--budget SECONDS]
# Wheels found in .whl/ (or $NADA_WHEELS), as benchmarks/gpu_wheels.sh fetches them, are installed into a private
# folder first: for a GPU machine without pydantic or clip-anytorch that cannot reach a package index.
set -u
cd "$(dirname "$0")/.."
python=${PYTHON:-python3}
wheels=${NADA_WHEELS:-.whl}
if compgen -G "$wheels/*.whl" >/dev/null; then
  site=$(mktemp -d /tmp/nada-smoke-site.XXXXXX)
  "$python" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$site" \
    "$wheels"/*.whl || { echo "FAIL wheels: could not install $wheels/*.whl"; exit 1; }
  export PYTHONPATH="$site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
# The script starts no check after its --budget (265 s); this backstop ends it should Python itself hang
# (a --cpu dry run stretches both six times, as the script does its limits).
limit=${NADA_SMOKE_TIMEOUT:-290}
case " $* " in *" --cpu "*) limit=${NADA_SMOKE_TIMEOUT:-$((290 * 6))} ;; esac
exec timeout -k 5 "$limit" "$python" benchmarks/gpu_smoke.py "$@"
