"""Online loop guided by the UCB surrogate's mean (``surrogate.kind = "ucb"``, ``acquisition.kind = "mean"``).

Run ``accelerate launch online/online_main_smc.py --config config/Greedy_smc.py:<variant>`` with a
variant of ``config/online_base.py``; override any field, e.g. ``--config.smc.num_particles=8``.
"""

from config.online_base import method_config

get_config = method_config("Greedy")
