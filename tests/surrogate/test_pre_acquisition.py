"""Checkpoints written before acquisitions left the models still load, with a deprecation naming 0.4.0,
and give the numbers that code gave: identical mean and std, and the old optimistic score from the
acquisition the old header meant (``tests/fixtures/make_pre_acquisition.py`` made the files)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path

import pytest
import torch

from surrogate import (
    SURROGATES,
    MLPUCBSurrogate,
    check_hyperparameters,
    load_surrogate,
    make_acquisition,
    make_surrogate,
    read_header,
)
from surrogate.checkpoint import read_header as read_raw_header
from surrogate.deprecation import ACQUISITION_SPLIT_REMOVAL

FIXTURE = Path(__file__).resolve().parents[1] / "fixtures" / "pre_acquisition"
EXPECTED = json.loads((FIXTURE / "expected.json").read_text())
#: Old checkpoint -> (kind it loads as, the acquisition its optimistic score was).
CASES = {
    "greedy": ("ucb", {"kind": "mean", "beta": 0.0, "clip": 10.0}),
    "bootstrap": ("bootstrap", {"kind": "max_heads", "beta": 1.0, "clip": None}),
    "bootstrap_std": ("bootstrap", {"kind": "ucb", "beta": 0.5, "clip": None}),
    "gp": ("gp", {"kind": "ucb", "beta": 2.0, "clip": None}),
}


@pytest.fixture(autouse=True)
def _one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # the fixture was made on one thread; outputs are compared bit for bit
    yield
    torch.set_num_threads(threads)


def _load_warning(path: Path, **kwargs):
    with pytest.warns(FutureWarning) as caught:
        model = load_surrogate(path, **kwargs)
    messages = [str(w.message) for w in caught]
    assert any(f"removed in version {ACQUISITION_SPLIT_REMOVAL}" in m and str(path) in m for m in messages), messages
    return model


def _assert_same(got: torch.Tensor, expected: list[float]) -> None:
    assert got.double().tolist() == expected  # bit for bit (the fixture stores every float exactly)


@pytest.mark.parametrize("name", sorted(CASES))
def test_old_checkpoint_loads_with_a_deprecation_and_gives_identical_outputs(name):
    kind, acquisition = CASES[name]
    expected = EXPECTED["checkpoints"][name]
    path = FIXTURE / f"{name}.safetensors"
    model = _load_warning(path, expected_kind=kind)
    assert type(model) is SURROGATES[kind] and model.kind == kind
    with pytest.warns(FutureWarning):
        header = read_header(path)
    assert header["kind"] == kind and header["legacy_acquisition"] == acquisition
    assert read_raw_header(path)["kind"] == expected["kind"]  # the file itself is unchanged
    queries = torch.tensor(EXPECTED["checkpoint_queries"])
    with torch.no_grad():
        mean, std = model.posterior(queries)
        settings = {key: value for key, value in acquisition.items() if key != "kind"}
        optimistic = make_acquisition(acquisition["kind"], model, **settings)(queries)
    _assert_same(mean, expected["mean"])
    _assert_same(std, expected["std"])
    _assert_same(optimistic, expected["optimistic"])


def test_old_run_checkpoint_gives_the_old_ucb_scores_under_ucb_with_the_headers_beta():
    path = FIXTURE / "run" / "round_0001" / "surrogate.safetensors"
    expected = EXPECTED["run_checkpoint"]
    assert expected["hyperparameters"]["beta"] == 1.5  # the run stored β among the hyperparameters
    model = _load_warning(path, expected_kind="ucb", expected_input_dim=128)
    assert "beta" not in model.hyperparameters and "clip" not in model.hyperparameters
    queries = torch.tensor(EXPECTED["run_queries"])
    with torch.no_grad():
        mean, std = model.posterior(queries)
        ucb = make_acquisition("ucb", model, beta=1.5, clip=10.0)(queries)
    _assert_same(mean, expected["mean"])
    _assert_same(std, expected["std"])
    _assert_same(ucb, expected["optimistic"])


def test_resaved_old_checkpoint_is_current_and_loads_silently(tmp_path):
    with pytest.warns(FutureWarning):
        model = load_surrogate(FIXTURE / "greedy.safetensors")
    model.save(tmp_path / "new.safetensors")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        again = MLPUCBSurrogate.load(tmp_path / "new.safetensors")
        assert read_header(tmp_path / "new.safetensors")["kind"] == "ucb"
    queries = torch.tensor(EXPECTED["checkpoint_queries"])
    assert torch.equal(again.mean(queries), model.mean(queries))


def test_class_load_of_an_old_kind_upgrades_it():
    with pytest.warns(FutureWarning, match=ACQUISITION_SPLIT_REMOVAL):
        model = MLPUCBSurrogate.load(FIXTURE / "greedy.safetensors")
    assert model.kind == "ucb"


def test_greedy_kind_name_is_a_deprecated_alias_and_acquisition_settings_are_no_hyperparameters():
    with pytest.warns(FutureWarning, match="'greedy'.*0.4.0"):
        model = make_surrogate("greedy", input_dim=3, hidden=(4,))
    assert type(model) is MLPUCBSurrogate
    for kind, name in (("ucb", "beta"), ("ucb", "clip"), ("bootstrap", "optimism"), ("gp", "beta")):
        with pytest.raises(ValueError, match=f"surrogate.kwargs.{name} is no longer a hyperparameter.*acquisition"):
            check_hyperparameters(kind, {name: 1.0}, where="surrogate.kwargs")
