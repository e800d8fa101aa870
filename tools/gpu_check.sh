#!/usr/bin/env bash
# The GPU check, for a bare GPU node within a short lease (about 6 minutes on one H100): installs the
# project from the wheelhouse when its dependencies are missing (tools/wheelhouse.py), runs the CUDA
# tests and the GPU benchmark, and writes everything to $OUT:
#   env.txt  install.log  cuda_tests.xml  cuda_tests.log  gpu_benchmark.json  sem_seg_benchmark.json
#   cat_seg_benchmark.json  app_benchmark.json  memory_benchmark.json  gpu_check.log
#
#   OUT=output/gpu_check WHEELHOUSE=wheelhouse-cp312 tools/gpu_check.sh     (or: make gpu-check)
# BENCH_ARGS passes options to tools/benchmark_gpu.py (e.g. "--skip largest"), SEG_ARGS to
# tools/benchmark_sem_seg.py, CATSEG_ARGS to tools/benchmark_cat_seg.py, MEMORY_RECIPES to
# tools/benchmark_memory.py (which recipes' predicted peaks to check); TEST_TIMEOUT, BENCH_TIMEOUT,
# SEG_TIMEOUT, CATSEG_TIMEOUT, APP_TIMEOUT and MEMORY_TIMEOUT (seconds) bound the parts,
# so a hung step still leaves the others' results.
set -uo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-python}
OUT=${OUT:-output/gpu_check}
TAG=$($PY -c 'import sys; print("cp%d%d" % sys.version_info[:2])')
WHEELHOUSE=${WHEELHOUSE:-wheelhouse-$TAG}
mkdir -p "$OUT"
exec > >(tee "$OUT/gpu_check.log") 2>&1
echo "== $(date -u +%FT%TZ) on $(hostname)"
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv 2>/dev/null || echo "no nvidia-smi"

if ! $PY -c "import detectron2, open_clip, panopticapi" 2>/dev/null; then
    echo "== installing from $WHEELHOUSE"
    $PY tools/wheelhouse.py install --wheelhouse "$WHEELHOUSE" --prefix "${PREFIX:-/tmp/densevlm_d2-prefix}" \
        --env-file "$OUT/pythonpath.sh" 2>&1 | tee "$OUT/install.log" || exit 1
    source "$OUT/pythonpath.sh"
fi
$PY -m detectron2.utils.collect_env > "$OUT/env.txt" 2>&1
echo "== installed after ${SECONDS} s"

echo "== CUDA tests"
timeout "${TEST_TIMEOUT:-240}" $PY -m pytest tests/cuda -q -rs -p no:cacheprovider \
    --junitxml "$OUT/cuda_tests.xml" 2>&1 | tee "$OUT/cuda_tests.log"
echo "== CUDA tests: exit ${PIPESTATUS[0]} after ${SECONDS} s"

echo "== GPU benchmark"
timeout "${BENCH_TIMEOUT:-300}" $PY tools/benchmark_gpu.py --out "$OUT/gpu_benchmark.json" ${BENCH_ARGS:-}
echo "== benchmark: exit $? after ${SECONDS} s"

echo "== segmentation benchmark (ADE-150 protocol, EVA02-B/16)"
timeout "${SEG_TIMEOUT:-150}" $PY tools/benchmark_sem_seg.py --device cuda --images 20 --warmup 2 \
    --out "$OUT/sem_seg_benchmark.json" ${SEG_ARGS:-}
echo "== segmentation benchmark: exit $? after ${SECONDS} s"

echo "== CAT-Seg benchmark (EVA02-B/16, 384 px, 171 training / 150 test classes, bf16 training)"
timeout "${CATSEG_TIMEOUT:-120}" $PY tools/benchmark_cat_seg.py --device cuda --amp bfloat16 \
    --batch 4 --iters 10 --warmup 2 --images 10 --out "$OUT/cat_seg_benchmark.json" ${CATSEG_ARGS:-}
echo "== CAT-Seg benchmark: exit $? after ${SECONDS} s"

echo "== app latency (the demo's CLIP and EVA02-B/16 at 336 and 448 px; densevlm_d2.predictor)"
timeout "${APP_TIMEOUT:-90}" $PY tools/benchmark_app.py --device cuda --out "$OUT/app_benchmark.json"
echo "== app benchmark: exit $? after ${SECONDS} s"

echo "== memory plan against the real peaks (one training step at 1 image, with and without checkpointing)"
timeout "${MEMORY_TIMEOUT:-240}" $PY tools/benchmark_memory.py --gpu-check --gpu-batch 1 \
    --recipes ${MEMORY_RECIPES:-densevlm-b16 catseg-b16 fvit-b16-ovcoco} --out "$OUT/memory_benchmark.json"
echo "== memory benchmark: exit $? after ${SECONDS} s"
