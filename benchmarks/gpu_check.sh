#!/usr/bin/env bash
# The GPU checks in one prepared call, for a session lent a GPU machine (../shared/gpu/README.md):
#   here, once:  python ../shared/gpu/make-carry.py          (writes .gpu/: the offline MiniLM, float16)
#   device run:  carry [".gpu"], command "bash benchmarks/gpu_check.sh", timeout_s 600 (the parts: 90 + 200 + 180 + 75 + 45 s at most)
# The most important result first; each part has a timeout and tees into $OUT, so a run cut short
# still brings its logs back. Commit what it measured with the card's description (gpu.txt).
set -u
OUT=${OUT:-/tmp/gpu_out}
mkdir -p "$OUT"
export PYTHONPATH=$PWD/.gpu/site:$PWD HF_HUB_OFFLINE=1 PYTHONUNBUFFERED=1
nvidia-smi -L > "$OUT/gpu.txt" 2>&1
python3 -c "import torch, transformers, tokenizers; print(torch.__version__, torch.version.cuda, transformers.__version__, tokenizers.__version__)" >> "$OUT/gpu.txt" 2>&1
cat "$OUT/gpu.txt"
# 1. the GPU tests (and the suite's GPU-sensitive modules) with the real kernels
timeout 90 python3 -m pytest -q -p no:cacheprovider -p no:benchmark -rfE tests/test_gpu.py tests/test_packing.py \
    tests/test_transfer.py tests/test_device.py tests/test_families.py 2>&1 | tee "$OUT/gpu_tests.log" | tail -15
# 2. the whole suite, written to pass on a GPU machine (dask and openvino tests skip there)
timeout 200 python3 -m pytest -q -n 14 -p no:cacheprovider -p no:benchmark -rfE 2>&1 | tee "$OUT/suite.log" | tail -25
# 3. throughput on the GPU: distinct texts; skbert's default and cache=None against a plain sorted bf16 loop and
#    sentence-transformers at its fastest; MFU (the summary table holds the ratios)
timeout 180 python3 benchmarks/throughput.py --device cuda 2>&1 | tee "$OUT/throughput.log" | tail -20
cp benchmarks/results/*cuda* "$OUT/" 2>/dev/null || true
# 4. is the GPU kept busy? the device's share of a long call's wall time (profiler), bert-base and MiniLM
timeout 75 python3 benchmarks/gpu_busy.py --device cuda --n 40000 2>&1 | tee "$OUT/gpu_busy.log" | tail -8
cp benchmarks/results/*cuda* "$OUT/" 2>/dev/null || true
# 5. packed or padded: one batch each way as its padding grows (the data for attention="auto"'s choice)
timeout 45 python3 benchmarks/layouts.py --device cuda --repeats 3 2>&1 | tee "$OUT/layouts.log" | tail -12
cp benchmarks/results/*cuda* "$OUT/" 2>/dev/null || true
