"""Trains the embedded world's text-to-image pixel diffusion model from scratch on a CPU.

The model is a small ``UNet2DConditionModel`` (3×32×32 pixels, cross-attention at 8×8
and in the middle block) conditioned on a tiny ``CLIPTextModel`` trained jointly with it, with a
``CLIPTokenizer`` built offline for the world's words, and a ``DDIMScheduler`` for
sampling. It is saved as a diffusers-style folder::

    <out>/unet/            config.json, diffusion_pytorch_model.safetensors (EMA weights)
    <out>/text_encoder/    config.json, model.safetensors (EMA weights)
    <out>/tokenizer/       vocab.json, merges.txt, tokenizer_config.json
    <out>/scheduler/       scheduler_config.json (DDIMScheduler)
    <out>/model_index.json, <out>/training_info.json

Usage::

    python -m world.train --out checkpoints/pretrained/shapes32 --steps 3000

A fraction ``--p-uncond`` of the captions is replaced by the empty prompt, so
classifier-free guidance with an empty negative prompt works as for Stable Diffusion. The
folder is rewritten atomically every ``--save-every`` steps, so an interrupted run leaves
a usable model.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Sequence

import torch
from diffusers import DDIMScheduler, UNet2DConditionModel
from transformers import CLIPTextConfig, CLIPTextModel, CLIPTokenizer

from world.scenes import IMAGE_SIZE, PROMPTS, make_dataset
from world.script_args import add_optimisation_arguments, add_run_arguments, setup_torch
from world.tokenizer import save_tokenizer

SCHEDULER_CONFIG = dict(
    num_train_timesteps=1000,
    beta_schedule="squaredcos_cap_v2",
    prediction_type="epsilon",
    clip_sample=True,
    clip_sample_range=1.0,
    set_alpha_to_one=True,
    steps_offset=0,
    timestep_spacing="leading",
)


DEFAULT_CHANNELS = (32, 64, 64)


def unet_config(tiny: bool = False, cross_attention_dim: int = 64, channels: Sequence[int] = DEFAULT_CHANNELS) -> dict:
    """``UNet2DConditionModel`` keyword arguments (``tiny`` for tests; `channels` per resolution 32, 16, 8)."""
    return dict(
        sample_size=IMAGE_SIZE,
        in_channels=3,
        out_channels=3,
        down_block_types=("DownBlock2D", "DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D", "UpBlock2D"),
        block_out_channels=(8, 16, 16) if tiny else tuple(channels),
        layers_per_block=1,
        norm_num_groups=8,
        cross_attention_dim=cross_attention_dim,
        attention_head_dim=8,
    )


def text_config(vocab_size: int, bos: int, eos: int, max_len: int, tiny: bool = False) -> CLIPTextConfig:
    """A tiny ``CLIPTextConfig``."""
    return CLIPTextConfig(
        vocab_size=vocab_size,
        hidden_size=32 if tiny else 64,
        intermediate_size=64 if tiny else 128,
        num_hidden_layers=1 if tiny else 2,
        num_attention_heads=2,
        max_position_embeddings=max_len,
        bos_token_id=bos,
        eos_token_id=eos,
        pad_token_id=eos,
    )


def min_snr_weights(alphas_cumprod: torch.Tensor, gamma: float) -> torch.Tensor:
    """Min-SNR-γ loss weights for epsilon prediction, `(T,)`: ``min(SNR_t, γ) / SNR_t``.

    ``SNR_t = ᾱ_t / (1 − ᾱ_t)``. Low-noise steps (SNR above γ), where the loss is mostly about
    pixel detail, count less, so training spends its steps on the scene's layout (Hang et al.,
    2023, "Efficient Diffusion Training via Min-SNR Weighting Strategy"). ``gamma <= 0``
    gives the plain MSE (all ones).
    """
    if gamma <= 0:
        return torch.ones_like(alphas_cumprod)
    snr = alphas_cumprod / (1 - alphas_cumprod)
    return snr.clamp(max=gamma) / snr


PIPELINE_CLASS = "EmbeddedWorldPixelPipeline"


def check_output_folder(out: str) -> None:
    """`out` is absent or a model folder this script wrote (it is replaced at each save).

    Raises:
        SystemExit: with one line, for anything else (a user's folder is never replaced).
    """
    if not os.path.lexists(out):
        return
    index = os.path.join(out, "model_index.json")
    try:
        with open(index, encoding="utf-8") as handle:
            ours = json.load(handle).get("_class_name") == PIPELINE_CLASS and not os.path.islink(out)
    except (OSError, ValueError, AttributeError):
        ours = False
    if not ours:
        raise SystemExit(
            f"error: --out {out!r} exists and is not a world model this script saved; choose a new folder "
            "(it would be replaced at every save)."
        )


def _save(out: str, unet, text_encoder, tokenizer_dir: str, info: dict) -> None:
    """Writes the model folder to a temporary sibling, then swaps it in (replacing only our own folder)."""
    check_output_folder(out)
    parent = os.path.dirname(os.path.abspath(out))
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.", suffix=".tmp", dir=parent)
    unet.save_pretrained(os.path.join(tmp, "unet"), safe_serialization=True)
    text_encoder.save_pretrained(os.path.join(tmp, "text_encoder"), safe_serialization=True)
    shutil.copytree(tokenizer_dir, os.path.join(tmp, "tokenizer"))
    DDIMScheduler(**SCHEDULER_CONFIG).save_pretrained(os.path.join(tmp, "scheduler"))
    index = {
        "_class_name": PIPELINE_CLASS,
        "unet": ["diffusers", "UNet2DConditionModel"],
        "text_encoder": ["transformers", "CLIPTextModel"],
        "tokenizer": ["transformers", "CLIPTokenizer"],
        "scheduler": ["diffusers", "DDIMScheduler"],
    }
    with open(os.path.join(tmp, "model_index.json"), "w") as f:
        json.dump(index, f, indent=2)
    with open(os.path.join(tmp, "training_info.json"), "w") as f:
        json.dump(info, f, indent=2)
    if os.path.exists(out):
        old = tempfile.mkdtemp(prefix=f".{os.path.basename(out)}.old.", suffix=".tmp", dir=parent)
        os.replace(out, os.path.join(old, "model"))
        os.replace(tmp, out)
        shutil.rmtree(old, ignore_errors=True)
    else:
        os.replace(tmp, out)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--out", required=True, help="output model folder")
    add_optimisation_arguments(p, steps=3000, batch_size=64, lr=1e-3, warmup=100, ema_decay=0.998)
    p.add_argument("--num-per-prompt", type=int, default=1000, help="training images rendered per prompt")
    p.add_argument(
        "--channels",
        default=",".join(map(str, DEFAULT_CHANNELS)),
        help="UNet block widths at 32x32, 16x16 and 8x8, comma-separated",
    )
    p.add_argument(
        "--snr-gamma",
        type=float,
        default=5.0,
        help="Min-SNR loss weighting min(SNR, gamma) / SNR (Hang et al., 2023); 0: plain epsilon MSE",
    )
    p.add_argument("--save-every", type=int, default=250)
    add_run_arguments(p)
    p.add_argument(
        "--max-minutes",
        type=float,
        default=0.0,
        help="also stop after this much training wall time; the cosine schedule then follows elapsed time (0: off)",
    )
    p.add_argument("--tiny", action="store_true", help="tiny model and data (for tests)")
    p.add_argument("--init", default=None, help="continue from this model folder's weights")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_torch(args)
    gen = torch.Generator().manual_seed(args.seed)
    start = time.time()

    check_output_folder(args.out)
    tok_dir = tempfile.mkdtemp(prefix="world-tokenizer-")
    save_tokenizer(tok_dir, {w for p in PROMPTS for w in p.split()})
    tokenizer = CLIPTokenizer.from_pretrained(tok_dir)
    max_len = tokenizer.model_max_length
    ids = tokenizer(
        list(PROMPTS) + [""], padding="max_length", max_length=max_len, truncation=True, return_tensors="pt"
    ).input_ids
    uncond_index = len(PROMPTS)

    if args.init:
        unet = UNet2DConditionModel.from_pretrained(os.path.join(args.init, "unet"))
        text_encoder = CLIPTextModel.from_pretrained(os.path.join(args.init, "text_encoder"))
    else:
        tcfg = text_config(len(tokenizer), tokenizer.bos_token_id, tokenizer.eos_token_id, max_len, args.tiny)
        text_encoder = CLIPTextModel(tcfg)
        unet = UNet2DConditionModel(
            **unet_config(args.tiny, tcfg.hidden_size, [int(c) for c in args.channels.split(",")])
        )
    ema_unet = UNet2DConditionModel.from_config(unet.config)
    ema_unet.load_state_dict(unet.state_dict())
    ema_text = CLIPTextModel(text_encoder.config)
    ema_text.load_state_dict(text_encoder.state_dict())
    for m in (ema_unet, ema_text):
        m.requires_grad_(False).eval()
    n_params = sum(p.numel() for p in unet.parameters()) + sum(p.numel() for p in text_encoder.parameters())

    images, labels = make_dataset(4 if args.tiny else args.num_per_prompt, seed=args.seed)
    labels = torch.tensor(labels)
    print(f"rendered {len(labels)} images in {time.time() - start:.1f}s; {n_params / 1e6:.2f}M parameters", flush=True)

    sched = DDIMScheduler(**SCHEDULER_CONFIG)
    abar = sched.alphas_cumprod.float()
    loss_weight = min_snr_weights(abar, args.snr_gamma)
    params = list(unet.parameters()) + list(text_encoder.parameters())
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=1e-4)

    train_start = time.time()

    def progress(step: int) -> float:
        frac = (step - args.warmup) / max(1, args.steps - args.warmup)
        if args.max_minutes > 0:
            frac = max(frac, (time.time() - train_start) / (60.0 * args.max_minutes))
        return frac

    def lr_at(step: int) -> float:
        if step < args.warmup:
            return args.lr * (step + 1) / args.warmup
        frac = progress(step)
        return args.lr * (0.05 + 0.95 * 0.5 * (1 + math.cos(math.pi * min(frac, 1.0))))

    ema_params = list(ema_unet.parameters()) + list(ema_text.parameters())
    running, info = None, {}
    unet.train()
    text_encoder.train()
    last = False
    for step in range(args.steps):
        last = step + 1 == args.steps or (args.max_minutes > 0 and step >= args.warmup and progress(step) >= 1.0)
        idx = torch.randint(len(labels), (args.batch_size,), generator=gen)
        x0 = images[idx].float() / 127.5 - 1.0
        flip = torch.rand(args.batch_size, generator=gen) < 0.5
        x0 = torch.where(flip[:, None, None, None], x0.flip(-1), x0)
        cls = labels[idx]
        cls = torch.where(
            torch.rand(args.batch_size, generator=gen) < args.p_uncond, torch.full_like(cls, uncond_index), cls
        )
        t = torch.randint(0, sched.config.num_train_timesteps, (args.batch_size,), generator=gen)
        noise = torch.randn(x0.shape, generator=gen)
        a = abar[t].view(-1, 1, 1, 1)
        xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
        hidden = text_encoder(ids[cls]).last_hidden_state
        pred = unet(xt, t, encoder_hidden_states=hidden).sample
        loss = (loss_weight[t] * (pred - noise).pow(2).mean(dim=(1, 2, 3))).mean()
        for g in opt.param_groups:
            g["lr"] = lr_at(step)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        decay = min(args.ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            for pe, p in zip(ema_params, params):
                pe.lerp_(p.detach(), 1 - decay)
        running = loss.item() if running is None else 0.98 * running + 0.02 * loss.item()
        done = step + 1
        if done % args.log_every == 0 or last:
            print(
                f"step {done}/{args.steps} loss {running:.4f} lr {lr_at(step):.2e} {time.time() - start:.0f}s",
                flush=True,
            )
        if done % args.save_every == 0 or last:
            info = {
                "steps": done,
                "batch_size": args.batch_size,
                "max_steps": args.steps,
                "max_minutes": args.max_minutes,
                "lr": args.lr,
                "p_uncond": args.p_uncond,
                "channels": list(unet.config.block_out_channels),
                "snr_gamma": args.snr_gamma,
                "ema_decay": args.ema_decay,
                "num_train_images": len(labels),
                "seed": args.seed,
                "loss_ema": running,
                "wall_seconds": time.time() - start,
                "torch_threads": torch.get_num_threads(),
                "parameters": n_params,
                "prompts": list(PROMPTS),
                "command": "python -m world.train " + " ".join(sys.argv[1:] if argv is None else argv),
            }
            _save(args.out, ema_unet, ema_text, tok_dir, info)
        if last:
            break
    shutil.rmtree(tok_dir, ignore_errors=True)
    print(f"saved {args.out} after {time.time() - start:.0f}s", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
