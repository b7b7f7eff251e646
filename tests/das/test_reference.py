"""DAS reproduces, bit for bit, the outputs recorded before the settings and ``init``/``step``/``finish`` redesign.

The cases (toy mixture and tiny Stable Diffusion components; full, Jacobian-free and no
gradient; resampling and tempering on) and the recording are in :mod:`tests.das.das_reference`.
"""

import pytest
import torch

from tests.das import das_reference


@pytest.fixture(scope="module")
def recorded() -> dict[str, torch.Tensor]:
    from safetensors import safe_open
    from safetensors.torch import load_file

    with safe_open(str(das_reference.FIXTURE), framework="pt") as f:
        recorded_with = f.metadata()["torch"]
    if recorded_with != torch.__version__:  # other kernels may round differently
        pytest.skip(f"the reference was recorded with torch {recorded_with}, this is {torch.__version__}")
    return load_file(str(das_reference.FIXTURE))


@pytest.fixture(scope="module")
def sd_model():
    return das_reference.sd_model()


@pytest.mark.parametrize("name", list(das_reference.CASES))
def test_sampler_reproduces_the_recorded_outputs_bit_for_bit(name, recorded, sd_model):
    case = das_reference.CASES[name]
    result = das_reference.run_case(case, sd_model if case.model == "sd" else None)
    produced = das_reference.flatten(name, result)
    assert set(produced) == {key for key in recorded if key.startswith(f"{name}/")}
    for key, value in produced.items():
        assert value.dtype == recorded[key].dtype and torch.equal(value, recorded[key]), key
    if case.model == "sd" or "proposal" in name:
        assert result.resampled.any()  # the case exercises resampling
