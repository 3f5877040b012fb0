#!/usr/bin/env bash
# Make .venv with Atelier in it. Without an NVIDIA GPU it takes torch 2.13.0, which on these
# machines is a CPU build on local disk; with one, the newest CUDA build pip offers.
# `--test` adds the test tools, and .venv-blender: the real `bpy` module (Blender 5.0.1 as a
# Python 3.11 wheel, about 1 GB, ~80 s from a local mirror) with numpy<2 and pytest and no
# torch, mirroring Blender's own Python, for the add-on's tests (tests/blender).
set -euo pipefail
cd "$(dirname "$0")/.."
python3 -m venv .venv
if command -v nvidia-smi >/dev/null 2>&1 && nvidia-smi -L >/dev/null 2>&1; then
  torch="torch>=2.13"
else
  torch="torch==2.13.0"
fi
extras=""
if [ "${1:-}" = "--test" ]; then extras="[test]"; fi
.venv/bin/pip install --quiet "$torch"
.venv/bin/pip install --quiet --editable ".$extras"
if [ "${1:-}" = "--test" ]; then
  if python3 -c 'import sys; sys.exit(sys.version_info[:2] != (3, 11))'; then
    python3 -m venv .venv-blender
    .venv-blender/bin/pip install --quiet "bpy==5.0.1" "numpy<2" pytest
  else
    echo "setup: the bpy 5.0.1 wheel needs Python 3.11; tests/blender will be skipped" >&2
  fi
fi
