#!/usr/bin/env bash
# Starts the KneeAI MONAI Label server. Usage: serve.sh [STUDIES_DIR] [HOST] [PORT]
# With no studies folder, the embedded sample dataset (procedural knee phantoms with synthesised MRI
# contrast and labels) is generated once under .kneeai/sample_studies and served.
set -euo pipefail
cd "$(dirname "$0")/.."
STUDIES=${1:-}
HOST=${2:-127.0.0.1}
PORT=${3:-8000}
export PATH="$PWD/.venv/bin:$PATH"  # the monailabel launcher runs `python` from PATH
export MONAI_LABEL_SESSION_PATH=${MONAI_LABEL_SESSION_PATH:-$PWD/.kneeai/sessions}  # not ~/.cache
if [ -z "$STUDIES" ]; then
  STUDIES="$PWD/.kneeai/sample_studies"
  (cd MonaiLabelApp && python -m lib.synthesis.sample_dataset "$STUDIES")
fi
exec python -m monailabel.main start_server --app "$PWD/MonaiLabelApp" --studies "$STUDIES" \
  --host "$HOST" --port "$PORT" ${KNEEAI_CONF:-}
