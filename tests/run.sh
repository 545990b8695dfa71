#!/usr/bin/env bash
# The README's test command: set up the pinned environment (once), lint (ruff), run the whole test suite on CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
bash launch.sh --setup
export DS_ACCELERATOR="${DS_ACCELERATOR:-cpu}"
.venv/bin/ruff check --quiet . && .venv/bin/ruff format --check --quiet .
exec .venv/bin/python -m pytest -q tests "$@"
