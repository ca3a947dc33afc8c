#!/usr/bin/env bash
# GPU benchmark behind README "Speed and memory": our pipeline in its plain reference
# mode and the optimised default (plus memory modes and fast presets) on the full-size
# X-Dyna architecture with random weights, 896x512, 25 steps, 16 and 64 frames, CFG 7.5;
# and, as a separate phase, the official implementation on the same GPU.
#
# Run from the repository root on a lent H100/H200 (device tool), one phase per call
# (minutes are estimates from earlier H200 timings of this architecture):
#   bash benchmarks/gpu_bench.sh core       # ~5-6 min: default 16+64, fp32 16 (PSNR), reference fp16 16+64
#   bash benchmarks/gpu_bench.sh presets    # ~3-4 min: fast-* presets vs default (16 frames), window batching
#   bash benchmarks/gpu_bench.sh memory     # ~4-5 min: channels-last, cuDNN attention, lean, offload x2, compile, GPU tests
#   bash benchmarks/gpu_bench.sh official   # ~3-4 min: official code, 16 and 64 frames
# One device session (15 min) fits core + presets; memory + official fit a second one.
# Carry: .whl (diffusers 0.42.1 + importlib_metadata wheels; .whl/official/ for the
# official phase) and, for `official`, .official (a copy of bytedance/X-Dyna at 9a54f8e,
# see "official phase" below). Results: JSON, logs and nvidia-smi in $OUT (or
# /tmp/xdyna-bench when run by hand).
#
# official phase: the official code is fetched beside the project and never committed.
# In the calling session (not on the device):
#   echo /.official/ >> .git/info/exclude
#   mkdir -p .official/X-Dyna && git -C <mirror of bytedance/X-Dyna> archive 9a54f8e animatediff configs | tar -x -C .official/X-Dyna
# The official code needs diffusers 0.24 (+ huggingface_hub 0.25.2, transformers 4.46.3,
# tokenizers 0.20.3 for Python 3.12): the wheels in .whl/official/ go into their own
# folder /tmp/offsite, so the two diffusers versions never meet. Its xformers calls are
# routed to torch SDPA in-process by benchmarks/official_speed.py (no file is patched).
set -uo pipefail
PHASE=${1:-core}
OUT=${OUT:-/tmp/xdyna-bench}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1 OMP_WAIT_POLICY=PASSIVE HF_HUB_OFFLINE=1 TOKENIZERS_PARALLELISM=false
ROOT=$(pwd)

log() { echo "[gpu_bench $(date +%H:%M:%S)] $*"; }

ours_env() {
  if ! python3 -c "import diffusers" 2>/dev/null; then
    python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site \
      .whl/diffusers-0.42.1-py3-none-any.whl .whl/importlib_metadata-*.whl || exit 1
  fi
  export PYTHONPATH=/tmp/site:$ROOT
}

info() {
  nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm,power.limit --format=csv > "$OUT/gpu.csv" 2>&1
  python3 -c "import torch, sys; print(sys.version.split()[0], torch.__version__, torch.version.cuda, torch.cuda.get_device_name())" >> "$OUT/gpu.csv" 2>&1
  cat "$OUT/gpu.csv"
}

core() {
  ours_env
  log "core: default 16+64, fp32 16 (numerical reference), reference fp16 16+64"
  timeout 560 python3 -m xdyna_core.cli bench --frames 16,64 --steps 25 --unet-repeats 3 \
    --modes default:16+64,fp32:16,reference:16+64 \
    --json "$OUT/bench_core.json" 2>&1 | tee "$OUT/bench_core.log"
}

presets() {
  ours_env
  log "presets: fast-* against the default on the same inputs (16 frames), window batching (64 frames, 10 steps)"
  timeout 560 python3 -m xdyna_core.cli bench --frames 16 --steps 25 --unet-repeats 3 \
    --modes default:16,fast-dpmpp:16,fast-truncate:16,fast-deepcache:16,fast-all:16,batched:64@10 \
    --json "$OUT/bench_presets.json" 2>&1 | tee "$OUT/bench_presets.log"
}

memory() {
  ours_env
  log "memory: channels-last, cuDNN attention, lean (chunking), model/sequential offload, compile (timed separately)"
  timeout 460 python3 -m xdyna_core.cli bench --frames 16 --steps 25 --unet-repeats 3 \
    --modes default:16@10,channels-last:16@10,cudnn-attention:16@10,lean:16+64@10,offload:16@10,compiled:16@10,sequential-offload:16@3 \
    --json "$OUT/bench_memory.json" 2>&1 | tee "$OUT/bench_memory.log"
  log "memory: CUDA tests (tiny model)"
  timeout 100 python3 -m pytest -q -m gpu -p no:cacheprovider tests/test_speedups.py tests/test_pipeline.py 2>&1 | tee "$OUT/gpu_tests.log"
}

official() {
  if [ ! -d .official/X-Dyna/animatediff ]; then
    echo "official: .official/X-Dyna is missing; see the header of this script"; return 1
  fi
  rm -rf /tmp/X-Dyna && cp -r .official/X-Dyna /tmp/X-Dyna
  python3 -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/offsite \
    .whl/official/*.whl || return 1
  log "official: bytedance/X-Dyna 9a54f8e, fp16 + autocast as inference_xdyna.py, 16 and 64 frames"
  # our repository is only read for tests/data/official_keys/sd15_unet_config.json
  PYTHONPATH=/tmp/offsite timeout 400 python3 benchmarks/official_speed.py --official-root /tmp/X-Dyna \
    --frames 16,64 --steps 25 --json "$OUT/official.json" 2>&1 | grep -v "it/s\]" | tee "$OUT/official.log"
}

info
case "$PHASE" in
  core) core ;;
  presets) presets ;;
  memory) memory ;;
  official) official ;;
  all) core; presets; memory; official ;;
  *) echo "usage: $0 core|presets|memory|official|all"; exit 2 ;;
esac
log "done; files in $OUT:"; ls -la "$OUT"
