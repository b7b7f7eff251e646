"""``python -m online --config config/GP_smc.py:tiny_jpeg`` (or the ``das-online`` command): the online loop,
the same tool as ``python online/online_main_smc.py`` and ``accelerate launch online/online_main_smc.py``."""

import sys

from online.online_main_smc import main

if __name__ == "__main__":
    sys.exit(main())
