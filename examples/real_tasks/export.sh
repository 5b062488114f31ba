#!/usr/bin/env bash
# Train the real-task example models (sMNIST, psMNIST, sktime series) and export them
# to ONNX next to this script (a few minutes per task on two CPU cores).
#
# Usage: bash examples/real_tasks/export.sh [train_export.py options, e.g. --tasks smnist]
#
# The export needs torch, which ssmc itself does not (ssmc runs on Python 3.10), so it
# gets its own Python 3.11 venv. Set TORCH_VENV to an existing venv to reuse it instead;
# otherwise one is created (once) under ~/.cache/ssmc/.
set -euo pipefail

here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
venv="${TORCH_VENV:-${XDG_CACHE_HOME:-$HOME/.cache}/ssmc/torch-export-venv}"

find_python311() {
    local p
    if command -v pyenv >/dev/null 2>&1; then
        for p in "$(pyenv root)"/versions/3.11.*/bin/python; do
            if [ -x "$p" ]; then echo "$p"; return 0; fi
        done
    fi
    if command -v python3.11 >/dev/null 2>&1 && python3.11 -c '' >/dev/null 2>&1; then
        command -v python3.11
        return 0
    fi
    return 1
}

if [ ! -x "$venv/bin/python" ]; then
    if ! py="$(find_python311)"; then
        echo "export.sh: no Python 3.11 found (looked in \$(pyenv root)/versions/3.11.* and for python3.11 on PATH)" >&2
        exit 1
    fi
    echo "export.sh: creating $venv with $py"
    "$py" -m venv "$venv"
fi

# On Python 3.11, torch==2.13.0 resolves to the CPU wheel already on this machine's disk;
# on any other Python pip would download the multi-GB CUDA build from PyPI instead.
# With everything already installed at these pins this is a quick no-op.
"$venv/bin/python" -m pip install --quiet -r "$here/requirements-export.txt"

exec "$venv/bin/python" "$here/train_export.py" "$@"
