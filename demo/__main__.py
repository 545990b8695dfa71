"""``python -m demo`` (what ``bash launch.sh`` runs): see demo/pipeline.py."""

import sys

from demo.pipeline import main

sys.exit(main())
