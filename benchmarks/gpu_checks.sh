#!/usr/bin/env bash
# The GPU figures of the issues, as one prepared script for a lent H100/H200.
#
# Two parts:
#   benchmarks/gpu_checks.sh prepare   # HERE (with internet to PyPI): wheels + data into .gpu/
#   benchmarks/gpu_checks.sh run       # THERE, from the repository root, results under $OUT
#   benchmarks/gpu_checks.sh run sweep study   # THERE, a rerun of some steps on the warm machine
#
# The device image has torch, torchvision, numpy, scipy, numba, pandas, matplotlib, tqdm,
# opt_einsum and pytest, but not quimb, cotengra, autoray or cytoolz, and no network: `prepare`
# downloads those as Python 3.12 wheels and copies Fashion-MNIST into `.gpu/` (ignored by git
# through .git/info/exclude), and the device call carries that folder:
#
#   run(command="bash benchmarks/gpu_checks.sh run", carry=[".gpu"], timeout_s=560)
#
# Steps, in order of priority, each under its own time limit. Results go to /tmp/gpu (JSON,
# logs, the run folder) and are packed into $OUT/gpu_results.tar.gz after every step (the device
# returns at most 8 files), so a later step running out of time does not lose earlier figures:
#   1. the CUDA tests (tests/test_cuda.py, test_mps.py, test_truncate.py)
#   2. bench_spectra --device cuda                       (issue 2: atlas on the GPU)
#   3. bench_train resnet50 fashion-mnist --save         (issue 3: >= 94 % in <= 5 min)
#   4. bench_layers --device cuda                        (issue 5: <= 1.1x dense step time)
#   5. bench_sweep --device cuda --full --no-naive       (issue 4: <= 120 s; naive ~450 s)
#   6. examples/resnet_cuts.py --full                    (issue 4: run folder for the README)
# Steps 5 and 6 use the checkpoint of step 3 (same machine, $TNCONV_CACHE).
set -uo pipefail
cd "$(dirname "$0")/.."

prepare() {
    grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >> .git/info/exclude
    mkdir -p .gpu/whl .gpu/data/fashion-mnist
    for pkg in quimb==1.15.0 cotengra==0.8.3 autoray==0.11.0 cytoolz==1.2.0; do
        python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
            --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
            --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
            --platform manylinux1_x86_64 -d .gpu/whl "$pkg" || exit 1
    done
    cp /usr/share/datasets/fashion-mnist/*-ubyte.gz .gpu/data/fashion-mnist/ || exit 1
    du -sh .gpu
}

want() {  # want NAME: true when no steps were named or NAME is among them
    [ ${#STEPS[@]} -eq 0 ] && return 0
    local s; for s in "${STEPS[@]}"; do [ "$s" = "$1" ] && return 0; done; return 1
}

named() {  # named NAME: true only when NAME was named (steps left out of a plain run)
    local s; for s in "${STEPS[@]}"; do [ "$s" = "$1" ] && return 0; done; return 1
}

step() {  # step NAME SECONDS COMMAND...
    local name=$1 limit=$2; shift 2
    want "$name" || return 0
    case "$name" in compress) named "$name" || return 0 ;; esac  # opt-in: see run()
    echo "== $name (limit ${limit}s): $*"
    local t0=$SECONDS
    timeout "$limit" "$@" > "$RES/$name.log" 2>&1
    local rc=$?
    echo "   rc=$rc in $((SECONDS - t0)) s" | tee -a "$RES/$name.log"; tail -n 8 "$RES/$name.log"
    tar -czf "$OUT/gpu_results.tar.gz" -C "$RES" .
}

run() {
    : "${OUT:?set OUT to the results folder}"
    STEPS=("$@")
    RES=/tmp/gpu; mkdir -p "$RES"   # kept on a warm machine: a rerun adds to the same results
    [ -d /tmp/site/quimb ] || python3 -m pip install -q --no-index --no-deps --no-compile \
        --no-cache-dir --upgrade --target /tmp/site .gpu/whl/*.whl || exit 1
    export PYTHONPATH="$PWD:/tmp/site" PYTHONUNBUFFERED=1 MPLBACKEND=Agg
    export NUMBA_CACHE_DIR=/tmp/numba TNCONV_DATA="$PWD/.gpu/data" TNCONV_CACHE=/tmp/tnconv-cache
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$RES/card.txt"
    python3 -c "import torch, tnconv, quimb; print(torch.__version__, tnconv.__version__)"
    local R=benchmarks/results
    # limits sum to ~560 s: the device lends 15 minutes a session, start and a rerun included
    step tests 70 python3 -m pytest -q -p no:cacheprovider tests/test_cuda.py tests/test_mps.py \
        tests/test_truncate.py tests/test_decompositions.py tests/test_spectra.py
    step spectra 45 python3 benchmarks/bench_spectra.py --device cuda --out "$RES/bench_spectra-cuda.json"
    step train 240 python3 benchmarks/bench_train.py --model resnet50 --dataset fashion-mnist \
        --device cuda --save --no-progress --out "$RES/resnet50-fashion-mnist-cuda.json"
    step layers 60 python3 benchmarks/bench_layers.py --device cuda --out "$RES/bench_layers_cuda.json"
    step sweep 120 python3 benchmarks/bench_sweep.py --device cuda --full --no-naive \
        --out "$RES/bench_sweep_cuda_full.json"
    step study 300 python3 examples/resnet_cuts.py --full --no-progress --out "$RES/run"
    # issue 12, opt-in (`run compress`, after `train` made the ResNet-50 checkpoint): the
    # plain run's limits already use the device time of one session
    step compress 200 python3 benchmarks/bench_compress.py --models resnet50 --budgets 0.25 \
        --modes sensitivity uniform energy vbmf --device cuda \
        --out "$RES/bench_compress_cuda_resnet50.json"
    ls -R "$RES" | head -40
    echo "unpack gpu_results.tar.gz; copy its JSON files to $R/ and run/summary.md + PNGs to docs/results/"
}

case "${1:-}" in
    prepare) prepare ;;
    run) shift; run "$@" ;;
    *) echo "usage: $0 prepare|run [STEP...]" >&2; exit 2 ;;
esac
