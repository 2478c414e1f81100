#!/usr/bin/env bash
# The GPU rows in one command, for a machine with a GPU:
#   bash benchmarks/gpu_checks.sh            # writes into $OUT (where set) or outputs/gpu_checks
# The decoding benchmark needs only torch and numpy beside src/ (no install). It runs twice, eager and
# with decoder.compile (torch.compile with CUDA graphs), each into its own section of
# $OUT/benchmarks_gpu.md and its own JSON; copy the sections into docs/benchmarks.md.
# Extra arguments go to both decoding runs (e.g. --repeats 5 --batch-sizes 1 for a dry run on a CPU).
# Every decoding row carries the roofline prediction for this GPU (--gpu, default: the CUDA device's
# entry in src/rsdvla/decoding/roofline.py) beside the measured ratios, and on a GPU the prediction's
# error against the measured wall ratio (docs/benchmarks.md, "GPU prediction").
# Then the evaluation throughput (benchmarks/bench_eval.py, at the end of this file).
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
# LIBERO evaluation throughput (issue 15) with the tiny OpenVLA-OFT checkpoint (real remote code, random
# weights) at N = 1, 8, 16 simulator workers. Needs the `sim` extra and the openvla pins, and the
# checkpoint builder in ${OFT_SHARED:-../shared/oft}; skipped with one line where they are missing.
oft_shared="$(cd "${OFT_SHARED:-../shared/oft}" 2>/dev/null && pwd || true)"
if [ -n "$oft_shared" ] && [ -f "$oft_shared/build_oft_tiny.py" ] \
  && python3 -c 'import libero, mujoco, transformers, timm' 2>/dev/null; then
  export MUJOCO_GL=egl PYOPENGL_PLATFORM=egl
  oft="$(mkdir -p "$out/oft_tiny" && cd "$out/oft_tiny" && pwd)"
  if [ ! -f "$oft/config.json" ]; then
    (cd "$oft_shared" && PYTHONPATH="$oft_shared/harness:$PYTHONPATH" python3 build_oft_tiny.py "$oft")
    python3 - "$oft" <<'PY'
import importlib.util, sys
from pathlib import Path
spec = importlib.util.spec_from_file_location("probe", "benchmarks/oft_pooling_probe.py")
probe = importlib.util.module_from_spec(spec); spec.loader.exec_module(probe)
probe.write_seeded_projector(Path(sys.argv[1]), 64)
PY
  fi
  python3 benchmarks/bench_eval.py --backbones openvla_oft --oft-checkpoint "$oft" --oft-hidden-dim 64 \
    --device cuda --num-envs 1 8 16 --task-ids 0 1 2 3 --trials 8 --max-steps 120 \
    --docs "$out/benchmarks_gpu.md" --section "## Evaluation throughput (GPU, tiny OpenVLA-OFT)" \
    --json "$out/bench_eval_gpu.json" 2>&1 | tee "$out/eval.log"
else
  echo "evaluation throughput skipped: needs the sim extra, the openvla pins (timm) and ${OFT_SHARED:-../shared/oft}/build_oft_tiny.py" \
    | tee "$out/eval.log"
fi
