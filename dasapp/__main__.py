"""``python -m dasapp --config config/sd.py:aesthetic``: the offline sampling tool (same as ``python -m das``)."""

import sys

from dasapp.cli import main

if __name__ == "__main__":
    sys.exit(main())
