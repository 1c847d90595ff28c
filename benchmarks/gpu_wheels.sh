#!/usr/bin/env bash
# The wheels benchmarks/gpu_smoke.sh installs on a GPU machine that lacks pydantic and clip-anytorch and cannot
# reach a package index (CPython 3.12, x86-64 Linux), at the versions installed where this runs.
#   bash benchmarks/gpu_wheels.sh [DIR]        # default .whl; run with the project's Python (PYTHON=...)
set -eu
cd "$(dirname "$0")/.."
dir=${1:-.whl}
python=${PYTHON:-python3}
# setuptools < 81: clip imports pkg_resources; typing-extensions: pydantic needs a recent one.
packages="pydantic pydantic-core annotated-types typing-inspection typing-extensions"
packages="$packages clip-anytorch ftfy wcwidth setuptools"
pins=$("$python" - $packages <<'PY'
import sys
from importlib.metadata import PackageNotFoundError, version

for name in sys.argv[1:]:
    try:
        print(f"{name}=={version(name)}")
    except PackageNotFoundError:
        print(name if name != "setuptools" else "setuptools<81")
PY
)
# shellcheck disable=SC2086  # one argument per pin
"$python" -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
  -d "$dir" $pins
du -sh "$dir"
