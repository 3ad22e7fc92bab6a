#!/usr/bin/env bash
# GPU check for a lent GPU machine (written for one H200): device and CUDA facts, the model
# parity tests with the GPU selected, the model benchmark in bf16, the end-to-end benchmark
# (the real `segment` command on an embedded Ray vs the in-process pipeline), and the engine's
# capacity without the model (CPU per 1024 px window with the node's cores). Bounded to under 10
# minutes (a timeout per step); a failing step is recorded and the next one still runs.
#
#   bash scripts/setup.sh          # once: .venv with the project (needs a package index)
#   bash deploy/gpu_check.sh       # from the repository root
#
# Everything is written under $OUT (default ./out/gpu_check): nvidia_smi.txt, torch_cuda.txt,
# pytest_gpu.txt, pytest_gpu.xml, bench_model.txt, bench_model.json, bench_e2e.txt, bench_e2e.json,
# bench_e2e.md, bench_capacity.txt, bench_capacity.json, summary.txt (bench_e2e/: the e2e run's
# logs and outputs).
# PYTHON overrides the interpreter (default .venv/bin/python, else python3).
set -u -o pipefail
cd "$(dirname "$0")/.."

OUT=${OUT:-$PWD/out/gpu_check}   # out/ is git-ignored
mkdir -p "$OUT"
if [ -z "${PYTHON:-}" ]; then
  if [ -x .venv/bin/python ]; then PYTHON=.venv/bin/python; else PYTHON=python3; fi
fi
export HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
# The model tests (tests/conftest.py DEVICE) run their predictors and SamPredictor on this device,
# with TF32 off so the fp32 parity bound of 1e-5 still applies.
export WSISAM_TEST_DEVICE=cuda

SUMMARY="$OUT/summary.txt"
: > "$SUMMARY"
failed=0
t_start=$(date +%s)

# step NAME SECONDS LOGFILE COMMAND...: runs COMMAND with a time limit, output to the terminal
# and to LOGFILE, and records its exit status (124: timed out) in summary.txt.
step() {
  local name=$1 limit=$2 log=$3
  shift 3
  local t0 rc
  t0=$(date +%s)
  echo "=== $name (limit ${limit}s) ==="
  timeout --kill-after=10 "$limit" "$@" 2>&1 | tee "$log"
  rc=${PIPESTATUS[0]}
  printf '%-14s rc=%-4s %4ss\n' "$name" "$rc" "$(( $(date +%s) - t0 ))" | tee -a "$SUMMARY"
  [ "$rc" -eq 0 ] || failed=1
}

# 1. The device as the driver sees it.
step nvidia-smi 20 "$OUT/nvidia_smi.txt" nvidia-smi

# 2. PyTorch's view: version, CUDA build, device, bf16, memory, one bf16 matmul on the GPU.
step torch-cuda 60 "$OUT/torch_cuda.txt" "$PYTHON" - <<'EOF'
import sys
import torch
print("python", sys.version.split()[0])
print("torch", torch.__version__, "cuda build", torch.version.cuda, "cudnn", torch.backends.cudnn.version())
print("cuda available", torch.cuda.is_available())
if not torch.cuda.is_available():
    sys.exit(1)
for i in range(torch.cuda.device_count()):
    p = torch.cuda.get_device_properties(i)
    print(f"device {i}: {p.name}, capability {p.major}.{p.minor}, {p.total_memory / 2**30:.1f} GiB, "
          f"{p.multi_processor_count} SMs")
print("bf16 supported", torch.cuda.is_bf16_supported())
a = torch.randn(4096, 4096, device="cuda", dtype=torch.bfloat16)
torch.cuda.synchronize()
start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
start.record()
for _ in range(10):
    a @ a
end.record()
torch.cuda.synchronize()
ms = start.elapsed_time(end) / 10
print(f"bf16 4096^3 matmul: {ms:.3f} ms, {2 * 4096**3 / ms / 1e9:.0f} TFLOP/s")
EOF

# 3. Model parity tests (our SAM path vs segment-anything; WSI-SAM model behaviour).
step pytest-gpu 110 "$OUT/pytest_gpu.txt" \
  "$PYTHON" -m pytest -q -p no:cacheprovider tests/test_sam_parity.py tests/test_wsisam_model.py \
  --junitxml="$OUT/pytest_gpu.xml"

# 4. Model benchmark: encoder s/pair and decoder ms/prompt, vit_tiny and vit_b, bf16 on the GPU.
if [ -x .venv/bin/wsisam-engine ] && [ "$PYTHON" = .venv/bin/python ]; then
  BENCH=(.venv/bin/wsisam-engine)
else
  BENCH=("$PYTHON" -m engine.cli)
fi
step bench-model 130 "$OUT/bench_model.txt" \
  "${BENCH[@]}" bench model --backbones vit_tiny,vit_b --prompts 1,8,64 --device cuda --bf16 \
  --json "$OUT/bench_model.json"

# 5. End to end: 8192 px slide, 80 noisy box prompts, the demo model; Ray path vs in-process
# (time to first batch, model busy share, stage split, peak PSS of every process).
step bench-e2e 110 "$OUT/bench_e2e.txt" \
  "${BENCH[@]}" bench e2e --work-dir "$OUT/bench_e2e" --cache-dir "$OUT/bench_cache" \
  --json "$OUT/bench_e2e.json" --md "$OUT/bench_e2e.md"

# 6. Capacity without the model: a bench instrument in place of the model on generated 40x slides
# (8192 px, --quick sizes), CPU per window and per object by stage, windows/s on Ray with 1 and 2
# actors, and the cores per GPU that implies.
step bench-capacity 110 "$OUT/bench_capacity.txt" \
  "${BENCH[@]}" bench capacity --quick --cache-dir "$OUT/bench_cache" --json "$OUT/bench_capacity.json"

echo "=== summary ($(( $(date +%s) - t_start ))s, output in $OUT) ==="
cat "$SUMMARY"
if [ -s "$OUT/bench_model.txt" ]; then
  echo "--- bench model (bf16, cuda) ---"
  grep '^|' "$OUT/bench_model.txt" || true
fi
if [ -s "$OUT/bench_e2e.md" ]; then
  echo "--- bench e2e ---"
  cat "$OUT/bench_e2e.md"
fi
exit "$failed"
