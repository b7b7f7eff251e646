import json
import os

import pytest
import torch

from world import PROMPTS
from world.align import main as align
from world.train import main as train


@pytest.fixture(scope="module")
def tiny_world(tmp_path_factory):
    out = str(tmp_path_factory.mktemp("tiny_align") / "pretrained")
    assert train(["--out", out, "--steps", "1", "--tiny", "--batch-size", "2", "--warmup", "1"]) == 0
    return out


def test_align_writes_a_loadable_model_folder_with_its_record(tiny_world, tmp_path):
    out = str(tmp_path / "aligned")
    args = [
        "--init",
        tiny_world,
        "--out",
        out,
        "--num-per-prompt",
        "1",
        "--particles",
        "2",
        "--das-steps",
        "2",
        "--steps",
        "2",
        "--batch-size",
        "4",
        "--warmup",
        "1",
        "--das-batch",
        "9",
        "--eval-per-prompt",
        "2",
    ]
    assert align(args) == 0
    for sub in ("unet", "scheduler", "text_encoder", "tokenizer"):
        assert os.path.isdir(os.path.join(out, sub)), sub
    with open(os.path.join(out, "training_info.json")) as handle:
        info = json.load(handle)
    assert info["alpha"] == 5.0 and info["oracle"] == "colorfulness" and info["steps"] == 2
    assert info["data"]["num_images"] == len(PROMPTS) and info["command"].startswith("python -m world.align")
    assert set(info["evaluation"]) >= {"pretrained", "aligned"}
    assert not [p for p in os.listdir(tmp_path) if p.endswith(".tmp")]

    from das.adapters.pixel import PixelUNetAdapter
    from das.adapters.realigned import check_realignable

    reference = PixelUNetAdapter.from_pretrained(tiny_world, num_steps=2, guidance_scale=3.0)
    aligned = PixelUNetAdapter.from_pretrained(out, num_steps=2, guidance_scale=3.0)
    check_realignable(reference, aligned)  # same scheduler, chain and shape: mixable step by step
    changed = any(not torch.equal(a, b) for a, b in zip(reference.unet.parameters(), aligned.unet.parameters()))
    assert changed


def test_align_refuses_bad_arguments(tiny_world, tmp_path):
    with pytest.raises(SystemExit, match="--alpha"):
        align(["--init", tiny_world, "--out", str(tmp_path / "x"), "--alpha", "0"])
    with pytest.raises(SystemExit, match="no unet/"):
        align(["--init", str(tmp_path), "--out", str(tmp_path / "x")])
