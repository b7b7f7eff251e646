"""``python -m das --config config/sd.py:aesthetic`` (or ``accelerate launch -m das ...``)."""

import sys

from das.cli import main

if __name__ == "__main__":
    sys.exit(main())
