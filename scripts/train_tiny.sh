#!/usr/bin/env bash
# Reproduce the embedded tiny X-Dyna (assets/tiny-xdyna): stages 0, 1 and 2 within a wall-time
# budget, then held-out evaluation and the model card.
#
#   bash scripts/train_tiny.sh [--minutes 80] [--profile cpu|gpu|auto] [--out outputs/tiny]
#                              [--assets assets/tiny-xdyna] [--train-only | --finish-only]
#                              [--pack DIR] [--extend MINUTES [--lr LR]]
#
# --train-only  train and stop (e.g. on a GPU machine without video libraries); run
#               `--finish-only` later where PyAV is installed to evaluate and write the assets.
# --extend M    then train stage 1 M*0.85 minutes longer from where it stopped (fresh schedule
#               from --lr, default 2e-4) and stage 2 again on top (tiny_recipe extend); on a
#               finished --out it only extends.
# --pack DIR    after training, put the results (final model, summaries, loss curves; no
#               checkpoints) into DIR as tiny.tgz.part-* pieces of 15 MB.
set -euo pipefail
cd "$(dirname "$0")/.."
MINUTES=80 PROFILE=auto OUT=outputs/tiny ASSETS=assets/tiny-xdyna DO_TRAIN=1 DO_FINISH=1 PACK="" EXTRA=() EXTEND="" LR=2e-4
while [ $# -gt 0 ]; do
  case "$1" in
    --minutes) MINUTES="$2"; shift 2 ;;
    --profile) PROFILE="$2"; shift 2 ;;
    --out) OUT="$2"; shift 2 ;;
    --assets) ASSETS="$2"; shift 2 ;;
    --train-only) DO_FINISH=0; shift ;;
    --finish-only) DO_TRAIN=0; shift ;;
    --pack) PACK="$2"; shift 2 ;;
    --extend) EXTEND="$2"; shift 2 ;;
    --lr) LR="$2"; shift 2 ;;
    --size|--image-pool|--seed) EXTRA+=("$1" "$2"); shift 2 ;;
    *) echo "unknown argument $1" >&2; exit 2 ;;
  esac
done
PY=${PYTHON:-python3}
export PYTHONUNBUFFERED=1
# A machine without diffusers (e.g. a bare GPU image) can bring it as wheels in .whl/.
if ! $PY -c "import diffusers" 2>/dev/null && ls .whl/diffusers-*.whl >/dev/null 2>&1; then
  $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --target /tmp/xdyna-site .whl/diffusers-*.whl
  export PYTHONPATH="/tmp/xdyna-site${PYTHONPATH:+:$PYTHONPATH}"
fi
export PYTHONPATH="$PWD${PYTHONPATH:+:$PYTHONPATH}"
if [ "$PROFILE" = auto ]; then
  PROFILE=$($PY -c "import torch; print('gpu' if torch.cuda.is_available() else 'cpu')")
fi
$PY -c "import torch; print('torch', torch.__version__, 'cuda' if torch.cuda.is_available() else 'cpu', torch.cuda.get_device_name(0) if torch.cuda.is_available() else '')"
if [ "$DO_TRAIN" = 1 ]; then
  $PY -m xdyna_core.train.tiny_recipe train --minutes "$MINUTES" --profile "$PROFILE" --out "$OUT" "${EXTRA[@]}" || status=$?
  if [ -z "${status:-}" ] && [ -n "$EXTEND" ]; then
    $PY -m xdyna_core.train.tiny_recipe extend --minutes "$EXTEND" --profile "$PROFILE" --lr "$LR" --out "$OUT" || status=$?
  fi
  if [ -n "$PACK" ]; then
    mkdir -p "$PACK"
    files=$(cd "$OUT" && ls -d recipe.json tiny-xdyna stage*/summary.json stage*/loss.png stage*/losses.json stage*/validation 2>/dev/null || true)
    (cd "$OUT" && tar -czf - $files) | split -b 15m - "$PACK/tiny.tgz.part-"
    ls -la "$PACK"
  fi
  [ -z "${status:-}" ] || exit "$status"
fi
if [ "$DO_FINISH" = 1 ]; then
  $PY -m xdyna_core.train.tiny_recipe finish --out "$OUT" --assets "$ASSETS"
fi
