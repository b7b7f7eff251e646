"""DAS on a Latent Consistency Model: ``python -m das --config config/lcm.py:<variant>``.

LCM Dreamshaper v7, 8 LCM steps, LCM's embedded guidance 8.5 (no doubled CFG batch), the
reference SMC settings of config/sd.py otherwise.
"""

from config.sd import FAMILY_VARIANTS, family_config

VARIANTS = FAMILY_VARIANTS  # the command line lists them when --config names no variant


def get_config(variant: str = "aesthetic"):
    return family_config(variant, "lcm", "LCM", "SimianLuo/LCM_Dreamshaper_v7", num_steps=8, guidance_scale=8.5)
