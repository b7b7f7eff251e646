"""DAS on SDXL base 1.0: ``python -m das --config config/sdxl.py:<variant>`` (aesthetic, pick, clip, multi, jpeg).

Same reference SMC settings as config/sd.py; 1024×1024 images (latents from the UNet config).
"""

import importlib.util
from pathlib import Path

_spec = importlib.util.spec_from_file_location("_das_sd_config", Path(__file__).with_name("sd.py"))
_sd = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_sd)


def get_config(variant: str = "aesthetic"):
    if variant in _sd.WORLD_VARIANTS:
        raise ValueError(
            f"Variant {variant!r} runs the embedded world's model; use config/sd.py:{variant} (SDXL has no world variant)."
        )
    config = _sd.get_config(variant)
    config.model.family = "sdxl"
    config.model.path = "stabilityai/stable-diffusion-xl-base-1.0"
    config.model.num_steps = 50
    config.run_name = config.run_name.replace("sd-", "sdxl-", 1)
    return config
