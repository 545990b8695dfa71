"""Entry point: ``python -m data_prep COMMAND ...`` (see data_prep/cli.py)."""

import os
import sys

# data_prep does no linear algebra: without this, importing numpy starts one spinning OpenBLAS thread per core,
# about 0.1 s of CPU per run on 2 cores (a user's own setting wins).
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

from data_prep.cli import main  # noqa: E402

if __name__ == "__main__":
    sys.exit(main())
