"""Online loop with the Bootstrap surrogate (`surrogate.kind = "bootstrap"`), DAS as the sampler.

Run: `accelerate launch online/online_main_smc.py --config config/Bootstrap_smc.py:<variant>`
with a variant of `config/online_base.py` (aesthetic, jpeg, evaluate, tiny_jpeg,
tiny_colorfulness, tiny_multi, tiny_evaluate). Override any field on the command line,
e.g. `--config.smc.num_particles=8`.
"""

from config.online_base import online_config


def get_config(variant: str = "aesthetic"):
    return online_config("bootstrap", variant, method="Bootstrap")
