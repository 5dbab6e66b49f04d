#!/usr/bin/env bash
# Build benchmarks/.venvs/pylate-oracle: PyLate 1.6.0 (the reference of the colbert family). Idempotent; git-ignored.
set -euo pipefail
here="$(cd "$(dirname "$0")" && pwd)"
venv="$here/../../../benchmarks/.venvs/pylate-oracle"
if [[ -x "$venv/bin/python" ]] && "$venv/bin/python" -c "from pylate import models, rank" 2>/dev/null; then
    echo "pylate oracle venv ready: $venv"; exit 0
fi
python3 -m venv "$venv"
"$venv/bin/pip" install -q --upgrade pip
"$venv/bin/pip" install -q -r "$here/requirements-pylate.txt"
"$venv/bin/pip" install -q --no-deps pylate==1.6.0
"$venv/bin/python" -c "from pylate import models, rank"
echo "pylate oracle venv ready: $venv"
