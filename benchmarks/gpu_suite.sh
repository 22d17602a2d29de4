#!/usr/bin/env bash
# The GPU suite in one command, from the repository root:   bash benchmarks/gpu_suite.sh [--dry-run] [options]
#
# Expects: this repository checked out (the working tree is what runs; no install of attnzoo itself), a python
# (`$PYTHON`, else `python3`) with torch >= 2.5 and CUDA, triton >= 3.4, timm >= 1.0.31, numpy, pyyaml, pillow,
# pytest >= 7.4 (pytest-xdist and matplotlib optional). The device machine's image has all of these (KINDS.md:
# python3 3.12, torch 2.11, triton 3.6, timm, pytest, pytest-xdist); whatever is missing or too old is installed
# from wheels in `.whl/` at the repo root when there (a machine without registry access: carry them), else with
# pip from the package registries. Nothing else is installed or changed.
#
# Then, within `--budget` seconds (default 470, so the command ends inside 8 minutes): the CUDA tests
# (`pytest -m cuda`), benchmarks/ops.py --short and benchmarks/models.py --short, the kernels' random sweep with
# what time is left; results (JSON + markdown naming the GPU, and the log) under $OUT if set, else
# benchmarks/results/<gpu>/. `--dry-run` rehearses everything on CPU at toy sizes, the CUDA parts skipping.
# Exit code: 0 complete and green, 1 a failure, 2 incomplete (budget, or no CUDA without --dry-run), 3 environment.
# Details and options: benchmarks/gpu_suite.py (--help).
set -u
cd "$(dirname "$0")/.." || exit 3
PY="${PYTHON:-python3}"
command -v "$PY" >/dev/null 2>&1 || { echo "gpu_suite: no $PY on PATH (set PYTHON=...)" >&2; exit 3; }
exec "$PY" benchmarks/gpu_suite.py "$@"
