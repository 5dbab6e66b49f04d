#!/usr/bin/env bash
# Build benchmarks/.venvs/tf4-oracle: FlagEmbedding 1.4.2 on transformers 4.46 (the reference of the
# bge-gemma2-lightweight family; rerankd itself runs on transformers 5). Idempotent; git-ignored.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="$here/../../../benchmarks/.venvs/tf4-oracle"
if [[ -x "$venv/bin/python" ]] && "$venv/bin/python" -c "import FlagEmbedding, transformers; assert transformers.__version__.startswith('4.')" 2>/dev/null; then
    echo "tf4 oracle venv ready: $venv"; exit 0
fi
python3 -m venv "$venv"
"$venv/bin/pip" install -q --upgrade pip
"$venv/bin/pip" install -q -r "$here/requirements-tf4.txt"
"$venv/bin/pip" install -q --no-deps FlagEmbedding==1.4.2
"$venv/bin/python" -c "from FlagEmbedding.inference.reranker.decoder_only.lightweight import LightweightLLMReranker"
echo "tf4 oracle venv ready: $venv"
