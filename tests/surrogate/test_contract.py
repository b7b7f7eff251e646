"""The surrogate contract: every registered kind goes through one test class.

In the spirit of diffusers' ``SchedulerCommonTest``: what any surrogate must do (shapes, the
posterior and the capabilities it declares, checkpoint round trip, device moves, the
hyperparameter record, seeded refits, one-line refusals) is checked once here for every kind
in :data:`surrogate.SURROGATES`; the kinds' own test files check their mathematics. A new kind
joins by adding its small settings to ``tests.surrogate.surrogate_helpers.small_kwargs``.
"""

from __future__ import annotations

import inspect
import json
import math

import pytest
import torch

from surrogate import (
    SURROGATES,
    HyperparameterError,
    Posterior,
    check_hyperparameters,
    hyperparameter_names,
    load_surrogate,
    make_surrogate,
    read_header,
)
from surrogate.base import dtype_name
from tests.surrogate.surrogate_helpers import D, assert_identical, outputs, small_kwargs, toy_data

KINDS = tuple(sorted(SURROGATES))
QUERY_SHAPES = [(15, D), (1, D), (2, 3, D)]


def _queries() -> list[torch.Tensor]:
    g = torch.Generator().manual_seed(4)
    return [torch.randn(*shape, generator=g) for shape in QUERY_SHAPES]


def _one_line(error: pytest.ExceptionInfo) -> str:
    message = str(error.value)
    assert message and "\n" not in message, message
    return message


@pytest.mark.parametrize("kind", KINDS)
class TestSurrogateContract:
    """What every surrogate kind must do; ``fitted[kind]`` is fitted once per session (seed 1, round 3)."""

    def test_fit_records_the_data_and_predicts_every_shape(self, fitted, kind):
        model = fitted[kind]
        assert model.kind == kind and model.fitted and model.input_dim == D
        assert model.n_data == 80 and model.round == 3
        assert isinstance(model.fit_info, dict) and model.fit_info["warm_start"] is False
        json.dumps(model.fit_info)  # the checkpoint header carries it
        for query in _queries():
            posterior = model.posterior(query)
            mean, std = posterior
            _, predictive = model.posterior(query, observation_noise=True)
            lead = query.shape[:-1]
            assert isinstance(posterior, Posterior) and posterior.mean is mean and posterior.std is std
            assert mean.shape == std.shape == predictive.shape == lead
            assert mean.dtype == std.dtype == model.dtype
            assert torch.isfinite(mean).all() and (std > 0).all() and (predictive >= std).all()
            assert torch.equal(model.mean(query), mean)

    def test_posterior_offers_exactly_the_declared_capabilities(self, fitted, kind):
        model = fitted[kind]
        assert model.capabilities <= {"sample", "heads", "joint"}
        for query in _queries():
            posterior, lead = model.posterior(query), query.shape[:-1]
            if "sample" in model.capabilities:
                draw = posterior.sample(torch.Generator().manual_seed(0))
                assert draw.shape == lead and torch.isfinite(draw).all()
                assert torch.equal(draw, posterior.sample(torch.Generator().manual_seed(0)))  # the state fixes it
            else:
                with pytest.raises(ValueError, match="no draws") as error:
                    posterior.sample(torch.Generator().manual_seed(0))
                _one_line(error)
            if "heads" in model.capabilities:
                assert posterior.heads.shape[1:] == lead and posterior.heads.shape[0] >= 2
                torch.testing.assert_close(posterior.heads.mean(0), posterior.mean)
            else:
                assert posterior.heads is None
            if "joint" in model.capabilities:  # each set's covariance has the posterior's std² on its diagonal
                mean, covariance = model.joint_posterior(query)
                assert mean.shape == lead and covariance.shape == (*lead, lead[-1])
                torch.testing.assert_close(mean, posterior.mean.detach())
                diagonal = torch.diagonal(covariance, dim1=-2, dim2=-1)
                torch.testing.assert_close(diagonal, posterior.std.detach().pow(2), rtol=1e-4, atol=1e-9)

    def test_save_load_gives_identical_predictions_and_header(self, fitted, kind, tmp_path):
        model = fitted[kind]
        path = tmp_path / f"{kind}.safetensors"
        model.save(path)
        assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left behind
        header = read_header(path)
        assert header["kind"] == kind and header["input_dim"] == D
        assert header["n_data"] == 80 and header["round"] == 3
        assert header["hyperparameters"] == model.hyperparameters
        assert header["extra"]["fit_info"] == json.loads(json.dumps(model.fit_info))
        for loaded in (
            load_surrogate(path, expected_kind=kind, expected_input_dim=D),
            type(model).load(path, expected_input_dim=D),
        ):
            assert type(loaded) is type(model) and loaded.kind == kind and loaded.fitted
            assert (loaded.n_data, loaded.round, loaded.hyperparameters) == (80, 3, model.hyperparameters)
            assert_identical(outputs(model, _queries()), outputs(loaded, _queries()))

    def test_to_device_keeps_predictions(self, fitted, kind, tmp_path):
        model = load_surrogate(fitted[kind].save(tmp_path / "m.safetensors"))  # a copy to move around
        before = outputs(model, _queries())
        assert model.to("cpu") is model and model.device == torch.device("cpu")
        assert_identical(before, outputs(model, _queries()))
        if not torch.cuda.is_available():
            return
        model.to("cuda")
        assert model.device.type == "cuda"
        on_gpu = outputs(model, [q.cuda() for q in _queries()])
        for a, b in zip(before, on_gpu):
            torch.testing.assert_close(b.cpu(), a, rtol=1e-4, atol=1e-5)
        model.to("cpu")
        after = outputs(model, _queries())
        for a, b in zip(before, after):
            torch.testing.assert_close(b, a, rtol=1e-5, atol=1e-6)

    def test_hyperparameters_are_the_constructor_arguments_recorded_once(self, fitted, kind):
        model = fitted[kind]
        given = small_kwargs(kind)
        record = model.hyperparameters
        assert tuple(record) == hyperparameter_names(kind) == tuple(inspect.signature(type(model)).parameters)
        assert json.loads(json.dumps(record)) == record
        for name, value in given.items():
            expected = list(value) if isinstance(value, tuple) else value
            assert record[name] == (dtype_name(model.dtype) if name == "dtype" else expected), name
        defaults = {
            name: p.default for name, p in inspect.signature(type(model)).parameters.items() if name not in given
        }
        for name, default in defaults.items():
            expected = list(default) if isinstance(default, tuple) else default
            assert record[name] == expected, name
        check_hyperparameters(kind, record)
        rebuilt = type(model)(**record)
        assert rebuilt.hyperparameters == record and rebuilt.kind == kind
        record["input_dim"] = -1
        assert model.hyperparameters["input_dim"] == D  # a copy, not the record itself

    def test_refit_is_deterministic_given_the_seed(self, kind):
        x, y = toy_data(n=40, seed=2)
        models = [make_surrogate(kind, **small_kwargs(kind)) for _ in range(3)]
        models[0].fit(x, y, seed=5)
        models[1].fit(x, y, generator=torch.Generator().manual_seed(5))
        a, b = models[0]._state_tensors(), models[1]._state_tensors()
        assert a.keys() == b.keys()
        assert_identical([a[k] for k in sorted(a)], [b[k] for k in sorted(b)])
        assert_identical(outputs(models[0], _queries()), outputs(models[1], _queries()))
        if kind != "gp":  # the exact GP's fit draws nothing that changes its result on this data
            models[2].fit(x, y, seed=6)
            c = models[2]._state_tensors()
            assert any(not torch.equal(a[k], c[k]) for k in a)

    def test_bad_input_is_refused_with_one_line(self, fitted, kind, tmp_path):
        model = fitted[kind]
        fresh = make_surrogate(kind, **small_kwargs(kind))
        x, y = toy_data(n=20)
        bad_fits = [
            (x[:, :-1], y, "Expected features of shape"),
            (x, y[:-1], "feature rows but"),
            (x, torch.where(torch.arange(20) == 3, math.nan, y), "must be finite"),
            (x.unsqueeze(0), y, "Expected features of shape"),
        ]
        for features, rewards, pattern in bad_fits:
            with pytest.raises(ValueError, match=pattern) as error:
                fresh.fit(features, rewards, seed=0)
            _one_line(error)
        assert not fresh.fitted
        with pytest.raises(RuntimeError, match="not fitted") as error:
            fresh.posterior(x)
        _one_line(error)
        with pytest.raises(RuntimeError, match="unfitted") as error:
            fresh.save(tmp_path / "x.safetensors")
        _one_line(error)
        with pytest.raises(ValueError, match="last dimension") as error:
            model.posterior(torch.randn(4, D + 1))
        _one_line(error)
        with pytest.raises(HyperparameterError, match=r"^surrogate\.no_such_name is not a hyperparameter") as error:
            make_surrogate(kind, input_dim=D, no_such_name=1)
        _one_line(error)
        with pytest.raises(HyperparameterError, match=r"^surrogate\.input_dim must be an integer") as error:
            make_surrogate(kind, input_dim=0)
        _one_line(error)
