#!/usr/bin/env bash
# Make benchmarks/.venvs/peers: Infinity, optimum, OpenVINO and CTranslate2, which pin transformers 4.x and
# numpy<2 (rerankd uses transformers 5). Git-ignored; torch comes from the same pinned CPU wheel as the project's.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="$here/../.venvs/peers"
python3 -m venv "$venv"
"$venv/bin/pip" install -q --upgrade pip
"$venv/bin/pip" install -q -r "$here/requirements-tf4.txt"
echo "peers venv ready: $venv"
