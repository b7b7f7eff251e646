"""``python -m das --config config/sd.py:aesthetic`` (or ``accelerate launch -m das ...``).

This file is a program, not part of the library: it hands the command line to the offline
sampling tool of the application layer (:mod:`dasapp.cli`), which is also ``python -m
dasapp``. No module of ``das`` imports it (``tests/test_import_graph.py`` names it as the one
exception to "``das`` imports nothing above it").
"""

import sys

from dasapp.cli import main

if __name__ == "__main__":
    sys.exit(main())
