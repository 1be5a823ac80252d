#!/usr/bin/env bash
# jaxhep on an accelerator machine whose python3 already has JAX for that accelerator (nothing is
# downloaded; jaxhep is installed without its dependencies): the device benchmark
# (npe_device.py), the main job (`jaxhep run`), then the test suite, each under a time limit.
#
#     experiments/benchmarks/device_check.sh OUT_DIR [BENCH_S RUN_S TEST_S]
#
# Logs and JSON go to OUT_DIR. Run it from the repository root.
set -u
out=${1:?usage: device_check.sh OUT_DIR [BENCH_S RUN_S TEST_S]}
bench_s=${2:-200}
run_s=${3:-90}
test_s=${4:-270}
mkdir -p "$out"
export PYTHONUNBUFFERED=1 XLA_PYTHON_CLIENT_PREALLOCATE=false
if ! python3 -m pip install -q --no-deps --no-build-isolation --no-index -e . >"$out/install.log" 2>&1; then
    echo "pip install -e . failed:"; tail -20 "$out/install.log"; exit 1
fi
python3 -c "import jax, jaxlib; print('jax', jax.__version__, 'jaxlib', jaxlib.__version__, jax.devices())"
nvidia-smi --query-gpu=name,memory.total,clocks.sm,clocks.mem --format=csv 2>/dev/null

echo "== npe_device.py (limit ${bench_s} s)"
start=$SECONDS
timeout "$bench_s" python3 experiments/benchmarks/npe_device.py --out "$out" >"$out/bench.log" 2>&1
echo "exit $? after $((SECONDS - start)) s"; tail -8 "$out/bench.log"

echo "== jaxhep run (limit ${run_s} s)"
start=$SECONDS
timeout "$run_s" jaxhep run --out "$out/run" --no-progress >"$out/run.log" 2>&1
echo "exit $? after $((SECONDS - start)) s"; tail -4 "$out/run.log"
cp "$out"/run/*_summary.json "$out/" 2>/dev/null

echo "== pytest (limit ${test_s} s)"
start=$SECONDS
per_test=""
python3 -c "import pytest_timeout" 2>/dev/null && per_test="--timeout 150"  # one stuck test does not eat the rest
timeout "$test_s" python3 -m pytest -q -n 8 -p no:cacheprovider $per_test >"$out/pytest.log" 2>&1
echo "exit $? after $((SECONDS - start)) s"
grep -E "passed|failed|error|FAILED|ERROR|Timeout" "$out/pytest.log" | tail -25
