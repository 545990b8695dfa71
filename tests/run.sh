#!/usr/bin/env bash
# The README's test command: set up the pinned environment (once) and run the whole test suite on CPU.
set -euo pipefail
cd "$(dirname "$0")/.."
bash launch.sh --setup
export DS_ACCELERATOR="${DS_ACCELERATOR:-cpu}"
exec .venv/bin/python -m pytest -q tests "$@"
