"""DAS on Stable Diffusion 1.5: ``python -m das --config config/sd.py:<variant>``.

Variants: aesthetic, pick, clip, multi, jpeg; realign (DeRaDiff, see docs/realign.md);
world and realign_world (the embedded world's model, runs on a CPU with no download).
Reference settings of the DAS paper: K = 4 particles, 100 DDIM steps, eta = 1, CFG 5, SSP
resampling at ESS < 0.5·K, exponential tempering γ = 0.008, α per reward (aesthetic 0.005,
JPEG 0.1, PickScore 0.0001, CLIPScore 0.01). Override any field, e.g. ``--config.smc.num_particles=8``.
"""

import ml_collections

AESTHETIC_MLP = "checkpoints/aesthetic/sac+logos+ava1-l14-linearMSE.pth"


def base(
    family: str = "sd", model_path: str = "stable-diffusion-v1-5/stable-diffusion-v1-5"
) -> ml_collections.ConfigDict:
    config = ml_collections.ConfigDict()
    config.run_name = f"{family}-aesthetic"
    config.output_dir = "runs/das"  # beside the online loop's runs (runs/<run_name>)
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
    # opt-in speed options (measured by benchmarks/bench_precision.py): off, every result is unchanged
    config.model.channels_last = False  # UNet and VAE weights in the channels_last memory format
    config.model.compile_unet = False  # torch.compile the UNet (falls back to eager, with a warning, if it fails)

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
    config.smc.gradient = "auto"  # auto (full if the reward is differentiable) | full | jacobian_free | none
    config.smc.gradient_every = 1  # take it every m steps, counted back from the last
    config.smc.gradient_after = 0.0  # take none during this first fraction of the steps
    config.smc.gradient_reuse = False  # steps without one shift by the last gradient taken (else not at all)
    config.smc.autocast = ""  # "" off | bf16 | fp16: the model passes under torch.autocast (weights stay float32)

    config.realign = _realign()
    return config


def _realign() -> ml_collections.ConfigDict:
    """DeRaDiff realignment (docs/realign.md): mix the model outputs of model.path (the reference)
    and realign.aligned (a model aligned at strength realign.alpha), ε_λ = (1 − λ)ε_ref + λε_aligned,
    which emulates strength α/λ. Off unless realign.enabled (the realign variants set it)."""
    realign = ml_collections.ConfigDict()
    realign.enabled = False
    realign.aligned = ""  # local folder of the aligned model (same family, scheduler and shape as model.path)
    realign.lam = 1.0  # λ ≥ 0: 0 the reference, 1 the aligned model, > 1 extrapolates
    # α the aligned model was aligned at (0: read training_info.json's "alpha", else unknown)
    realign.alpha = 0.0
    # False: plain samples of the realigned chain; True: DAS (smc.*) on model.path, realigned proposal
    realign.smc = False
    realign.sweep = ""  # comma-separated λ grid, e.g. "0,0.5,1,2": writes realign_sweep.{png,json,md} instead
    realign.sweep_das = True  # in a sweep, also DAS on model.path at the equivalent α/λ (needs α)
    realign.samples_per_prompt = 4  # in a sweep: samples per prompt and λ (diversity is over these)
    return realign


def aesthetic() -> ml_collections.ConfigDict:
    return base()


HPS_PROMPTS = "config/prompts/hps_style.txt"


def _reward_variant(run_name: str, reward: str, kwargs: dict, kl_coeff: float, prompt_file: str = ""):
    """:func:`base` with another reward, its loading options and its α (and prompts, when given)."""
    config = base()
    config.run_name = run_name
    if prompt_file:
        config.prompt_file = prompt_file
    config.reward.name = reward
    config.reward.kwargs = ml_collections.ConfigDict(kwargs)
    config.smc.kl_coeff = kl_coeff
    return config


def pick() -> ml_collections.ConfigDict:
    kwargs = {"model": "yuvalkirstain/PickScore_v1", "processor": "laion/CLIP-ViT-H-14-laion2B-s32B-b79K"}
    return _reward_variant("sd-pickscore", "pickscore", kwargs, 0.0001, HPS_PROMPTS)


def clip() -> ml_collections.ConfigDict:
    kwargs = {"clip_model": "openai/clip-vit-large-patch14", "tokenizer": ""}
    return _reward_variant("sd-clipscore", "clipscore", kwargs, 0.01, HPS_PROMPTS)


def multi() -> ml_collections.ConfigDict:
    kwargs = {"weight": 0.5, "clip_model": "openai/clip-vit-large-patch14", "mlp_path": AESTHETIC_MLP, "tokenizer": ""}
    return _reward_variant("sd-multi", "multi", kwargs, 0.005, HPS_PROMPTS)


def jpeg() -> ml_collections.ConfigDict:
    return _reward_variant("sd-jpeg", "jpeg", {"quality": 95}, 0.1)


def realign() -> ml_collections.ConfigDict:
    """DeRaDiff on SD 1.5: ``--config.realign.aligned=PATH`` (an SD 1.5 fine-tune aligned at α) and
    ``--config.realign.lam``."""
    config = base()
    config.run_name = "sd-realign"
    config.realign.enabled = True
    return config


WORLD_MODEL = "checkpoints/pretrained/shapes32"
WORLD_VARIANTS = ("world", "realign_world")  # sdxl.py and lcm.py refuse these
WORLD_ALIGNED = "checkpoints/aligned/shapes32-colorfulness"


def world() -> ml_collections.ConfigDict:
    """DAS on the embedded world's model towards colourfulness at α = 5 (the world's kl_coeff for it);
    CPU, no download."""
    config = base(family="pixel", model_path=WORLD_MODEL)
    config.run_name = "world-colorfulness"
    config.device = "cpu"
    config.prompt_file = "world"  # the world's nine prompts (world.PROMPTS)
    config.batch_prompts = 9
    config.model.dtype = "fp32"
    config.model.num_steps = 25
    config.model.guidance_scale = 3.0
    config.reward.name = "colorfulness"
    config.reward.kwargs = ml_collections.ConfigDict({"scale": 1.0})
    config.smc.kl_coeff = 5.0
    config.smc.tempering_gamma = 0.1
    return config


def realign_world() -> ml_collections.ConfigDict:
    """DeRaDiff on the world: the shipped model and the project's model aligned to colourfulness at α = 5."""
    config = world()
    config.run_name = "world-realign"
    config.realign.enabled = True
    config.realign.aligned = WORLD_ALIGNED
    config.realign.alpha = 5.0
    config.realign.lam = 0.5
    return config


VARIANTS = {
    "aesthetic": aesthetic,
    "pick": pick,
    "clip": clip,
    "multi": multi,
    "jpeg": jpeg,
    "realign": realign,
    "world": world,
    "realign_world": realign_world,
}
FAMILY_VARIANTS = tuple(name for name in VARIANTS if name not in WORLD_VARIANTS)  # config/sdxl.py, config/lcm.py


def get_config(variant: str = "aesthetic") -> ml_collections.ConfigDict:
    """``config/sd.py:<variant>`` resolves here."""
    if variant not in VARIANTS:
        raise ValueError(f"Unknown variant {variant!r} of config/sd.py; choose one of: {', '.join(VARIANTS)}.")
    return VARIANTS[variant]()


def family_config(variant: str, family: str, name: str, path: str, **model) -> ml_collections.ConfigDict:
    """A variant of this file on another latent model family (config/sdxl.py, config/lcm.py).

    Args:
        variant: a variant of this file but the world ones, which run the embedded world's model.
        family: ``model.family``; it also replaces ``sd-`` in the run name.
        name: the family as the refusal of a world variant names it.
        path: ``model.path``.
        **model: other ``model.*`` fields of the family (steps, guidance).
    """
    if variant in WORLD_VARIANTS:
        raise ValueError(
            f"Variant {variant!r} runs the embedded world's model; use config/sd.py:{variant} "
            f"({name} has no world variant)."
        )
    config = get_config(variant)
    config.model.family = family
    config.model.path = path
    for field, value in model.items():
        config.model[field] = value
    config.run_name = config.run_name.replace("sd-", f"{family}-", 1)
    return config
