#!/usr/bin/env bash
# Make .venv with Atelier in it. Without an NVIDIA GPU it takes torch 2.13.0, which on these
# machines is a CPU build on local disk; with one, the newest CUDA build pip offers.
# `--test` adds the test tools.
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
