#!/usr/bin/env bash
# launch.sh — placeholder until the engine lands: only --setup works.
set -euo pipefail
cd "$(dirname "$0")"
setup_env() {
  local py="${PYTHON:-python3}"
  if [ ! -x .venv/bin/python ] || [ requirements.txt -nt .venv/.installed ]; then
    echo "[setup] creating .venv and installing pinned requirements (first run only)" >&2
    "$py" -m venv .venv
    .venv/bin/python -m pip install -q --upgrade pip
    .venv/bin/python -m pip install -q -r requirements.txt
    touch .venv/.installed
  fi
}
if [ "${1:-}" = "--setup" ]; then setup_env; exit 0; fi
echo "launch.sh: not implemented yet" >&2; exit 2
