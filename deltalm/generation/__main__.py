"""``python -m deltalm.generation``: translate text with an exported model (deltalm/generation/command_line.py)."""

import sys

from deltalm.generation.command_line import main

sys.exit(main())
