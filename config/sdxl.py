"""DAS on SDXL base 1.0: ``python -m das --config config/sdxl.py:<variant>`` (aesthetic, pick, clip, multi, jpeg).

Same reference SMC settings as config/sd.py; 1024×1024 images (latents from the UNet config).
"""

from config.sd import FAMILY_VARIANTS, family_config

VARIANTS = FAMILY_VARIANTS  # the command line lists them when --config names no variant


def get_config(variant: str = "aesthetic"):
    return family_config(variant, "sdxl", "SDXL", "stabilityai/stable-diffusion-xl-base-1.0", num_steps=50)
