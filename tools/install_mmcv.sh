#!/usr/bin/env bash
# Build and install mmcv 2.1.0 (with its compiled ops) for the torch of a given Python.
#
# Usage: bash tools/install_mmcv.sh <python-exe>
#
# Why: mmdet 3.3.0 / mmsegmentation 1.2.2 require mmcv < 2.2.0, PyPI has no mmcv 2.1.0 wheel for current torch,
# the sdist must be built against the installed torch (--no-build-isolation), and torch >= 2.14 headers need C++20
# while mmcv's setup.py asks for C++17. The built wheel is cached per (torch version, CPU/CUDA build, Python tag,
# machine), so a second install on the same machine takes seconds; pip's own wheel cache is bypassed on purpose
# because it keys on the sdist only and would hand a wheel built for another torch.
#
# mmcv's setup.py compiles the CUDA ops whenever torch sees a GPU (they are needed to train on it: NMS, RoIAlign),
# which needs the CUDA toolkit (nvcc, CUDA_HOME); elsewhere it compiles the CPU ops only.
#
# Environment (all optional):
#   ATTNZOO_MMCV_CACHE  wheel cache folder (default: ${XDG_CACHE_HOME:-~/.cache}/attnzoo/mmcv)
#   MAX_JOBS            parallel compile jobs (default: 2)
set -euo pipefail

MMCV_VERSION=2.1.0
PY=${1:-}
if [[ -z "$PY" ]]; then
    echo "usage: bash tools/install_mmcv.sh <python-exe>" >&2
    exit 2
fi
if ! "$PY" -c "import torch" 2>/dev/null; then
    echo "error: '$PY' cannot import torch; install torch into that environment first" >&2
    exit 1
fi

# Installed, matching version, and its compiled ops load against this torch: nothing to do.
if "$PY" - "$MMCV_VERSION" <<'EOF' 2>/dev/null; then
import sys

import mmcv
import torch
from mmcv.ops import nms

assert mmcv.__version__ == sys.argv[1]
boxes = torch.tensor([[0.0, 0.0, 10.0, 10.0], [1.0, 1.0, 10.0, 10.0]])
scores = torch.tensor([0.9, 0.8])
nms(boxes, scores, 0.5)
if torch.cuda.is_available():  # a CPU-ops build carried onto a GPU machine must be rebuilt with its CUDA ops
    nms(boxes.cuda(), scores.cuda(), 0.5)
EOF
    echo "mmcv $MMCV_VERSION with ops already works for this torch"
    exit 0
fi

# Cache key: torch version (local tag included), CPU/CUDA ops (+ GPU architectures), Python tag, machine.
# mmcv's setup.py compiles CUDA ops whenever torch sees a GPU (or FORCE_CUDA=1), so that decides the flavour.
read -r KEY NEED_CXX20 < <("$PY" - <<'EOF'
import os
import platform
import re
import sys

import torch

flavour = 'cuda' if torch.cuda.is_available() or os.environ.get('FORCE_CUDA') == '1' else 'cpu'
if flavour == 'cuda':  # CUDA ops are compiled for TORCH_CUDA_ARCH_LIST, else for the visible GPUs' architectures
    archs = os.environ.get('TORCH_CUDA_ARCH_LIST') or ';'.join(sorted(
        {'%d.%d' % torch.cuda.get_device_capability(i) for i in range(torch.cuda.device_count())}))
    flavour += '-sm' + re.sub(r'[^0-9A-Za-z.+]+', '_', archs).replace('.', '')
py_tag = f'cp{sys.version_info.major}{sys.version_info.minor}'
# Compare (major, minor) as integers, never as strings or floats ('2.9' > '2.14' as strings); dev and local builds
# ('2.14.0.dev20260101', '2.15.0+cu132') count as their release.
major, minor = map(int, re.match(r'(\d+)\.(\d+)', str(torch.__version__)).groups())
need_cxx20 = (major, minor) >= (2, 14)
print(f'torch{torch.__version__.replace("+", "_")}-{flavour}-{py_tag}-{platform.machine()}', int(need_cxx20))
EOF
)
if [[ -z "${KEY:-}" ]]; then
    echo "error: could not read the torch version from '$PY'" >&2
    exit 1
fi
CACHE_ROOT=${ATTNZOO_MMCV_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/attnzoo/mmcv}
CACHE_DIR="$CACHE_ROOT/$KEY"
WHEEL=$(ls "$CACHE_DIR"/mmcv-"$MMCV_VERSION"-*.whl 2>/dev/null | head -n 1 || true)

if [[ -z "$WHEEL" ]]; then
    if [[ "$KEY" == *-cuda-* ]] && ! "$PY" -c "from torch.utils.cpp_extension import CUDA_HOME; assert CUDA_HOME" \
            2>/dev/null; then
        echo "error: torch sees a GPU, so mmcv builds its CUDA ops, but no CUDA toolkit (nvcc) was found;" \
             "install one and set CUDA_HOME" >&2
        exit 1
    fi
    echo "building mmcv $MMCV_VERSION for $KEY (CPU ops: 5-10 minutes on 2 cores; CUDA ops take much longer)"
    "$PY" -m pip install --quiet 'setuptools<81' ninja wheel
    WORK=$(mktemp -d)
    trap 'rm -rf "$WORK"' EXIT
    "$PY" -m pip download --quiet --no-deps --no-binary :all: --no-build-isolation "mmcv==$MMCV_VERSION" -d "$WORK"
    tar -xzf "$WORK/mmcv-$MMCV_VERSION.tar.gz" -C "$WORK"
    SRC="$WORK/mmcv-$MMCV_VERSION"
    if [[ "$NEED_CXX20" == 1 ]]; then
        sed -i 's/-std=c++17/-std=c++20/g' "$SRC/setup.py"
        grep -q -- '-std=c++20' "$SRC/setup.py" || { echo "error: could not patch the C++ standard in setup.py" >&2; exit 1; }
    fi
    MMCV_WITH_OPS=1 FORCE_CUDA=${FORCE_CUDA:-0} CFLAGS=-g0 MAX_JOBS=${MAX_JOBS:-2} \
        "$PY" -m pip wheel --no-build-isolation --no-deps --no-cache-dir "$SRC" -w "$WORK/dist"
    mkdir -p "$CACHE_DIR"
    BUILT=$(ls "$WORK"/dist/mmcv-"$MMCV_VERSION"-*.whl)
    # Copy then rename, so an interrupted copy never leaves a truncated wheel under the final name.
    cp "$BUILT" "$CACHE_DIR/.partial.whl"
    mv "$CACHE_DIR/.partial.whl" "$CACHE_DIR/$(basename "$BUILT")"
    WHEEL="$CACHE_DIR/$(basename "$BUILT")"
fi

echo "installing $WHEEL"
"$PY" -m pip install --quiet --no-deps --force-reinstall "$WHEEL"
"$PY" -c "import mmcv, mmcv.ops; print('mmcv', mmcv.__version__, 'with ops installed')"
