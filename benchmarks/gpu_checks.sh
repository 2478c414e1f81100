#!/usr/bin/env bash
# Issue 10's GPU rows in one command, for a session lent a GPU machine (`device` tool):
#   bash benchmarks/gpu_checks.sh            # writes into $OUT (the device tool's folder) or outputs/gpu_checks
# The decoding benchmark needs only torch and numpy beside src/ (no install). It runs twice, eager and
# with decoder.compile (torch.compile with CUDA graphs), each into its own section of
# $OUT/benchmarks_gpu.md and its own JSON; copy the sections into docs/benchmarks.md.
# Extra arguments go to both runs (e.g. --repeats 5 --batch-sizes 1 for a dry run on a CPU).
set -euo pipefail
cd "$(dirname "$0")/.."
out="${OUT:-outputs/gpu_checks}"
mkdir -p "$out"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
python3 -c 'import torch; print("torch", torch.__version__, "cuda", torch.cuda.is_available(),
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else "")' | tee "$out/device.txt"
python3 benchmarks/bench_decode.py --repeats 30 "$@" --docs "$out/benchmarks_gpu.md" \
  --section "## Decoding speed (GPU)" --json "$out/bench_decode_gpu.json" 2>&1 | tee "$out/eager.log"
python3 benchmarks/bench_decode.py --repeats 30 "$@" --compile --docs "$out/benchmarks_gpu.md" \
  --section "## Decoding speed (GPU, decoder.compile)" --json "$out/bench_decode_gpu_compiled.json" \
  2>&1 | tee "$out/compiled.log"
