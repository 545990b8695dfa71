"""``python -m deltalm.export`` (deltalm/export/command_line.py)."""

import sys

from deltalm.export.command_line import main

sys.exit(main())
