import json
import os

import torch

from das.ancestral import sample_images
from world import PROMPTS
from world.train import main


def test_training_script_runs_and_saves_a_loadable_model(tmp_path):
    out = str(tmp_path / "tiny_world")
    assert (
        main(["--out", out, "--steps", "2", "--tiny", "--batch-size", "4", "--save-every", "1", "--warmup", "1"]) == 0
    )
    for sub in ("unet", "scheduler", "text_encoder", "tokenizer"):
        assert os.path.isdir(os.path.join(out, sub)), sub
    info = json.load(open(os.path.join(out, "training_info.json")))
    assert info["steps"] == 2 and info["prompts"] == list(PROMPTS)
    assert not os.path.exists(out + ".tmp") and not os.path.exists(out + ".tokenizer")

    from das.adapters.pixel import PixelUNetAdapter

    adapter = PixelUNetAdapter.from_pretrained(out, num_steps=2, guidance_scale=3.0)
    images = sample_images(adapter, list(PROMPTS[:2]), torch.Generator().manual_seed(0))
    assert images.shape == (2, 3, 32, 32) and 0 <= images.min() and images.max() <= 1


def test_min_snr_weights_follow_their_closed_form():
    from world.train import min_snr_weights

    abar = torch.tensor([0.999, 0.9, 5.0 / 6.0, 0.5, 0.01])  # SNR 999, 9, 5, 1, 1/99
    w = min_snr_weights(abar, gamma=5.0)
    snr = abar / (1 - abar)
    torch.testing.assert_close(w, torch.tensor([5.0 / snr[0].item(), 5.0 / 9.0, 1.0, 1.0, 1.0]))
    assert torch.equal(min_snr_weights(abar, gamma=0.0), torch.ones(5))


def test_the_trainer_never_replaces_a_folder_it_did_not_save(tmp_path):
    import json

    import pytest

    from world.train import PIPELINE_CLASS, check_output_folder

    check_output_folder(str(tmp_path / "new"))  # absent: fine
    user = tmp_path / "mine"
    user.mkdir()
    (user / "notes.txt").write_text("keep")
    with pytest.raises(SystemExit, match="not a world model this script saved"):
        check_output_folder(str(user))
    (user / "model_index.json").write_text(json.dumps({"_class_name": PIPELINE_CLASS}))
    check_output_folder(str(user))  # a model folder of ours: replaced at the next save
