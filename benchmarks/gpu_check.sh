#!/usr/bin/env bash
# Issue #15's GPU checks in one call: install what the GPU machine lacks, run tests/integration/test_cuda.py
# and benchmarks/bench_gpu.py, each under a time limit; logs in $OUT (default ./gpu_check_out).
#
# On a GPU machine that reaches a package registry:
#     bash benchmarks/gpu_check.sh
#   installs this package with its [test,cuda] extras; mamba-ssm and causal-conv1d build against
#   the installed torch (--no-build-isolation), minutes of nvcc the first time.
# On one that reaches none (this workplace's device machines: python3 with torch, transformers,
#   triton and nvcc, but not nnsight and its needs), prepare on a machine with a registry first:
#     bash benchmarks/gpu_check.sh --prepare
#   which puts wheels of the missing pure-Python packages (for CPython 3.12, x86-64) and the
#   sources of mamba-ssm and causal-conv1d into .whl/ (git-ignored, ~10 MiB); carry .whl to the
#   GPU machine and run the script there without arguments: it installs from .whl with --no-index
#   and builds the two kernels packages for the GPU's own architecture only, in parallel.
# Time limits (seconds; the sum stays under a 10-minute call): BUILD_TIMEOUT=300, TEST_TIMEOUT=120,
#   BENCH_TIMEOUT=150. A kernel build that fails or runs out of time is reported and skipped: the
#   mamba_ssm comparisons then skip and the benchmark measures our paths and transformers' only.
#   BUILD_KERNELS=0 skips the build.
set -uo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
PY=${PYTHON:-python3}
WHEELS=$ROOT/.whl
MAMBA_SSM=2.2.6.post3
CAUSAL_CONV1D=1.5.2

if [[ "${1:-}" == "--prepare" ]]; then
    mkdir -p "$WHEELS"
    grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo '/.whl/' >> .git/info/exclude
    # the versions installed here, so that the GPU machine runs what the CPU tests ran
    pins=$($PY -c 'from importlib.metadata import version as v; print(" ".join(f"{n}=={v(n)}" for n in
          ("nnsight", "greenlet", "pydantic", "pydantic-core", "annotated-types", "typing-inspection",
           "websocket-client", "zstandard")))')
    $PY -m pip download --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
        --platform manylinux_2_28_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 \
        -d "$WHEELS" $pins || exit 1
    # sources only (there are no wheels on the registry); metadata without compiling
    MAMBA_SKIP_CUDA_BUILD=TRUE CAUSAL_CONV1D_SKIP_CUDA_BUILD=TRUE $PY -m pip download --no-deps \
        --no-build-isolation --no-binary=:all: -d "$WHEELS" "mamba-ssm==$MAMBA_SSM" "causal-conv1d==$CAUSAL_CONV1D" || exit 1
    du -sh "$WHEELS"
    exit 0
fi

OUT=${OUT:-$ROOT/gpu_check_out}
mkdir -p "$OUT"
SITE=/tmp/gpu_check_site
export PYTHONUNBUFFERED=1 PYTHONPATH=$ROOT:$SITE${PYTHONPATH:+:$PYTHONPATH}
log() { echo "== $*" | tee -a "$OUT/summary.txt"; }

log "$(date -u +%FT%TZ) $(nvidia-smi --query-gpu=name,driver_version,memory.total --format=csv,noheader 2>&1)"
$PY -c 'import torch, transformers; print("torch", torch.__version__, "cuda", torch.version.cuda,
        "device", torch.cuda.is_available() and torch.cuda.get_device_name(), "transformers", transformers.__version__)' \
    2>&1 | tee -a "$OUT/summary.txt"

have() { $PY -c "import $1" >/dev/null 2>&1; }

if [[ -d "$WHEELS" ]]; then
    log "installing the carried wheels into $SITE"
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target "$SITE" "$WHEELS"/*.whl \
        2>&1 | tail -3 | tee -a "$OUT/summary.txt"
elif ! have nnsight; then
    log "installing the package with its [test,cuda] extras from the registry"
    $PY -m pip install -q --no-build-isolation -e '.[test,cuda]' 2>&1 | tail -5 | tee -a "$OUT/summary.txt"
fi

build() {  # build one kernels package from its carried source, for this GPU's architecture only
    local name=$1 archive=$2 prefix=$3 arch
    arch=$($PY -c 'import torch; a, b = torch.cuda.get_device_capability(); print(f"{a}{b}")')
    rm -rf "/tmp/build_$name" && mkdir -p "/tmp/build_$name" && tar xzf "$archive" -C "/tmp/build_$name" || return 1
    local src
    src=$(ls -d /tmp/build_$name/*/)
    # the setup scripts list a dozen architectures; nvcc's time grows with each
    $PY - "$src/setup.py" "$arch" <<'EOF'
import re, sys
path, arch = sys.argv[1], sys.argv[2]
text = open(path).read()
text = re.sub(r'cc_flag\.append\("-gencode"\)\s*\n\s*cc_flag\.append\("arch=compute_(\d+),code=sm_\d+"\)',
              lambda m: m.group(0) if m.group(1) == arch else "pass", text)
open(path, "w").write(text)
EOF
    env "${prefix}_FORCE_BUILD=TRUE" MAX_JOBS=$(nproc) $PY -m pip install --no-index --no-deps --no-build-isolation \
        --no-cache-dir --target "$SITE" "$src" > "$OUT/build_$name.log" 2>&1
}

if [[ "${BUILD_KERNELS:-1}" != 0 ]] && ! have mamba_ssm && [[ -d "$WHEELS" ]]; then
    log "building causal-conv1d $CAUSAL_CONV1D and mamba-ssm $MAMBA_SSM (limit ${BUILD_TIMEOUT:-300} s)"
    start=$SECONDS
    export -f build; export PY OUT SITE
    timeout "${BUILD_TIMEOUT:-300}" bash -c "build causal_conv1d '$WHEELS/causal_conv1d-$CAUSAL_CONV1D.tar.gz' CAUSAL_CONV1D" &
    conv=$!
    timeout "${BUILD_TIMEOUT:-300}" bash -c "build mamba_ssm '$WHEELS/mamba_ssm-$MAMBA_SSM.tar.gz' MAMBA" &
    scan=$!
    wait $conv; conv_rc=$?
    wait $scan; scan_rc=$?
    log "build: causal-conv1d rc=$conv_rc, mamba-ssm rc=$scan_rc (124: out of time) after $((SECONDS - start)) s"
fi
$PY -c 'from compare.ssm import cuda; print("kernels:", "yes" if cuda.available() else "no: " + cuda.reason())' \
    2>&1 | tee -a "$OUT/summary.txt"

log "tests/integration/test_cuda.py (limit ${TEST_TIMEOUT:-120} s)"
timeout "${TEST_TIMEOUT:-120}" $PY -m pytest -q -p no:cacheprovider -rs tests/integration/test_cuda.py 2>&1 | tee "$OUT/test_cuda.log" \
    | tail -25 | tee -a "$OUT/summary.txt"

log "benchmarks/bench_gpu.py (limit ${BENCH_TIMEOUT:-150} s)"
timeout "${BENCH_TIMEOUT:-150}" $PY benchmarks/bench_gpu.py 2>&1 | tee "$OUT/bench_gpu.log" | tail -30 \
    | tee -a "$OUT/summary.txt"
log "done $(date -u +%FT%TZ)"
