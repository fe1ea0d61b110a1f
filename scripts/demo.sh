#!/usr/bin/env bash
# One command for a newcomer: set up, fetch the Openclipart demo set, index it, serve it.
#   HIBT_MODEL / HIBT_PRETRAINED / HIBT_CHECKPOINT choose the CLIP model (default ViT-B-32,
#   laion2b_s34b_b79k); HOST and PORT where to serve (default 127.0.0.1:8000).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
scripts/fetch_openclipart.sh
SOURCE=data/openclipart/usr/share/openclipart
MODEL=${HIBT_MODEL:-ViT-B-32}

index() {
    .venv/bin/hibt index "$SOURCE" --out "data/index-$1" --model "$1"
}

set +e
index "$MODEL"
status=$?
set -e
if [ "$status" -eq 3 ]; then
    MODEL=tiny-test
    cat >&2 <<'MSG'

==============================================================================
 The pretrained CLIP weights are not available here (see the message above).
 The demo continues with the built-in tiny-test model: its random weights make
 "similar" results meaningless, while copy detection and name search are
 exact. For real similarity, set HIBT_CHECKPOINT=/path/to/checkpoint or run
 once where the weights can be downloaded, then run this script again.
==============================================================================

MSG
    index "$MODEL"
elif [ "$status" -ne 0 ]; then
    exit "$status"
fi
exec .venv/bin/hibt serve "data/index-$MODEL" --host "${HOST:-127.0.0.1}" --port "${PORT:-8000}"
