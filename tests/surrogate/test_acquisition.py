"""Acquisitions act on any surrogate's posterior; a new surrogate kind is one class and one registration;
the surrogate package has no import cycle."""

from __future__ import annotations

import ast
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import torch

import surrogate as surrogate_package
from surrogate import (
    ACQUISITIONS,
    SURROGATES,
    UCB,
    HyperparameterError,
    MaxOverHeads,
    Posterior,
    PosteriorMean,
    Surrogate,
    ThompsonSample,
    check_acquisition,
    load_surrogate,
    make_acquisition,
    make_surrogate,
)
from surrogate.base import as_feature_matrix, records_hyperparameters
from surrogate.checkpoint import TensorInfo, tensor_info
from surrogate.hyperparameters import number
from tests.surrogate.surrogate_helpers import D, toy_data

KINDS = tuple(sorted(SURROGATES))


def _query(shape=(7, D), seed=4) -> torch.Tensor:
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed))


def _supported(kind: str) -> list[str]:
    return [name for name, cls in ACQUISITIONS.items() if cls.requires <= SURROGATES[kind].capabilities]


@pytest.mark.parametrize("kind", KINDS)
def test_every_supported_acquisition_scores_any_shape_differentiably(fitted, kind):
    model = fitted[kind]
    for name in _supported(kind):
        acquisition = make_acquisition(name, model, beta=1.0, clip=10.0, generator=torch.Generator().manual_seed(0))
        total = 0.0
        for shape in ((7, D), (1, D), (2, 3, D)):
            query = _query(shape).requires_grad_(True)
            scores = acquisition(query)
            assert scores.shape == shape[:-1] and scores.dtype == model.dtype and torch.isfinite(scores).all()
            (grad,) = torch.autograd.grad(scores.sum(), query)
            assert torch.isfinite(grad).all(), (kind, name)
            total += float(grad.abs().sum())  # a single point may sit where every ReLU of a head is off
        assert total > 0, (kind, name)


@pytest.mark.parametrize("kind", KINDS)
def test_ucb_is_the_mean_plus_the_clipped_bonus_and_beta_zero_is_the_mean(fitted, kind):
    model = fitted[kind]
    query = _query()
    mean, std = model.posterior(query)
    assert torch.equal(PosteriorMean(model)(query), mean)
    assert torch.equal(UCB(model, beta=0.0, clip=10.0)(query), mean)
    torch.testing.assert_close(UCB(model, beta=2.0)(query), mean + 2.0 * std)
    clip = float((2.0 * std).median().detach())
    torch.testing.assert_close(UCB(model, beta=2.0, clip=clip)(query), mean + (2.0 * std).clamp(max=clip))
    assert (UCB(model, beta=2.0, clip=clip)(query) > mean).all()


def test_max_over_heads_and_thompson_draws_on_an_ensemble(fitted):
    model = fitted["bootstrap"]
    query = _query()
    heads = model.head_predictions(query)
    assert torch.equal(MaxOverHeads(model)(query), heads.max(0).values)
    draw = ThompsonSample(model, torch.Generator().manual_seed(5))
    assert torch.equal(draw(query), draw(query))  # one draw serves every call
    assert any(torch.equal(draw(query), head) for head in heads)


@pytest.mark.parametrize(
    ("name", "kind", "pattern"),
    [
        ("thompson", "gp", r"'thompson' acquisition needs a surrogate with 'sample', which the 'gp' surrogate"),
        ("max_heads", "ucb", r"'max_heads' acquisition needs a surrogate with 'heads', which the 'ucb' surrogate"),
        ("psychic", "ucb", r"Unknown acquisition 'psychic'; valid: \['max_heads', 'mean', 'thompson', 'ucb'\]"),
    ],
)
def test_an_acquisition_a_kind_cannot_serve_is_refused_from_the_classes_alone(fitted, name, kind, pattern):
    with pytest.raises(ValueError, match=pattern):
        check_acquisition(name, SURROGATES[kind])  # before anything is fitted
    with pytest.raises(ValueError, match=pattern):
        make_acquisition(name, fitted[kind], generator=torch.Generator())


@pytest.mark.parametrize(
    ("settings", "pattern"),
    [
        ({"beta": -1.0}, "beta must be a finite number >= 0"),
        ({"beta": float("nan")}, "beta must be a finite number >= 0"),
        ({"beta": True}, "beta must be a finite number >= 0"),
        ({"clip": 0.0}, "clip must be None or a number > 0"),
        ({"clip": float("nan")}, "clip must be None or a number > 0"),
    ],
)
def test_ucb_settings_are_checked(fitted, settings, pattern):
    with pytest.raises(ValueError, match=pattern):
        UCB(fitted["ucb"], **settings)


def test_thompson_needs_a_generator(fitted):
    with pytest.raises(ValueError, match="needs a generator"):
        make_acquisition("thompson", fitted["ucb"])


# ------------------------------------------------------------------- a new kind: one class, one registration
class LinearSurrogate(Surrogate):
    """A toy kind: ridge regression with a constant std; it owns its specs, memory count and capabilities."""

    kind = "toy_linear"
    hyperparameter_specs = {**Surrogate.hyperparameter_specs, "ridge": number(0.0, low_open=True)}
    hyperparameter_specs["label_noise_std"] = number(0.0, optional=True)

    @records_hyperparameters
    def __init__(
        self,
        input_dim: int,
        ridge: float = 1e-3,
        label_noise_std: float | None = None,
        dtype: str | torch.dtype = "float32",
    ) -> None:
        super().__init__(input_dim, dtype)
        self.ridge, self.label_noise_std = ridge, label_noise_std
        self.weights = torch.zeros(input_dim + 1, dtype=self.dtype)
        self.spread = torch.ones(1, dtype=self.dtype)

    @classmethod
    def implied_elements(cls, values: Mapping[str, Any]) -> tuple[str, int, str]:
        """The fit's `(D + 1)²` Gram matrix, the weights and the spread."""
        dim = int(values["input_dim"])
        return "input_dim", (dim + 1) ** 2 + dim + 2, f"input_dim={dim}"

    def _fit(self, x: torch.Tensor, y: torch.Tensor, generator: torch.Generator, warm: bool) -> dict[str, Any]:
        design = torch.cat([x, torch.ones(x.shape[0], 1, dtype=x.dtype)], dim=1)
        gram = design.T @ design + self.ridge * torch.eye(design.shape[1], dtype=x.dtype)
        self.weights = torch.linalg.solve(gram, design.T @ y)
        self.spread = (design @ self.weights - y).std().reshape(1).clamp_min(1e-6)
        return {"rows": int(x.shape[0])}

    def posterior(self, features: torch.Tensor, *, observation_noise: bool = False) -> Posterior:
        self._check_fitted()
        x, lead = as_feature_matrix(features, self.input_dim)
        mean = x.to(self.dtype) @ self.weights[:-1] + self.weights[-1]
        return Posterior(mean.reshape(lead), (self.spread * torch.ones_like(mean)).reshape(lead))

    def _model_tensors(self) -> dict[str, torch.Tensor]:
        return {"weights": self.weights, "spread": self.spread}

    def _expected_model_tensors(
        self, table: Mapping[str, TensorInfo], header: dict[str, Any], path: str
    ) -> dict[str, TensorInfo]:
        return {"weights": tensor_info(self.dtype, (self.input_dim + 1,)), "spread": tensor_info(self.dtype, (1,))}

    def _load_model_tensors(self, tensors: dict[str, torch.Tensor], header: dict[str, Any]) -> None:
        self.weights, self.spread = tensors["weights"], tensors["spread"]


@pytest.fixture
def toy_kind(monkeypatch):
    monkeypatch.setitem(SURROGATES, LinearSurrogate.kind, LinearSurrogate)  # the one registration
    return LinearSurrogate.kind


def test_a_toy_kind_is_one_class_plus_one_registration(toy_kind, tmp_path):
    x, y = toy_data()
    model = make_surrogate(toy_kind, input_dim=D, ridge=0.1)
    model.fit(x, y, seed=0, round=2)
    loaded = load_surrogate(model.save(tmp_path / "toy.safetensors"), expected_kind=toy_kind, expected_input_dim=D)
    query = _query()
    assert torch.equal(UCB(loaded, beta=1.0)(query), UCB(model, beta=1.0)(query))
    assert torch.equal(PosteriorMean(loaded)(query), model.mean(query))
    with pytest.raises(ValueError, match="'sample'.*'toy_linear' surrogate"):
        ThompsonSample(model, torch.Generator())
    with pytest.raises(HyperparameterError, match=r"surrogate\.ridge must be a finite number > 0"):
        make_surrogate(toy_kind, input_dim=D, ridge=0.0)
    with pytest.raises(HyperparameterError, match=r"surrogate\.input_dim implies [\d,]+ tensor elements"):
        make_surrogate(toy_kind, input_dim=2**20)  # its own memory count: a 2^40-element Gram matrix
    assert surrogate_package.hyperparameter_names(toy_kind) == ("input_dim", "ridge", "label_noise_std", "dtype")


def test_the_online_loop_takes_a_toy_kind_without_other_edits(toy_kind, tmp_path):
    from config.online_base import online_config
    from online import builders
    from online.validation import ConfigError, _validate_choices, _validate_surrogate

    config = online_config("ucb", "tiny_jpeg", method="toy")
    config.surrogate.kind, config.surrogate.kwargs = toy_kind, {"ridge": 0.5}
    config.acquisition.kind, config.acquisition.clip = "ucb", None
    _validate_choices(config)
    _validate_surrogate(config.surrogate)
    model = builders.build_surrogate(config, builders.featurizer_dim(config))
    assert type(model) is LinearSurrogate and model.label_noise_std == config.oracle.noise_std  # label noise given
    config.smc.guidance = "thompson"
    with pytest.raises(ConfigError, match=r"^smc\.guidance='thompson': .*'toy_linear' surrogate does not offer"):
        _validate_choices(config)


# ------------------------------------------------------------------------------------ layering
def _imports(path: Path) -> set[str]:
    """The ``surrogate.*`` modules a file imports anywhere (function bodies included)."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("surrogate."):
            found.add(node.module)
        elif isinstance(node, ast.ImportFrom) and node.module == "surrogate":
            found.update(f"surrogate.{a.name}" for a in node.names if (path.parent / f"{a.name}.py").exists())
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("surrogate."))
    return found


def test_no_import_cycle_inside_the_surrogate_package():
    folder = Path(surrogate_package.__file__).parent
    graph = {f"surrogate.{p.stem}": _imports(p) for p in folder.glob("*.py") if p.stem != "__init__"}
    done: set[str] = set()

    def visit(module: str, path: tuple[str, ...]) -> None:
        assert module not in path, f"import cycle: {' -> '.join((*path, module))}"
        if module in done:
            return
        for dependency in sorted(graph.get(module, ())):
            visit(dependency, (*path, module))
        done.add(module)

    for module in sorted(graph):
        visit(module, ())
    assert not (graph["surrogate.hyperparameters"] & {f"surrogate.{kind}" for kind in ("ucb", "bootstrap", "gp")})
