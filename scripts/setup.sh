#!/usr/bin/env bash
# Create .venv (if missing) and install fetalhead with the tested versions.
# Usage: bash scripts/setup.sh [EXTRAS]   (default extras: onnx,serve,dicom,node,test)
set -euo pipefail
cd "$(dirname "$0")/.."
extras="${1:-onnx,serve,dicom,node,test}"
if [ ! -x .venv/bin/python ]; then
  python3 -m venv .venv
fi
py=.venv/bin/python
"$py" -m pip install -q --upgrade pip
# The CPU build of PyTorch first, so that nothing pulls a CUDA build.
"$py" -m pip install -q "torch==2.13.0"
"$py" -m pip install -q -c constraints.txt -e ".[${extras}]"
