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
  pretrained model, ``world/oracles.py``). These variants choose each round's queries from a
  candidate pool (:data:`WORLD_POOL`; ``NO_POOL``'s values turn it off) and, with the GP, fit
  it on every feature (no PCA): the benchmark's default method (``benchmarks/bench_online.py``).
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

#: The method files ``config/<method>_smc.py``: each is this table's row, through :func:`method_config`:
#: the surrogate kind, and the acquisition ``smc.guidance="optimistic"`` (the default) guides DAS by.
METHODS = {
    "UCB": ("ucb", "ucb"),  # MLP + UCB bonus
    "Bootstrap": ("bootstrap", "max_heads"),  # bootstrap ensemble of MLPs, max over heads
    "GP": ("gp", "ucb"),  # Gaussian process + UCB
    "Greedy": ("ucb", "mean"),  # the UCB surrogate's mean, no optimism
}
#: The acquisition settings of each acquisition kind a method uses (β, and the UCB bonus's clip).
#: The values reproduce the pre-0.2 methods, where β lived in the surrogate (old runs resume with them).
ACQUISITION_SETTINGS = {
    ("ucb", "ucb"): {"beta": 1.0, "clip": 10.0},  # SEIKO's bonus clip
    ("gp", "ucb"): {"beta": 1.0, "clip": None},
    ("bootstrap", "ucb"): {"beta": 1.0, "clip": None},
    ("bootstrap", "max_heads"): {"beta": 1.0, "clip": None},
    ("ucb", "mean"): {"beta": 0.0, "clip": 10.0},
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


def _surrogate(kind: str, acquisition: str) -> ml_collections.ConfigDict:
    s = ml_collections.ConfigDict()
    s.kind = kind  # ucb | bootstrap | gp
    # Keyword arguments of the surrogate class (surrogate/), e.g. ridge, hidden sizes.
    s.kwargs = ml_collections.ConfigDict()
    if kind == "ucb" and acquisition == "ucb":
        # The calibrated std s·sqrt(φᵀA⁻¹φ), A = λI + Σφφᵀ, s fitted on held-out answers
        # (surrogate/ucb.py); the loop passes its label noise std. The reference's
        # normalized-covariance bonus is bonus_covariance="normalized" with acquisition.beta=0.01.
        s.kwargs.lam = 0.001
    elif kind == "bootstrap":
        s.kwargs.num_heads = 4
    if kind in ("ucb", "bootstrap"):
        s.kwargs.hidden = (1024, 128, 64, 16)  # the reference MLP on 768-d CLIP features
        s.kwargs.max_epochs = 100  # early stopping on a shuffled validation split ends most fits sooner
        s.kwargs.patience = 5
    s.warm_start = True
    return s


def _acquisition(kind: str, acquisition: str) -> ml_collections.ConfigDict:
    """How optimistic the sampler's guidance is (surrogate/acquisition.py), apart from the model."""
    a = ml_collections.ConfigDict()
    a.kind = acquisition  # what smc.guidance="optimistic" uses: ucb (mean + min(β·std, clip)) | max_heads | mean
    settings = ACQUISITION_SETTINGS.get((kind, acquisition), {"beta": 1.0, "clip": None})
    a.beta = settings["beta"]  # UCB's optimism β (a multiple of the calibrated std)
    a.exploit_last_round = False  # the last round guided and chosen by the posterior mean (β = 0)
    a.beta_schedule = "constant"  # β in round k: constant | gp_ucb (grows like GP-UCB's sqrt(β_t), β in round 1)
    a.clip = ml_collections.FieldReference(settings["clip"], field_type=float)  # UCB bonus clip (None: none)
    return a


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
    # optimistic (acquisition.kind) | mean | thompson (a draw per call) | none (pretrained) | oracle (ceiling)
    smc.guidance = "optimistic"
    return smc


def _world_model() -> ml_collections.ConfigDict:
    m = _sd_model()
    m.family = "pixel"
    m.path = WORLD_MODEL
    m.dtype = "fp32"
    m.num_steps = 20
    m.guidance_scale = 3.0
    return m


def _base(surrogate_kind: str, acquisition: str) -> ml_collections.ConfigDict:
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

    c.surrogate = _surrogate(surrogate_kind, acquisition)
    c.acquisition = _acquisition(surrogate_kind, acquisition)

    c.smc = _smc()

    c.loop = ml_collections.ConfigDict()
    c.loop.num_rounds = 257  # round 0 (pretrained samples) included
    c.loop.initial_queries = 256
    c.loop.queries_per_round = 16
    c.loop.images_per_prompt = 1  # queried images per prompt: the K particles by weight
    # A candidate pool (surrogate/batch_selection.py): rounds k > 0 sample pool_size candidates with DAS
    # and query the queries_per_round that loop.acquisition picks ("qucb", "qlognei", "thompson", "penalized");
    # 0 and "": the batch is what DAS samples (the behaviour before pools).
    c.loop.pool_size = 0
    c.loop.acquisition = ""
    c.loop.pool_pretrained = 0  # of the pool_size candidates of a guided round, this many from the pretrained chain
    # Round 0 from a pretrained pool of initial_pool_size covered by initial_selection ("maximin",
    # "kmeanspp"); 0 and "first": the first initial_queries samples drawn.
    c.loop.initial_pool_size = 0
    c.loop.initial_selection = "first"

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


#: The world variants' query choice (the default method of ``benchmarks/bench_online.py``; ``tiny_human``
#: excepted): each guided round samples 72 candidates (12 prompts × K = 4 DAS particles, plus 24 pretrained
#: samples) and queries the batch per-query Thompson draws pick (``qucb`` with β = 0, the top of the mean,
#: for a method without optimism); round 0 queries a maximin cover of 144 pretrained samples.
WORLD_POOL = {
    "images_per_prompt": 4,
    "pool_size": 72,
    "pool_pretrained": 24,
    "acquisition": "thompson",
    "initial_pool_size": 144,
    "initial_selection": "maximin",
}
#: The loop without a pool (every round queries what DAS samples, the heaviest particle per prompt).
NO_POOL = {
    "images_per_prompt": 1,
    "pool_size": 0,
    "pool_pretrained": 0,
    "acquisition": "",
    "initial_pool_size": 0,
    "initial_selection": "first",
}


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
    if oracle != "human":
        c.loop.update(WORLD_POOL)
        if c.acquisition.kind == "mean":  # no optimism: the batch is the top of the posterior mean
            c.loop.acquisition = "qucb"
    if c.surrogate.kind == "gp":  # ARD over every world feature: it finds the rare task's two colour features
        c.surrogate.kwargs.pca_dim = None
    return c


def online_config(
    surrogate_kind: str, variant: str, method: str, acquisition: str | None = None
) -> ml_collections.ConfigDict:
    """The config of `method` (its surrogate kind and optimistic acquisition) for one variant.

    ``acquisition`` defaults to the kind's own (UCB for ``ucb`` and ``gp``, the max over heads
    for ``bootstrap``); the pre-0.2 kind ``"greedy"`` gives the ``ucb`` surrogate with the
    posterior mean (deprecated, removed in 0.4.0).
    """
    if variant not in VARIANTS:
        raise ValueError(f"Unknown config variant {variant!r}; choose one of: {', '.join(VARIANTS)}.")
    if surrogate_kind == "greedy":
        from surrogate.deprecation import deprecate

        deprecate("Surrogate kind 'greedy'", "use kind 'ucb' with acquisition 'mean' (config/Greedy_smc.py)")
        surrogate_kind, acquisition = "ucb", "mean"
    acquisition = acquisition or {"bootstrap": "max_heads"}.get(surrogate_kind, "ucb")
    c = _base(surrogate_kind, acquisition)
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
            c.loop.update(NO_POOL)  # evaluate mode samples no pool
        if oracle == "human":  # a round a person can rate in a minute; the rating is the observation
            c.oracle.noise_std = 0.0
            c.loop.num_rounds = 4
            c.loop.initial_queries = 8
            c.loop.queries_per_round = 4
    return c


def method_config(method: str):
    """The ``get_config`` of ``config/<method>_smc.py``: :func:`online_config` with the method's surrogate."""
    kind, acquisition = METHODS[method]

    def get_config(variant: str = "aesthetic") -> ml_collections.ConfigDict:
        return online_config(kind, variant, method=method, acquisition=acquisition)

    get_config.__doc__ = (
        f"``config/{method}_smc.py:<variant>``: the online loop with the {kind!r} surrogate and the "
        f"{acquisition!r} acquisition."
    )
    get_config.variants = VARIANTS  # the command line lists them when --config names no variant
    return get_config
