#!/usr/bin/env bash
# The GPU checks of issues 13 and 14, prepared for one device session (about 8 minutes on an H100):
#   the CUDA tests (engine, CUDA-graph static decode, fp8/int8/int4 modules), then
#   benchmarks/quantize_cuda.py (bf16 vs fp8_dynamic / int8_weight_only / int4_weight_only, CUDA graphs, golden
#   accuracy of jp-large on the GPU), then benchmarks/speculative.py --quick on the GPU (bf16 target and draft).
# Run from the repository root: `bash benchmarks/gpu_checks.sh`; results and the log go to $OUT (else
# /tmp/gpu-checks): quantize_cuda.json (written after each model, so a cut run keeps what it measured),
# speculative_cuda.json, gpu_checks.log. Each step has its own time limit (510 s in all), so one that hangs
# does not take the others' time.
#
# Before the device call: the tracked tree is ~69.5 MiB and the device tool takes 64 MiB. Move the EAGLE block
# out of the checkout for the call and back after (`mv src/joulepath/model/zoo/jp-large/eagle_draft.safetensors
# /tmp/`; speculative then runs without the EAGLE proposer), and check the size first:
#   git ls-files -z | xargs -0 stat -c %s 2>/dev/null | awk '{s+=$1} END {print s/2^20 " MiB"}'
set -u
export PYTHONPATH=src PYTHONUNBUFFERED=1
py="${PYTHON:-python3}"  # the device machine's python3 holds torch; here: PYTHON=.venv/bin/python
export JOULEPATH_BENCH_DIR="${OUT:-/tmp/gpu-checks}"
mkdir -p "$JOULEPATH_BENCH_DIR"
log="$JOULEPATH_BENCH_DIR/gpu_checks.log"
step() {  # step <seconds> <name> <command...>
    local limit=$1 name=$2
    shift 2
    echo "=== $name (limit ${limit}s) $(date -u +%H:%M:%S)" | tee -a "$log"
    timeout -k 5 "$limit" "$@" 2>&1 | tee -a "$log" | tail -n 60
    echo "=== $name: exit ${PIPESTATUS[0]} $(date -u +%H:%M:%S)" | tee -a "$log"
}
step 10 "device" nvidia-smi --query-gpu=name,driver_version,power.limit,memory.total --format=csv
step 120 "cuda tests" "$py" -m pytest -q -p no:warnings -p no:cacheprovider -m gpu tests/engine/test_cuda.py tests/optimize/test_quant_cuda.py
step 270 "quantize_cuda" "$py" benchmarks/quantize_cuda.py
step 110 "speculative (GPU, quick)" "$py" benchmarks/speculative.py --quick
ls -la "$JOULEPATH_BENCH_DIR"
