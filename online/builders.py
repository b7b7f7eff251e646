"""From a config to objects: prompts, featurizer, oracle, surrogate, sampler settings.

The online loop's registries (:data:`SURROGATES`, :data:`ORACLES`, :data:`FEATURIZERS`)
are :class:`dasapp.factory.Registry` objects like the das-level ones (model families,
tempering schedules, resamplers, prompt lists) in :mod:`dasapp.factory`, which this module
builds on. They live here, not in :mod:`dasapp.factory`, because they name objects of
``surrogate``, ``world`` and ``online`` itself, which ``das`` may not import.

Only entry points and this module read ConfigDicts; everything they build takes plain
keyword arguments. Heavy imports (diffusers pipelines, CLIP) happen inside the builders,
after :mod:`online.validation` has accepted the config.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import torch

from dasapp import factory
from dasapp.factory import Registry, resolve_path
from online.guidance import guidance_acquisition
from online.oracles import ExternalCommandOracle, Oracle, QueryPolicy, reward_as_oracle

SURROGATES = Registry("surrogate.kind", "surrogate:SURROGATES", sort=True)
FEATURIZERS = Registry("featurizer.kind")
ORACLES = Registry("oracle.kind")  # every kind: the black box the loop asks
ORACLE_REWARDS = Registry("oracle.kind")  # the built-in kinds: a das reward behind the oracle


def read_prompts(source: str) -> list[str]:
    """Prompts from a text file (one per line, ``#`` comments) or a named list such as the embedded world's."""
    return factory.read_prompts(source)


# ----------------------------------------------------------------------------- featurizers
CLIP_FEATURE_DIM = 768  # CLIP ViT-L/14 image embeddings


class FeaturizerKind:
    """A featurizer's registry entry: how to build it, and its feature dimension without building a model.

    Args:
        build: ``config -> featurizer``.
        dim: ``config -> int``, cheap (validation asks it before any model is loaded).
    """

    def __init__(self, build: Callable[[Any], Any], dim: Callable[[Any], int]):
        self.build, self.dim = build, dim

    def __call__(self, config):
        return self.build(config)


def register_featurizer(name: str, dim: Callable[[Any], int]) -> Callable:
    """Decorator: registers ``build(config)`` as featurizer kind ``name`` with its dimension ``dim(config)``."""

    def add(build: Callable[[Any], Any]) -> Callable[[Any], Any]:
        FEATURIZERS.register(name)(FeaturizerKind(build, dim))
        return build

    return add


@register_featurizer("clip", dim=lambda config: CLIP_FEATURE_DIM)
def _clip_featurizer(config):
    from das.clip import CLIPImageFeaturizer

    return CLIPImageFeaturizer.from_pretrained(config.featurizer.path)


@register_featurizer("world", dim=lambda config: _world_featurizer(config).dim)  # a small fixed network: cheap
def _world_featurizer(config):
    from world import WorldFeaturizer

    return WorldFeaturizer()


def featurizer_dim(config) -> int:
    """The feature dimension the configured featurizer produces (from its registry entry; builds no large model)."""
    return FEATURIZERS.get(config.featurizer.kind).dim(config)


def build_featurizer(config, device: torch.device):
    return FEATURIZERS.build(config.featurizer.kind, config).to(device).eval()


# ----------------------------------------------------------------------------- oracles
@ORACLE_REWARDS.register("aesthetic")
def _aesthetic_reward(config):
    from das.rewards import make_reward

    return make_reward(
        "aesthetic", clip_model=config.oracle.clip_model, mlp_path=str(resolve_path(config.oracle.mlp_path))
    )


@ORACLE_REWARDS.register("jpeg")
def _jpeg_reward(config):
    from das.rewards.jpeg import JPEGCompressibility

    return JPEGCompressibility()


@ORACLE_REWARDS.register("colorfulness")
def _colorfulness_reward(config):
    from das.rewards.colorfulness import ColorfulnessReward

    return ColorfulnessReward()


@ORACLE_REWARDS.register("rare")
def _rare_reward(config):
    from world.oracles import RareColourReward

    return RareColourReward()


@ORACLE_REWARDS.register("multi")
def _multi_reward(config):
    from das.rewards import WeightedSum

    names = ("jpeg", "colorfulness")
    return WeightedSum(
        [ORACLE_REWARDS.build(name, config) for name in names], [float(config.oracle.weights[n]) for n in names]
    )


for _kind in ORACLE_REWARDS.names():
    ORACLES.register(_kind)(lambda config: reward_as_oracle(build_oracle_reward(config)))


@ORACLES.register("external")
def _external_oracle(config) -> Oracle:
    return ExternalCommandOracle(list(config.oracle.command), timeout_s=config.oracle.timeout_s)


@ORACLES.register("human")
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


def build_oracle(config) -> Oracle:
    """The black box named by ``config.oracle.kind``."""
    return ORACLES.build(config.oracle.kind, config)


def build_oracle_reward(config):
    """The ``das`` reward behind a built-in oracle (every kind but ``external`` and ``human``): the black
    box itself, and the sampler's reward for the ceiling (``smc.guidance="oracle"``)."""
    kind = config.oracle.kind
    if kind in ("external", "human"):
        raise ValueError(f"The {kind} oracle answers queries; it is not a reward the sampler can call.")
    return ORACLE_REWARDS.build(kind, config)


def query_policy(config) -> QueryPolicy:
    return QueryPolicy(
        max_retries=int(config.oracle.max_retries),
        timeout_s=float(config.oracle.timeout_s),
        batch_size=int(config.oracle.batch_size),
    )


# ----------------------------------------------------------------------------- surrogate, sampler, model
def build_surrogate(config, input_dim: int):
    from surrogate import hyperparameter_names, make_surrogate

    kwargs = dict(config.surrogate.kwargs)
    if "label_noise_std" in hyperparameter_names(config.surrogate.kind):
        # the loop knows the label noise it adds: the calibrated std then counts only the model's error
        kwargs.setdefault("label_noise_std", float(config.oracle.noise_std))
    return make_surrogate(config.surrogate.kind, input_dim=input_dim, **kwargs)


def acquisition_name(config) -> str:
    """The acquisition ``smc.guidance`` asks for (``"optimistic"``: the run's ``acquisition.kind``)."""
    return guidance_acquisition(config.smc.guidance, config.acquisition.kind)


def acquisition_draws(config, k: int) -> bool:
    """Whether round `k`'s acquisition is a random draw, made anew (with its own generator) per sampler call."""
    from surrogate import ACQUISITIONS

    return ACQUISITIONS[round_acquisition(config, k)].draws


BETA_SCHEDULES = ("constant", "gp_ucb")  # acquisition.beta_schedule: how β changes with the round
GP_UCB_DELTA = 0.1  # the "gp_ucb" schedule's δ (Srinivas et al. 2010, Theorem 1)


def round_beta(config, k: int) -> float:
    """The optimism β of round `k` (``k >= 1``: the first guided round) under ``acquisition.beta_schedule``.

    ``"constant"``: ``acquisition.beta`` in every round. ``"gp_ucb"``: β grows with the round as in
    GP-UCB's theory (Srinivas et al. 2010, Theorem 1: the std is multiplied by ``sqrt(β_t)``,
    ``β_t = 2 log(|D| t² π² / (6δ))``), normalised so that round 1 uses the configured β:
    ``β_k = β · sqrt(log(k² π² / (6δ)) / log(π² / (6δ)))`` with ``δ = 0.1``. The theorem's factor 2 and
    its ``|D|`` (the candidate set, which has no finite size here) are folded into the configured β.

    Raises:
        ValueError: For ``k < 1`` under ``"gp_ucb"`` (round 0 is not guided).
    """
    beta = float(config.acquisition.beta)
    if exploits(config, k):
        return 0.0
    if config.acquisition.beta_schedule == "constant":
        return beta
    if k < 1:
        raise ValueError(f"The gp_ucb beta schedule starts at round 1, got round {k}.")
    base = math.pi**2 / (6 * GP_UCB_DELTA)
    return beta * math.sqrt(math.log(k**2 * base) / math.log(base))


def exploits(config, k: int) -> bool:
    """Whether round `k` spends its queries on the posterior mean alone: the last round
    (``loop.num_rounds − 1``) of a run with ``acquisition.exploit_last_round``, where the batch is
    the run's answer rather than a step of the search (β = 0, DAS guided by the mean, the pool's
    batch the top of the mean)."""
    return bool(config.acquisition.exploit_last_round) and k == int(config.loop.num_rounds) - 1


def round_acquisition(config, k: int) -> str:
    """The acquisition that guides DAS in round `k`: the run's (:func:`acquisition_name`), or the
    posterior mean in a round that :func:`exploits`."""
    return "mean" if exploits(config, k) else acquisition_name(config)


def build_acquisition(config, surrogate, k: int, generator: torch.Generator | None = None):
    """The acquisition on ``surrogate`` that guides round `k` (:func:`round_acquisition`; settings from
    ``config.acquisition``, β from :func:`round_beta`; ``generator`` for a draw)."""
    from surrogate import make_acquisition

    settings = config.acquisition
    return make_acquisition(
        round_acquisition(config, k), surrogate, beta=round_beta(config, k), clip=settings.clip, generator=generator
    )


def batch_selection_settings(config, k: int) -> dict:
    """The settings :func:`surrogate.batch_selection.select_batch` takes from the config in round `k`: the
    optimism ``beta`` (UCB's ``mean + β·std``) of :func:`round_beta`."""
    return {"beta": round_beta(config, k)}


def sampler_settings(config, **overrides):
    """The :class:`das.DASSettings` of ``config.smc`` (`overrides` win); the loop keeps every particle."""
    return factory.settings_from_config(config.smc, selection="all", **overrides)


def quiet_model_loading(progress: bool) -> None:
    """Without ``progress``, no weight-loading bars (a one-line error stays one line)."""
    import diffusers
    import transformers

    diffusers.utils.logging.set_verbosity_error()  # e.g. "modules that should be kept in float32: []"
    if not progress:
        diffusers.utils.logging.disable_progress_bar()
        transformers.utils.logging.disable_progress_bar()


def build_adapter(config, device: torch.device):
    quiet_model_loading(config.progress)
    model = config.model
    if model.family == "pixel":
        model = model.copy_and_resolve_references()
        model.path = str(resolve_path(model.path))
    return factory.build_adapter(model, str(device))
