"""DAS on a Latent Consistency Model: ``python -m das --config config/lcm.py:<variant>``.

LCM Dreamshaper v7, 8 LCM steps, LCM's embedded guidance 8.5 (no doubled CFG batch), the
reference SMC settings of config/sd.py otherwise.
"""

import importlib.util
from pathlib import Path

_spec = importlib.util.spec_from_file_location("_das_sd_config", Path(__file__).with_name("sd.py"))
_sd = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_sd)


def get_config(variant: str = "aesthetic"):
    if variant in _sd.WORLD_VARIANTS:
        raise ValueError(
            f"Variant {variant!r} runs the embedded world's model; use config/sd.py:{variant} (LCM has no world variant)."
        )
    config = _sd.get_config(variant)
    config.model.family = "lcm"
    config.model.path = "SimianLuo/LCM_Dreamshaper_v7"
    config.model.num_steps = 8
    config.model.guidance_scale = 8.5
    config.run_name = config.run_name.replace("sd-", "lcm-", 1)
    return config
