#!/usr/bin/env bash
# The GPU figures of the issues, as one prepared script for a lent H100/H200.
#
# Two parts:
#   benchmarks/gpu_checks.sh prepare   # HERE (with internet to PyPI): wheels + data into .gpu/
#   benchmarks/gpu_checks.sh run       # THERE, from the repository root, results under $OUT
#   benchmarks/gpu_checks.sh run sweep study   # THERE, a rerun of some steps on the warm machine
#   benchmarks/gpu_checks.sh run issue23       # THERE, the steps of issue 23 (7-9 below)
#
# The device image has torch, torchvision, numpy, scipy, numba, pandas, matplotlib, tqdm,
# opt_einsum and pytest (and, as last read, onnx, onnxscript and the CPU build of onnxruntime),
# but not quimb, cotengra, autoray or cytoolz, and no network: `prepare` downloads those as
# Python 3.12 wheels, with the onnx, onnxscript, onnx_ir and ml_dtypes versions tested here, and
# copies Fashion-MNIST into `.gpu/` (ignored by git through .git/info/exclude), and the device
# call carries that folder (about 45 MB; a call carries 64 MiB at most, the tree included):
#
#   run(command="bash benchmarks/gpu_checks.sh run", carry=[".gpu"], timeout_s=560)
#
# onnxruntime-gpu (the CUDA provider of step 7) is a 256 MB wheel (1.31.1, built for CUDA 13 as
# the device's torch is), too large to carry: `ORT_GPU=1 benchmarks/gpu_checks.sh prepare` puts
# it in `.gpu-ort/`, which `run` installs when it is there; without it step 7 records that the
# CUDA provider is missing and its ONNX Runtime figures stay unmeasured.
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
# Opt-in steps, run only when named (a plain run's limits already use a session's device time):
#   compress: bench_compress resnet50 --device cuda      (issue 12, after step 3)
#   issue 23 (`run issue23` names all three; their limits sum to ~530 s, one call):
#   7. deploy: bench_deploy --device cuda --compile-modes reduce-overhead
#      ResNet-50 224x224, batch 64, bf16, inference forms, dense vs 25 % of conv FLOPs: eager,
#      torch.compile with CUDA graphs, ONNX Runtime CUDA (fp16) if onnxruntime-gpu is there;
#      goal <= 0.6x dense. The compressed model is cached for step 9.
#   8. layers224: bench_layers --device cuda --image-size 224 --stem imagenet --batch 64
#      the tensorized training step at 224x224 (step 4 is the 32x32 one); goal <= 1.0x dense
#   9. deploy-autotune: bench_deploy --device cuda --runtimes compile --compile-modes
#      max-autotune (autotuning is slow: last, so that 7 and 8 are packed whatever happens)
set -uo pipefail
cd "$(dirname "$0")/.."

prepare() {
    grep -qx '/.gpu/' .git/info/exclude 2>/dev/null || echo '/.gpu/' >> .git/info/exclude
    mkdir -p .gpu/whl .gpu/data/fashion-mnist
    local pkg
    # quimb & co. (tnconv's needs); onnx & co. (issue 23's export: the versions tested here)
    for pkg in quimb==1.15.0 cotengra==0.8.3 autoray==0.11.0 cytoolz==1.2.0 \
               onnx==1.23.2 onnxscript==0.7.2 onnx_ir==1.1.0 ml_dtypes==0.7.0; do
        wheel .gpu/whl "$pkg" || exit 1
    done
    cp /usr/share/datasets/fashion-mnist/*-ubyte.gz .gpu/data/fashion-mnist/ || exit 1
    du -sh .gpu
    if [ "${ORT_GPU:-0}" = 1 ]; then  # opt-in: 256 MB, over what one device call carries
        grep -qx '/.gpu-ort/' .git/info/exclude 2>/dev/null || echo '/.gpu-ort/' >> .git/info/exclude
        mkdir -p .gpu-ort && wheel .gpu-ort onnxruntime-gpu==1.31.1 || exit 1
        du -sh .gpu-ort
        echo "note: .gpu-ort is over the 64 MiB a device call carries; carry it only where allowed"
    fi
}

wheel() {  # wheel DIR SPEC: the Python 3.12 manylinux x86-64 wheel of SPEC into DIR
    python3 -m pip download --quiet --no-deps --only-binary=:all: --python-version 3.12 \
        --implementation cp --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 \
        --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        --platform manylinux1_x86_64 -d "$1" "$2"
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
    case "$name" in  # opt-in: see the header and run()
        compress|deploy|layers224|deploy-autotune) named "$name" || return 0 ;;
    esac
    echo "== $name (limit ${limit}s): $*"
    local t0=$SECONDS
    timeout "$limit" "$@" > "$RES/$name.log" 2>&1
    local rc=$?
    echo "   rc=$rc in $((SECONDS - t0)) s" | tee -a "$RES/$name.log"; tail -n 8 "$RES/$name.log"
    tar -czf "$OUT/gpu_results.tar.gz" -C "$RES" .
}

run() {
    : "${OUT:?set OUT to the results folder}"
    STEPS=()
    local s
    for s in "$@"; do  # issue23: the three steps of issue 23
        case "$s" in issue23) STEPS+=(deploy layers224 deploy-autotune) ;; *) STEPS+=("$s") ;; esac
    done
    RES=/tmp/gpu; mkdir -p "$RES"   # kept on a warm machine: a rerun adds to the same results
    [ -d /tmp/site/quimb ] || python3 -m pip install -q --no-index --no-deps --no-compile \
        --no-cache-dir --upgrade --target /tmp/site .gpu/whl/*.whl || exit 1
    local ort=""   # onnxruntime-gpu, where `ORT_GPU=1 prepare` made it and it was carried
    if compgen -G ".gpu-ort/onnxruntime_gpu-*.whl" > /dev/null; then
        [ -d /tmp/site-ort/onnxruntime ] || python3 -m pip install -q --no-index --no-deps \
            --no-compile --no-cache-dir --upgrade --target /tmp/site-ort .gpu-ort/*.whl
        [ -d /tmp/site-ort/onnxruntime ] && ort="/tmp/site-ort:"
    fi
    export PYTHONPATH="$PWD:$ort/tmp/site" PYTHONUNBUFFERED=1 MPLBACKEND=Agg
    export NUMBA_CACHE_DIR=/tmp/numba TNCONV_DATA="$PWD/.gpu/data" TNCONV_CACHE=/tmp/tnconv-cache
    nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv | tee "$RES/card.txt"
    python3 -c "import torch, tnconv, quimb; print(torch.__version__, tnconv.__version__)"
    python3 -c "import onnx, onnxruntime as o; print('onnx', onnx.__version__, 'onnxruntime', \
        o.__version__, o.get_available_providers())" || true
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
    # issue 23, opt-in (`run issue23`, or any of the names): limits sum to ~530 s
    step deploy 210 python3 benchmarks/bench_deploy.py --device cuda \
        --compile-modes reduce-overhead --out "$RES/bench_deploy_cuda.json"
    step layers224 100 python3 benchmarks/bench_layers.py --device cuda --image-size 224 \
        --stem imagenet --batch 64 --no-tltorch --out "$RES/bench_layers_cuda_224px.json"
    step deploy-autotune 220 python3 benchmarks/bench_deploy.py --device cuda --runtimes compile \
        --compile-modes max-autotune --out "$RES/bench_deploy_cuda_max-autotune.json"
    ls -R "$RES" | head -40
    echo "unpack gpu_results.tar.gz; copy its JSON files to $R/ and run/summary.md + PNGs to docs/results/"
}

case "${1:-}" in
    prepare) prepare ;;
    run) shift; run "$@" ;;
    *) echo "usage: $0 prepare|run [STEP...]" >&2; exit 2 ;;
esac
