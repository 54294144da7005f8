#!/usr/bin/env bash
# Creates (or refreshes) the project's pinned virtual environment in .venv.
# Nothing is written outside the checkout except pip's own download cache.
# Re-running is cheap: it reinstalls only when requirements/lock.txt changed.
set -euo pipefail
cd "$(dirname "$0")/.."
VENV=.venv
LOCK=requirements/lock.txt
PYTHON=${KNEEAI_PYTHON:-python3.11}
stamp="$VENV/.lock-sha256"
want=$(sha256sum "$LOCK" pyproject.toml | sha256sum | cut -d' ' -f1)
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ]; then
  exit 0
fi
if [ ! -x "$VENV/bin/python" ]; then
  "$PYTHON" -m venv "$VENV"
fi
# Every package is pinned in the lock file and installed without dependency resolution, so nothing can
# pull a CUDA build of torch; PIP_CONSTRAINT makes isolated builds obey the same pins.
export PIP_CONSTRAINT="$PWD/$LOCK"
"$VENV/bin/python" -m pip install --quiet --no-deps -r "$LOCK"
"$VENV/bin/python" -m pip install --quiet --no-deps --no-build-isolation -e .
echo "$want" > "$stamp"
