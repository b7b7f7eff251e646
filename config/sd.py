"""DAS on Stable Diffusion 1.5: ``python -m das --config config/sd.py:<variant>``.

Variants: aesthetic, pick, clip, multi, jpeg. Reference settings of the DAS paper: K = 4
particles, 100 DDIM steps, eta = 1, CFG 5, SSP resampling at ESS < 0.5·K, exponential
tempering γ = 0.008, α per reward (aesthetic 0.005, JPEG 0.1, PickScore 0.0001,
CLIPScore 0.01). Override any field, e.g. ``--config.smc.num_particles=8``.
"""

import ml_collections

AESTHETIC_MLP = "checkpoints/aesthetic/sac+logos+ava1-l14-linearMSE.pth"


def base(family: str = "sd", model_path: str = "stable-diffusion-v1-5/stable-diffusion-v1-5") -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.run_name = f"{family}-aesthetic"
    config.output_dir = "outputs/das"
    config.overwrite = False
    config.seed = 0
    config.device = ""  # "" picks accelerate's device (cuda when available); "cpu" forces CPU
    config.prompt_file = "config/prompts/animals_eval.txt"
    config.num_prompts = 0  # 0: every prompt of the file
    config.batch_prompts = 4  # prompts per sampler call (each with K particles)

    config.model = ml_collections.ConfigDict()
    config.model.family = family  # sd | sdxl | lcm | pixel
    config.model.path = model_path  # hub id or local folder
    config.model.dtype = "fp16"  # fp32 | fp16 | bf16
    config.model.num_steps = 100
    config.model.eta = 1.0
    config.model.guidance_scale = 5.0
    config.model.negative_prompt = ""
    config.model.height = 0  # 0: unet.config.sample_size × vae scale factor
    config.model.width = 0

    config.reward = ml_collections.ConfigDict()
    config.reward.name = "aesthetic"
    config.reward.kwargs = ml_collections.ConfigDict(
        {"clip_model": "openai/clip-vit-large-patch14", "mlp_path": AESTHETIC_MLP}
    )

    config.smc = ml_collections.ConfigDict()
    config.smc.kl_coeff = 0.005
    config.smc.num_particles = 4
    config.smc.resampling = "ssp"
    config.smc.ess_threshold = 0.5
    config.smc.tempering = "exponential"
    config.smc.tempering_gamma = 0.008
    config.smc.selection = "max_weight"
    config.smc.max_chunk_rows = 0  # 0: all B·K rows per forward/backward
    return config


def aesthetic() -> ml_collections.ConfigDict:
    return base()


def pick() -> ml_collections.ConfigDict:
    config = base()
    config.run_name = "sd-pickscore"
    config.prompt_file = "config/prompts/hps_style.txt"
    config.reward.name = "pickscore"
    config.reward.kwargs = ml_collections.ConfigDict(
        {"model": "yuvalkirstain/PickScore_v1", "processor": "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"}
    )
    config.smc.kl_coeff = 0.0001
    return config


def clip() -> ml_collections.ConfigDict:
    config = base()
    config.run_name = "sd-clipscore"
    config.prompt_file = "config/prompts/hps_style.txt"
    config.reward.name = "clipscore"
    config.reward.kwargs = ml_collections.ConfigDict({"clip_model": "openai/clip-vit-large-patch14", "tokenizer": ""})
    config.smc.kl_coeff = 0.01
    return config


def multi() -> ml_collections.ConfigDict:
    config = base()
    config.run_name = "sd-multi"
    config.prompt_file = "config/prompts/hps_style.txt"
    config.reward.name = "multi"
    config.reward.kwargs = ml_collections.ConfigDict(
        {"weight": 0.5, "clip_model": "openai/clip-vit-large-patch14", "mlp_path": AESTHETIC_MLP, "tokenizer": ""}
    )
    config.smc.kl_coeff = 0.005
    return config


def jpeg() -> ml_collections.ConfigDict:
    config = base()
    config.run_name = "sd-jpeg"
    config.reward.name = "jpeg"
    config.reward.kwargs = ml_collections.ConfigDict({"quality": 95})
    config.smc.kl_coeff = 0.1
    return config


def get_config(variant: str = "aesthetic") -> ml_collections.ConfigDict:
    """``config/sd.py:<variant>`` resolves here."""
    variants = {"aesthetic": aesthetic, "pick": pick, "clip": clip, "multi": multi, "jpeg": jpeg}
    if variant not in variants:
        raise ValueError(f"Unknown variant {variant!r} of config/sd.py; choose one of: {', '.join(variants)}.")
    return variants[variant]()
