"""Shared pieces of the online-loop configs (``config/UCB_smc.py`` and friends).

Each method file picks a surrogate and calls :func:`online_config` with a variant name:

* ``aesthetic`` / ``jpeg``: Stable Diffusion 1.5 with CLIP ViT-L/14 features and the
  reference settings of the DAS/SEIKO online experiments (16 queries per round, 257
  rounds, 256 queries in round 0, label noise std 0.1, K = 4, 100 DDIM steps, eta = 1,
  CFG 7.5, SSP at ESS < 0.5·K, exponential tempering γ = 0.008, α = 0.005 / 0.1).
* ``evaluate``: load ``reward_model_path`` (a round checkpoint) and sample the evaluation
  prompts with DAS guided by the surrogate mean, scored by the true oracle.
* ``tiny_jpeg`` / ``tiny_colorfulness`` / ``tiny_rare`` / ``tiny_multi`` / ``tiny_evaluate``:
  the embedded world (``checkpoints/pretrained/shapes32``), small enough for a laptop CPU;
  ``tiny_rare`` is the task where exploration matters (its best images are rare under the
  pretrained model, ``world/oracles.py``).
* ``tiny_human``: the embedded world rated by a person on a local page (``online/human``,
  the ``[human]`` extra): 8 images in round 0, then 4 a round, no added label noise.

Reference points for comparisons (``benchmarks/bench_online.py``) are overrides of any
method's config: ``--config.smc.guidance=none`` (pretrained samples every round),
``--config.smc.guidance=oracle`` (the ceiling: DAS guided by the true oracle) and
non-adaptive (``--config.loop.num_rounds=2`` with the whole budget but one batch in
``--config.loop.initial_queries``).
"""

from __future__ import annotations

import ml_collections

from config.sd import AESTHETIC_MLP, WORLD_MODEL
from config.sd import base as das_config

CLIP_MODEL = "openai/clip-vit-large-patch14"

#: The method files ``config/<method>_smc.py``: each is this table's row, through :func:`method_config`.
METHODS = {
    "UCB": "ucb",  # MLP + UCB bonus
    "Bootstrap": "bootstrap",  # bootstrap ensemble of MLPs
    "GP": "gp",  # Gaussian process
    "Greedy": "greedy",  # MLP mean, no optimism
}

VARIANTS = (
    "aesthetic",
    "jpeg",
    "evaluate",
    "tiny_jpeg",
    "tiny_colorfulness",
    "tiny_rare",
    "tiny_multi",
    "tiny_evaluate",
    "tiny_human",
)


def _surrogate(kind: str) -> ml_collections.ConfigDict:
    s = ml_collections.ConfigDict()
    s.kind = kind  # ucb | bootstrap | gp | greedy
    # Keyword arguments of the surrogate class (surrogate/), e.g. beta, ridge, hidden sizes.
    s.kwargs = ml_collections.ConfigDict()
    if kind == "ucb":
        # Bonus β·std with the calibrated std s·sqrt(φᵀA⁻¹φ), A = λI + Σφφᵀ, s fitted on held-out
        # answers (surrogate/ucb.py); the loop passes its label noise std. The reference's
        # normalized-covariance bonus is bonus_covariance="normalized" with beta=0.01.
        s.kwargs.beta = 1.0
        s.kwargs.lam = 0.001
        s.kwargs.clip = 10.0
    elif kind == "bootstrap":
        s.kwargs.num_heads = 4
    if kind in ("ucb", "bootstrap", "greedy"):
        s.kwargs.hidden = (1024, 128, 64, 16)  # the reference MLP on 768-d CLIP features
        s.kwargs.max_epochs = 100  # early stopping on a shuffled validation split ends most fits sooner
        s.kwargs.patience = 5
    elif kind == "gp":
        s.kwargs.beta = 1.0
    s.warm_start = True
    return s


def _sd_model() -> ml_collections.ConfigDict:
    """The offline CLI's Stable Diffusion model section, with the online code's CFG 7.5."""
    m = das_config().model
    m.guidance_scale = 7.5
    return m


def _smc() -> ml_collections.ConfigDict:
    """The offline CLI's DAS settings, plus what the loop adds; it keeps every particle itself."""
    smc = das_config().smc
    del smc.selection
    smc.tempering_start = 0
    smc.prompts_per_call = 16  # prompts (each with K particles) per sampler call
    smc.guidance = "optimistic"  # optimistic (mean + bonus) | mean | thompson | none (pretrained) | oracle (ceiling)
    return smc


def _world_model() -> ml_collections.ConfigDict:
    m = _sd_model()
    m.family = "pixel"
    m.path = WORLD_MODEL
    m.dtype = "fp32"
    m.num_steps = 20
    m.guidance_scale = 3.0
    return m


def _base(surrogate_kind: str) -> ml_collections.ConfigDict:
    c = ml_collections.ConfigDict()
    c.mode = "train"  # train | evaluate
    c.run_name = "online"
    c.method = ""  # the method's name in comparisons (online.analysis); "": from surrogate.kind and smc.guidance
    c.output_dir = "runs"
    c.overwrite = False
    c.resume_from = ""  # a run directory to continue after its last complete round
    c.reward_model_path = ""  # evaluate mode: a round directory or its surrogate.safetensors
    c.seed = 0
    c.device = ""  # "" lets accelerate choose; "cpu" forces the CPU
    c.tracker = ""  # "" | "tensorboard" | "wandb" (optional extras)
    c.progress = True
    c.report = True  # write <run_dir>/report/report.html (python -m online.analysis on this run) at the end

    c.model = _sd_model()
    c.prompts = ml_collections.ConfigDict()
    c.prompts.train_file = "config/prompts/animals_train.txt"
    c.prompts.eval_file = "config/prompts/animals_eval.txt"

    c.featurizer = ml_collections.ConfigDict()
    c.featurizer.kind = "clip"  # clip | world
    c.featurizer.path = CLIP_MODEL

    c.oracle = ml_collections.ConfigDict()
    c.oracle.kind = "aesthetic"  # aesthetic | jpeg | colorfulness | rare | multi | external | human
    c.oracle.noise_std = 0.1  # label noise added to each answer, as in the reference
    c.oracle.clip_model = CLIP_MODEL
    c.oracle.mlp_path = AESTHETIC_MLP
    c.oracle.weights = ml_collections.ConfigDict({"jpeg": 0.5, "colorfulness": 0.5})  # for kind=multi
    c.oracle.command = ()  # kind=external: argv, e.g. --config.oracle.command="('python', 'rate.py')"
    c.oracle.batch_size = 0  # items per oracle call (0: the whole batch); answers are saved per call
    c.oracle.max_retries = 2
    c.oracle.timeout_s = 600.0
    # kind=human: where the rating page listens. 127.0.0.1 keeps it on this machine; another address
    # (e.g. 0.0.0.0) serves it on a network on purpose. Every request needs the token printed on the terminal.
    c.oracle.host = "127.0.0.1"
    c.oracle.port = 0  # 0: a free port, picked once per run

    c.surrogate = _surrogate(surrogate_kind)

    c.smc = _smc()

    c.loop = ml_collections.ConfigDict()
    c.loop.num_rounds = 257  # round 0 (pretrained samples) included
    c.loop.initial_queries = 256
    c.loop.queries_per_round = 16
    c.loop.images_per_prompt = 1  # queried images per prompt: the K particles by weight

    c.evaluate = ml_collections.ConfigDict()
    c.evaluate.num_prompts = 0  # 0: every evaluation prompt
    c.evaluate.images_per_prompt = 4
    return c


# Embedded world: the label noise of JPEG, colourfulness and the rare-colour oracle is the
# world's own (world.ORACLE_NOISE_STD, a tenth of each oracle's spread over the model's
# samples); α (kl_coeff) is of the same size;
# the multi-objective oracle sums the two divided by their spreads, with weight ½ each.
WORLD_SCALES = {"jpeg": 0.2, "colorfulness": 50.0}
WORLD_KL_COEFF = {"jpeg": 0.02, "colorfulness": 5.0, "rare": 0.03, "multi": 0.1, "human": 0.5}  # human: 1-10 ratings


def _tiny(c: ml_collections.ConfigDict, oracle: str) -> ml_collections.ConfigDict:
    from world import ORACLE_NOISE_STD

    c.model = _world_model()
    c.model.num_steps = 15
    c.prompts.train_file = "world:train"
    c.prompts.eval_file = "world:eval"
    c.featurizer.kind = "world"
    c.featurizer.path = ""
    c.oracle.kind = oracle
    c.oracle.noise_std = ORACLE_NOISE_STD.get(oracle, 0.1)
    c.oracle.weights = ml_collections.ConfigDict({k: 0.5 / v for k, v in WORLD_SCALES.items()})
    c.smc.kl_coeff = WORLD_KL_COEFF[oracle]
    c.smc.tempering_gamma = 0.1
    c.loop.num_rounds = 7
    c.loop.initial_queries = 48
    c.loop.queries_per_round = 16
    c.evaluate.images_per_prompt = 2
    return c


def online_config(surrogate_kind: str, variant: str, method: str) -> ml_collections.ConfigDict:
    """The config of `method` (its surrogate kind) for one variant."""
    if variant not in VARIANTS:
        raise ValueError(f"Unknown config variant {variant!r}; choose one of: {', '.join(VARIANTS)}.")
    c = _base(surrogate_kind)
    c.run_name = f"{method}-{variant}"
    if variant == "jpeg":
        c.oracle.kind = "jpeg"
        c.smc.kl_coeff = 0.1
    elif variant == "evaluate":
        c.mode = "evaluate"
    elif variant.startswith("tiny_"):
        oracle = variant[len("tiny_") :]
        c = _tiny(c, "jpeg" if oracle == "evaluate" else oracle)
        c.run_name = f"{method}-{variant}"
        if oracle == "evaluate":
            c.mode = "evaluate"
        if oracle == "human":  # a round a person can rate in a minute; the rating is the observation
            c.oracle.noise_std = 0.0
            c.loop.num_rounds = 4
            c.loop.initial_queries = 8
            c.loop.queries_per_round = 4
    return c


def method_config(method: str):
    """The ``get_config`` of ``config/<method>_smc.py``: :func:`online_config` with the method's surrogate."""
    kind = METHODS[method]

    def get_config(variant: str = "aesthetic") -> ml_collections.ConfigDict:
        return online_config(kind, variant, method=method)

    get_config.__doc__ = f"``config/{method}_smc.py:<variant>``: the online loop with the {kind!r} surrogate."
    return get_config
