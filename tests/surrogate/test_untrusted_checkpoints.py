"""Checkpoints as untrusted data, one hyperparameter checker for configs and headers, exact resume.

Bad checkpoints are crafted from good ones (rewritten with ``save_checkpoint``); each must end
in a one-sentence :class:`SurrogateCheckpointError` naming the problem, refused at the
earliest stage that can see it: header problems before any model is constructed, tensor
table problems before any tensor is read, value problems after loading.
"""

from __future__ import annotations

import inspect
import json
import math
import struct
from collections.abc import Callable
from pathlib import Path

import pytest
import torch

import surrogate.checkpoint as checkpoint_module
from surrogate import (
    SURROGATES,
    HyperparameterError,
    SurrogateCheckpointError,
    check_hyperparameters,
    hyperparameter_names,
    load_surrogate,
    make_surrogate,
)
from surrogate.base import Surrogate
from surrogate.hyperparameters import MAX_ELEMENTS
from tests.surrogate.surrogate_helpers import (
    Mutation,
    assert_identical,
    craft_checkpoint,
    entry_set,
    header_change,
    outputs,
    tensor_added,
    tensor_change,
)

D = 8
KINDS = ("ucb", "bootstrap", "gp")
MLP = dict(hidden=(16, 8), dropout=0.1, max_epochs=4, patience=2, batch_size=16)


def _kwargs(kind: str) -> dict:
    if kind == "ucb":
        return dict(input_dim=D, **MLP)
    if kind == "bootstrap":
        return dict(input_dim=D, num_heads=3, **MLP)
    return dict(input_dim=D, pca_dim=4, max_iter=15)


def _data(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, D, generator=g)
    return x, torch.sin(x[:, 0]) + 0.3 * x[:, 1] ** 2 + 0.05 * torch.randn(n, generator=g)


@pytest.fixture(scope="module")
def saved(tmp_path_factory) -> dict[str, Path]:
    """One good checkpoint per kind, fitted on 60 points."""
    folder = tmp_path_factory.mktemp("good")
    x, y = _data(60, seed=0)
    paths = {}
    for kind in KINDS:
        model = make_surrogate(kind, **_kwargs(kind))
        model.fit(x, y, generator=torch.Generator().manual_seed(1))
        paths[kind] = model.save(folder / f"{kind}.safetensors")
    return paths


# ------------------------------------------------------------------------------- bad checkpoints
def _field(**changes) -> Mutation:
    def mutate(header: dict, tensors: dict) -> None:
        header.update(changes)

    return mutate


# (id, kind, mutation, stage, message pattern); stage "header": refused before any model is built,
# "table": before any tensor is read, "values": after loading.
BAD_CASES = [
    (
        "huge-hidden",
        "ucb",
        header_change(hidden=[2_000_000_000]),
        "header",
        r"hyperparameters\.hidden must be a non-empty list of at most 64 integers in \[1, 16384\], "
        r"got \[2000000000\]\.",
    ),
    (
        "too-many-parameters",
        "bootstrap",
        header_change(hidden=[16384, 16384, 16384]),
        "header",
        r"hyperparameters\.hidden implies [\d,]+ tensor elements for input_dim=8 and 3 head\(s\), over the cap",
    ),
    (
        "unknown-hyperparameter",
        "ucb",
        header_change(ridge=0.1),
        "header",
        r"hyperparameters\.ridge is not a hyperparameter of the 'ucb' surrogate; valid names: \['batch_size', ",
    ),
    (
        "wrong-type",
        "ucb",
        header_change(max_epochs="5"),
        "header",
        r"hyperparameters\.max_epochs must be an integer in \[1, 100000\], got '5'\.",
    ),
    (
        "bool-for-int",
        "bootstrap",
        header_change(batch_size=True),
        "header",
        r"hyperparameters\.batch_size must be an integer .*got True\.",
    ),
    (
        "nan-hyperparameter",
        "ucb",
        header_change(lam=math.nan),
        "header",
        r"hyperparameters\.lam must be a finite number > 0, got nan\.",
    ),
    (
        "inf-hyperparameter",
        "gp",
        header_change(lr=math.inf),
        "header",
        r"hyperparameters\.lr must be a finite number > 0, got inf\.",
    ),
    (
        "huge-max-points",
        "gp",
        header_change(max_points=10**9),
        "header",
        r"hyperparameters\.max_points must be an integer in \[1, 8192\]",
    ),
    (
        "negative-n-data",
        "ucb",
        _field(n_data=-3),
        "header",
        r"header field 'n_data' must be a non-negative integer, got -3",
    ),
    (
        "float-round",
        "gp",
        _field(round=1.5),
        "header",
        r"header field 'round' must be a non-negative integer, got 1\.5",
    ),
    (
        "string-input-dim",
        "ucb",
        _field(input_dim="8"),
        "header",
        r"header field 'input_dim' must be a non-negative integer",
    ),
    (
        "input-dim-disagrees",
        "bootstrap",
        header_change(input_dim=9),
        "header",
        r"hyperparameters\.input_dim is 9 but the header's input_dim is 8",
    ),
    (
        "hyperparameters-not-a-dict",
        "ucb",
        _field(hyperparameters=[1, 2]),
        "header",
        r"'hyperparameters' must be an object",
    ),
    (
        "wrong-shape",
        "ucb",
        tensor_change("net.weights.0", lambda t: torch.zeros(1, D, 15)),
        "table",
        r"tensor 'net\.weights\.0' has shape \(1, 8, 15\) but its header implies shape \(1, 8, 16\)",
    ),
    (
        "missing-tensor",
        "ucb",
        tensor_change("bonus.chol", lambda t: None),
        "table",
        r"lacks tensor 'bonus\.chol' \(expected F32 of shape \(8, 8\)\)",
    ),
    (
        "extra-tensor",
        "bootstrap",
        tensor_added("payload", torch.zeros(3)),
        "table",
        r"holds an unexpected tensor 'payload' \(F32 of shape \(3,\)\)",
    ),
    (
        "wrong-dtype",
        "ucb",
        tensor_change("x_norm.mean", lambda t: t.double()),
        "table",
        r"tensor 'x_norm\.mean' has dtype F64 but its header implies F32",
    ),
    (
        "gp-more-points-than-max-points",
        "gp",
        header_change(max_points=20),
        "table",
        r"tensor 'train_x' holds 60 training points, more than its hyperparameters' max_points=20",
    ),
    (
        "gp-pca-wider-than-pca-dim",
        "gp",
        tensor_change("pca.components", lambda t: torch.zeros(6, D, dtype=torch.float64)),
        "table",
        r"tensor 'pca\.components' has shape \(6, 8\) but its header implies shape \(4, 8\)",
    ),
    (
        "nan-weight",
        "bootstrap",
        tensor_change("net.weights.1", entry_set((1, 2, 3), math.nan)),
        "values",
        r"holds non-finite values in tensor 'net\.weights\.1'",
    ),
    (
        "inf-in-gram",
        "ucb",
        tensor_change("bonus.gram", entry_set((0, 0), math.inf)),
        "values",
        r"holds non-finite values in tensor 'bonus\.gram'",
    ),
    (
        "nan-gp-target",
        "gp",
        tensor_change("train_y", entry_set(5, math.nan)),
        "values",
        r"non-finite values in tensor 'train_y'",
    ),
    (
        "zero-std",
        "ucb",
        tensor_change("y_norm.std", lambda t: torch.zeros_like(t)),
        "values",
        r"tensor 'y_norm\.std' must be positive",
    ),
    (
        "chol-not-triangular",
        "ucb",
        tensor_change("bonus.chol", lambda t: t + 1.0),
        "values",
        r"'bonus\.chol' is not a lower-triangular",
    ),
    (
        "chol-not-the-factor",
        "ucb",
        tensor_change("bonus.chol", lambda t: t * 3.0),
        "values",
        r"'bonus\.chol' is not the Cholesky factor",
    ),
    (
        "gp-constraint-bound",
        "gp",
        tensor_change("gp.likelihood.noise_covar.raw_noise_constraint.upper_bound", lambda t: t * 0 + 1.0),
        "values",
        r"tensor 'gp\.likelihood\.noise_covar\.raw_noise_constraint\.upper_bound' differs from the fixed value",
    ),
]


@pytest.mark.parametrize(
    ("kind", "mutate", "stage", "pattern"), [c[1:] for c in BAD_CASES], ids=[c[0] for c in BAD_CASES]
)
def test_bad_checkpoint_is_refused_at_the_earliest_stage(saved, tmp_path, monkeypatch, kind, mutate, stage, pattern):
    path = craft_checkpoint(saved[kind], tmp_path / "bad.safetensors", mutate)

    def forbidden(*args, **kwargs):
        raise AssertionError(f"a refused checkpoint got past the {stage!r} stage")

    if stage == "header":  # no model may be constructed, so nothing the header asks for is allocated
        monkeypatch.setattr(Surrogate, "__init__", forbidden)
    if stage in ("header", "table"):  # no tensor may be read
        monkeypatch.setattr(checkpoint_module, "safe_open", forbidden)
    with pytest.raises(SurrogateCheckpointError, match=pattern) as caught:
        load_surrogate(path)
    message = str(caught.value)
    assert str(path) in message and message.count(". ") == 0 and message.endswith(".")  # one sentence naming the file
    with pytest.raises(SurrogateCheckpointError, match=pattern):
        SURROGATES[kind].load(path)


def _edit_raw(source: Path, target: Path, edit: Callable[[dict], None]) -> Path:
    """Rewrite the safetensors JSON header of ``source`` by hand (the tensor bytes are kept)."""
    raw = source.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    table = json.loads(raw[8 : 8 + n])
    edit(table)
    encoded = json.dumps(table).encode()
    target.write_bytes(struct.pack("<Q", len(encoded)) + encoded + raw[8 + n :])
    return target


def _metadata(value: str) -> Callable[[dict], None]:
    def edit(table: dict) -> None:
        table["__metadata__"]["surrogate_header"] = value

    return edit


def _entry(name: str, key: str, value) -> Callable[[dict], None]:
    def edit(table: dict) -> None:
        table[name][key] = value

    return edit


RAW_CASES = [
    ("header-is-a-list", _metadata("[1, 2]"), r"has a corrupt JSON header"),
    ("deeply-nested-header", _metadata("[" * 100_000 + "]" * 100_000), r"has a corrupt JSON header"),
    ("metadata-not-an-object", lambda table: table.update(__metadata__=["x"]), r"has no surrogate header"),
    ("offsets-not-integers", _entry("noise_std", "data_offsets", ["a", 8]), r"has a malformed tensor table"),
    ("offsets-infinite", _entry("noise_std", "data_offsets", [0, 1e400]), r"has a malformed tensor table"),
    (
        "shape-not-a-list",
        _entry("noise_std", "shape", "1"),
        r"lists tensor 'noise_std' with a malformed dtype or shape",
    ),
    (
        "huge-claimed-shape",
        _entry("net.weights.0", "shape", [1, 100_000, 100_000]),
        r"tensor 'net\.weights\.0' has shape \(1, 100000, 100000\) but its header implies shape \(1, 8, 16\)",
    ),
]


@pytest.mark.parametrize(("edit", "pattern"), [c[1:] for c in RAW_CASES], ids=[c[0] for c in RAW_CASES])
def test_malformed_safetensors_header_is_refused_before_loading(saved, tmp_path, monkeypatch, edit, pattern):
    path = _edit_raw(saved["ucb"], tmp_path / "raw.safetensors", edit)

    def forbidden(*args, **kwargs):
        raise AssertionError("a tensor was read from a malformed checkpoint")

    monkeypatch.setattr(checkpoint_module, "safe_open", forbidden)
    with pytest.raises(SurrogateCheckpointError, match=pattern):
        load_surrogate(path)


def test_good_checkpoints_still_load(saved):
    for kind, path in saved.items():
        assert load_surrogate(path, expected_kind=kind, expected_input_dim=D).kind == kind


# ------------------------------------------------------------------------ config hyperparameters
CONFIG_CASES = [
    ("ucb", {"beta": 1.0}, r"^surrogate\.kwargs\.beta is no longer a hyperparameter of the 'ucb' surrogate: .*acq"),
    ("gp", {"beta": -1}, r"^surrogate\.kwargs\.beta is no longer a hyperparameter of the 'gp' surrogate"),
    ("ucb", {"lam": 0.0}, r"^surrogate\.kwargs\.lam must be a finite number > 0, got 0\.0\.$"),
    ("ucb", {"batch_size": True}, r"^surrogate\.kwargs\.batch_size must be an integer in \[1, 65536\], got True\.$"),
    (
        "bootstrap",
        {"max_epochs": 5.0},
        r"^surrogate\.kwargs\.max_epochs must be an integer in \[1, 100000\], got 5\.0\.$",
    ),
    ("ucb", {"patience": -1}, r"surrogate\.kwargs\.patience must be an integer in \[1, 100000\], got -1\."),
    (
        "ucb",
        {"ridge": 0.1},
        r"^surrogate\.kwargs\.ridge is not a hyperparameter of the 'ucb' surrogate; valid names: \[",
    ),
    ("ucb", {"num_heads": 4}, r"surrogate\.kwargs\.num_heads is not a hyperparameter of the 'ucb' surrogate"),
    ("greedy", {"beta": 0.0}, r"^surrogate\.kwargs\.beta is no longer a hyperparameter of the 'ucb' surrogate"),
    (
        "ucb",
        {"hidden": []},
        r"surrogate\.kwargs\.hidden must be a non-empty list of at most 64 integers in \[1, 16384\], got \[\]\.",
    ),
    ("ucb", {"hidden": (16, 0)}, r"surrogate\.kwargs\.hidden must be .*got \(16, 0\)\."),
    ("bootstrap", {"hidden": "16"}, r"surrogate\.kwargs\.hidden must be .*got '16'\."),
    ("ucb", {"hidden": [16.0, 8]}, r"surrogate\.kwargs\.hidden must be"),
    ("ucb", {"dropout": 1.0}, r"surrogate\.kwargs\.dropout must be a finite number in \[0, 1\), got 1\.0\."),
    ("ucb", {"clip": 10.0}, r"surrogate\.kwargs\.clip is no longer a hyperparameter of the 'ucb' surrogate"),
    (
        "ucb",
        {"bonus_covariance": "diag"},
        r"surrogate\.kwargs\.bonus_covariance must be one of \['design', 'normalized'\]",
    ),
    ("bootstrap", {"num_heads": 1}, r"surrogate\.kwargs\.num_heads must be an integer in \[2, 256\], got 1\."),
    ("bootstrap", {"optimism": "max"}, r"surrogate\.kwargs\.optimism is no longer a hyperparameter"),
    (
        "ucb",
        {"val_fraction": 0.95},
        r"surrogate\.kwargs\.val_fraction must be a finite number in \[0, 0\.9\], got 0\.95\.",
    ),
    ("ucb", {"lr": 10**400}, r"surrogate\.kwargs\.lr must be a finite number > 0"),
    ("ucb", {"weight_decay": -0.1}, r"surrogate\.kwargs\.weight_decay must be a finite number >= 0"),
    ("gp", {"pca_dim": 0}, r"surrogate\.kwargs\.pca_dim must be None or an integer in \[1, 4096\], got 0\."),
    ("gp", {"max_points": 100_000}, r"surrogate\.kwargs\.max_points must be an integer in \[1, 8192\], got 100000\."),
    ("gp", {"max_iter": 0}, r"surrogate\.kwargs\.max_iter must be an integer in \[1, 100000\], got 0\."),
    ("gp", {"dtype": "float16"}, r"surrogate\.kwargs\.dtype must be one of \['float32', 'float64'\], got 'float16'\."),
    (
        "gp",
        {"input_dim": 768, "pca_dim": None, "max_points": 8192},
        r"surrogate\.kwargs\.max_points implies [\d,]+ tensor elements",
    ),
    ("ucb", {"input_dim": 0}, r"surrogate\.kwargs\.input_dim must be an integer in \[1, 1048576\], got 0\."),
    (
        "ucb",
        {"input_dim": 768, "hidden": [16384, 16384]},
        r"surrogate\.kwargs\.hidden implies [\d,]+ tensor elements for input_dim=768",
    ),
    (
        "thompson",
        {},
        r"Unknown surrogate kind 'thompson' for surrogate\.kwargs; "
        r"valid kinds: \['bootstrap', 'gp', 'ucb'\]\.",
    ),
]


@pytest.mark.parametrize(("kind", "values", "pattern"), CONFIG_CASES)
def test_check_hyperparameters_refuses_bad_config_values(kind, values, pattern):
    with pytest.raises(HyperparameterError, match=pattern) as caught:
        check_hyperparameters(kind, values, where="surrogate.kwargs")
    assert isinstance(caught.value, ValueError)


GOOD_CONFIGS = [
    ("ucb", {"lam": 0.001, "hidden": (1024, 128, 64, 16), "max_epochs": 100, "patience": 5}),
    ("ucb", {"lam": 0.001, "bonus_covariance": "normalized", "dtype": torch.float64}),
    ("greedy", {"hidden": [1024, 128, 64, 16]}),  # the deprecated name of the ucb kind
    ("bootstrap", {"num_heads": 4, "hidden": (1024, 128, 64, 16), "val_fraction": 0.0}),
    ("gp", {"pca_dim": None, "max_points": 512, "input_dim": 768}),
    ("gp", {}),
]


@pytest.mark.parametrize(("kind", "values"), GOOD_CONFIGS)
def test_check_hyperparameters_accepts_good_configs(kind, values):
    check_hyperparameters(kind, values, where="surrogate.kwargs")
    check_hyperparameters(kind, {"input_dim": 768, **values})  # the reference 768-d features fit under the cap


def test_check_hyperparameters_takes_config_dicts_and_refuses_non_mappings():
    ml_collections = pytest.importorskip("ml_collections")
    kwargs = ml_collections.ConfigDict({"lam": 1.0, "hidden": (16, 8), "label_noise_std": None})
    check_hyperparameters("ucb", kwargs, where="surrogate.kwargs")
    kwargs.lam = -2.0
    with pytest.raises(
        HyperparameterError, match=r"^surrogate\.kwargs\.lam must be a finite number > 0, got -2\.0\.$"
    ):
        check_hyperparameters("ucb", kwargs, where="surrogate.kwargs")
    with pytest.raises(HyperparameterError, match=r"^surrogate\.kwargs must be a mapping of hyperparameter names"):
        check_hyperparameters("gp", [("lr", 1.0)], where="surrogate.kwargs")


def test_names_come_from_the_constructors_and_every_name_has_bounds():
    for kind, cls in SURROGATES.items():
        names = hyperparameter_names(kind)
        assert set(names) == set(cls.hyperparameter_specs), kind  # each kind bounds exactly its own arguments
        assert names == tuple(inspect.signature(cls).parameters)
        check_hyperparameters(kind, make_surrogate(kind, input_dim=768).hyperparameters)  # defaults pass
    assert MAX_ELEMENTS == 2**26


def test_make_surrogate_checks():
    with pytest.raises(HyperparameterError, match=r"^surrogate\.beta is no longer a hyperparameter of the 'ucb'"):
        make_surrogate("ucb", input_dim=D, beta=2.0)
    with pytest.raises(HyperparameterError, match=r"surrogate\.hidden must be"):
        make_surrogate("ucb", input_dim=D, hidden=[2_000_000_000])
    with pytest.raises(HyperparameterError, match=r"surrogate\.lr must be a finite number > 0, got nan\."):
        make_surrogate("ucb", input_dim=D, lr=math.nan)


# ------------------------------------------------------------------------------- exact resume
QUERIES = [(31, D), (1, D), (2, 3, D)]  # one row takes another LAPACK path in the UCB solve


@pytest.mark.filterwarnings("ignore:Data \\(input features\\) is not contained to the unit cube")  # the warm GP refit
@pytest.mark.parametrize("kind", KINDS)
def test_loaded_surrogate_is_bit_identical_and_warm_starts_identically(kind, tmp_path):
    x, y = _data(60, seed=3)
    g = torch.Generator().manual_seed(4)
    queries = [torch.randn(*shape, generator=g) for shape in QUERIES]
    model = make_surrogate(kind, **_kwargs(kind))
    model.fit(x, y, generator=torch.Generator().manual_seed(2))
    state = model._state_tensors()
    assert all(t.is_contiguous() for t in state.values()), [n for n, t in state.items() if not t.is_contiguous()]
    loaded = load_surrogate(model.save(tmp_path / "m.safetensors"))
    assert_identical(outputs(model, queries), outputs(loaded, queries))

    x_new, y_new = _data(20, seed=5)
    x_all, y_all = torch.cat([x, x_new]), torch.cat([y, y_new])
    for m in (model, loaded):
        m.fit(x_all, y_all, warm_start=True, generator=torch.Generator().manual_seed(5))
        assert m.fit_info["warm_start"]
    a, b = model._state_tensors(), loaded._state_tensors()
    assert a.keys() == b.keys()
    assert_identical([a[k] for k in sorted(a)], [b[k] for k in sorted(b)])
    assert_identical(outputs(model, queries), outputs(loaded, queries))
