"""From a config to objects: prompts, featurizer, oracle, surrogate, sampler settings.

Only entry points and this module read ConfigDicts; everything they build takes plain
keyword arguments. Heavy imports (diffusers pipelines, CLIP) happen inside the builders,
after :mod:`online.validation` has accepted the config.
"""

from __future__ import annotations

from pathlib import Path

import torch

from online.oracles import ExternalCommandOracle, Oracle, QueryPolicy, reward_as_oracle

REPO_ROOT = Path(__file__).resolve().parents[1]
WORLD_PROMPTS = ("world:train", "world:eval")


def resolve_path(path: str) -> Path:
    """A path as given, or relative to the repository when it does not exist as given."""
    p = Path(path).expanduser()
    return p if p.is_absolute() or p.exists() else REPO_ROOT / p


def read_prompts(source: str) -> list[str]:
    """Prompts from a text file (one per line, ``#`` comments) or the embedded world's list."""
    if source in WORLD_PROMPTS:
        from world import PROMPTS

        return list(PROMPTS)
    from das.cli import read_prompts as read_prompt_file

    return read_prompt_file(str(resolve_path(source)))


def featurizer_dim(config) -> int:
    """The feature dimension the configured featurizer produces (cheap: builds no model)."""
    if config.featurizer.kind == "world":
        from world import WorldFeaturizer

        return WorldFeaturizer().dim
    return 768  # CLIP ViT-L/14 image embeddings


def build_featurizer(config, device: torch.device):
    if config.featurizer.kind == "world":
        from world import WorldFeaturizer

        return WorldFeaturizer().to(device).eval()
    from das.clip import CLIPImageFeaturizer

    return CLIPImageFeaturizer.from_pretrained(config.featurizer.path).to(device).eval()


def build_oracle(config) -> Oracle:
    """The black box named by ``config.oracle.kind``."""
    if config.oracle.kind == "external":
        return ExternalCommandOracle(list(config.oracle.command), timeout_s=config.oracle.timeout_s)
    if config.oracle.kind == "human":
        return build_human_oracle(config)
    return reward_as_oracle(build_oracle_reward(config))


def build_human_oracle(config):
    """The local rating page (``oracle.kind="human"``, the ``[human]`` extra) for this run."""
    from online.human import HumanOracle
    from online.run_directory import RunDirectory

    return HumanOracle(
        host=str(config.oracle.get("host", "127.0.0.1")),
        port=int(config.oracle.get("port", 0)),
        run_dir=RunDirectory.for_config(config).path,
        num_rounds=int(config.loop.num_rounds),
        mode=config.mode,
    )


def build_oracle_reward(config):
    """The ``das`` reward behind a built-in oracle (every kind but ``external`` and ``human``): the black
    box itself, and the sampler's reward for the ceiling (``smc.guidance="oracle"``)."""
    kind = config.oracle.kind
    if kind == "multi":
        from das.rewards import WeightedSum

        names = ("jpeg", "colorfulness")
        return WeightedSum(
            [_named_reward(name, config) for name in names], [float(config.oracle.weights[n]) for n in names]
        )
    return _named_reward(kind, config)


def _named_reward(kind: str, config):
    if kind == "jpeg":
        from das.rewards.jpeg import JPEGCompressibility

        return JPEGCompressibility()
    if kind == "colorfulness":
        from das.rewards.colorfulness import ColorfulnessReward

        return ColorfulnessReward()
    if kind == "rare":
        from world.oracles import RareColourReward

        return RareColourReward()
    if kind in ("external", "human"):
        raise ValueError(f"The {kind} oracle answers queries; it is not a reward the sampler can call.")
    from das.rewards import make_reward

    return make_reward(
        "aesthetic", clip_model=config.oracle.clip_model, mlp_path=str(resolve_path(config.oracle.mlp_path))
    )


def query_policy(config) -> QueryPolicy:
    return QueryPolicy(
        max_retries=int(config.oracle.max_retries),
        timeout_s=float(config.oracle.timeout_s),
        batch_size=int(config.oracle.batch_size),
    )


def build_surrogate(config, input_dim: int):
    from surrogate import make_surrogate

    kwargs = dict(config.surrogate.kwargs)
    if config.surrogate.kind in ("ucb", "greedy", "bootstrap", "gp"):
        # the loop knows the label noise it adds: the calibrated std then counts only the model's error
        kwargs.setdefault("label_noise_std", float(config.oracle.noise_std))
    return make_surrogate(config.surrogate.kind, input_dim=input_dim, **kwargs)


def sampler_kwargs(config) -> dict:
    """Keyword arguments of :class:`das.DASSampler` from ``config.smc``."""
    smc = config.smc
    return dict(
        kl_coeff=float(smc.kl_coeff),
        num_particles=int(smc.num_particles),
        resampling=smc.resampling,
        ess_threshold=float(smc.ess_threshold),
        tempering=smc.tempering,
        tempering_gamma=float(smc.tempering_gamma),
        tempering_start=int(smc.tempering_start),
        max_chunk_rows=int(smc.max_chunk_rows) or None,
        selection="all",
    )


def quiet_model_loading(progress: bool) -> None:
    """Without ``progress``, no weight-loading bars (a one-line error stays one line)."""
    import diffusers
    import transformers

    diffusers.utils.logging.set_verbosity_error()  # e.g. "modules that should be kept in float32: []"
    if not progress:
        diffusers.utils.logging.disable_progress_bar()
        transformers.utils.logging.disable_progress_bar()


def build_adapter(config, device: torch.device):
    from das.cli import build_adapter as build_from_model_config

    quiet_model_loading(config.progress)
    model = config.model
    if model.family == "pixel":
        model = model.copy_and_resolve_references()
        model.path = str(resolve_path(model.path))
    return build_from_model_config(model, str(device))
