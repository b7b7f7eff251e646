"""Aligns the embedded world's model to one oracle: fine-tuning on DAS samples of the tilted target.

The target of alignment at KL strength α is ``p_pre(x) · exp(r(x)/α)``. DAS (SMC over the
denoising chain) draws approximate samples of exactly that distribution from the pretrained
model, so the model that minimises the ordinary denoising loss on those samples is (up to
the fit) the aligned model: this is "distillation of the tilted distribution", a
reward-weighted regression whose weights SMC has already applied by resampling. Unlike
reward fine-tuning by backpropagation through the chain, the strength α is explicit in the
data, which is what DeRaDiff's realignment (``das.adapters.realigned``) needs: a model
aligned *at a known α*, from which λ emulates α/λ.

Two phases, both deterministic given ``--seed`` (one thread):

1. data: for every world prompt, ``--num-per-prompt`` DAS calls of K particles each
   (``--selection sample`` keeps one particle drawn by final weight, an unbiased draw
   from the particle approximation of the target);
2. fine-tune: the UNet (text encoder frozen) with the ε-prediction loss (Min-SNR weighted,
   as the world's training script), a fraction of captions dropped so that classifier-free
   guidance keeps working, horizontal flips, an EMA of the weights.

The result is a full model folder in the layout of ``checkpoints/pretrained/shapes32``
(``unet/``, ``text_encoder/``, ``tokenizer/``, ``scheduler/``, ``model_index.json``,
``training_info.json``), written atomically. Usage::

    python -m world.align --out checkpoints/aligned/shapes32-colorfulness --threads 1

"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import time
from collections.abc import Sequence

import torch

from world import (
    DEFAULT_ETA,
    DEFAULT_GUIDANCE_SCALE,
    DEFAULT_MODEL_PATH,
    DEFAULT_NUM_STEPS,
    PROMPTS,
)
from world.script_args import add_optimisation_arguments, add_run_arguments, setup_torch

ORACLES = ("colorfulness", "jpeg", "rare")


def make_oracle_reward(name: str):
    """The world oracle `name` as a reward (colourfulness and rare colour are differentiable; JPEG is not)."""
    if name not in ORACLES:
        raise ValueError(f"Unknown oracle {name!r}; choose one of: {', '.join(ORACLES)}.")
    if name == "rare":
        from world.oracles import RareColourReward

        return RareColourReward()
    from das.rewards import make_reward

    return make_reward(name)  # colorfulness, or jpeg (quality 95, as world.oracles.jpeg_reward)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m world.align",
        description=__doc__.splitlines()[0],
        formatter_class=argparse.ArgumentDefaultsHelpFormatter,
    )
    p.add_argument("--out", required=True, help="output model folder (absent, or a world model folder to replace)")
    p.add_argument("--init", default=DEFAULT_MODEL_PATH, help="the pretrained world model folder")
    p.add_argument("--oracle", default="colorfulness", choices=ORACLES, help="the reward aligned to")
    p.add_argument("--alpha", type=float, default=5.0, help="KL strength α of the target p_pre·exp(r/α)")
    p.add_argument("--num-per-prompt", type=int, default=32, help="DAS samples per world prompt (the data set)")
    p.add_argument("--particles", type=int, default=4, help="SMC particles K per DAS call")
    p.add_argument("--das-steps", type=int, default=DEFAULT_NUM_STEPS, help="denoising steps of the DAS chain")
    p.add_argument("--guidance", type=float, default=DEFAULT_GUIDANCE_SCALE, help="CFG scale of the DAS chain")
    p.add_argument("--tempering-gamma", type=float, default=0.1, help="exponential tempering γ of DAS")
    p.add_argument(
        "--selection",
        default="sample",
        choices=("sample", "max_weight"),
        help="particle kept per DAS call: one drawn by weight (the target) or the heaviest",
    )
    p.add_argument("--das-batch", type=int, default=36, help="DAS calls (prompts) per sampler batch")
    add_optimisation_arguments(
        p, steps=400, batch_size=32, lr=2e-4, warmup=20, ema_decay=0.99, steps_help="fine-tuning steps"
    )
    p.add_argument("--snr-gamma", type=float, default=5.0, help="Min-SNR weighting (0: plain ε MSE)")
    add_run_arguments(p)
    p.add_argument(
        "--eval-per-prompt",
        type=int,
        default=16,
        help="after training, samples per prompt of --init and --out (same seeds) to compare the oracle (0: skip)",
    )
    p.add_argument(
        "--eval-only",
        action="store_true",
        help="only the comparison, on an existing --out; recorded in its training_info.json",
    )
    return p


def _check(args) -> None:
    from world.train import check_output_folder

    if not (math.isfinite(args.alpha) and args.alpha > 0):
        raise SystemExit(f"error: --alpha must be a finite number > 0, got {args.alpha}.")
    for name in ("num_per_prompt", "particles", "das_steps", "das_batch", "batch_size"):
        if getattr(args, name) < 1:
            raise SystemExit(f"error: --{name.replace('_', '-')} must be at least 1, got {getattr(args, name)}.")
    if args.steps < 0:
        raise SystemExit(f"error: --steps must be ≥ 0, got {args.steps}.")
    for part in ("unet", "text_encoder", "tokenizer", "scheduler"):
        if not os.path.isdir(os.path.join(args.init, part)):
            raise SystemExit(
                f"error: --init {args.init!r} has no {part}/; point it at a world model folder such as "
                f"{DEFAULT_MODEL_PATH}."
            )
    check_output_folder(args.out)


def generate_data(args, reward, gen_seed: int) -> tuple[torch.Tensor, torch.Tensor, dict]:
    """DAS samples of ``p_pre·exp(r/α)``: images `(N, 3, H, W)` in [0, 1], prompt labels `(N,)`, stats."""
    from das.smc import DASSampler, DASSettings
    from das.tempering import ExponentialTempering
    from world.model import load_adapter

    adapter = load_adapter(args.init, num_steps=args.das_steps, guidance_scale=args.guidance, eta=DEFAULT_ETA)
    settings = DASSettings(
        kl_coeff=args.alpha,
        num_particles=args.particles,
        resampling="ssp",
        ess_threshold=0.5,
        tempering=ExponentialTempering(gamma=args.tempering_gamma),
        selection=args.selection,
    )
    sampler = DASSampler(adapter, settings)
    labels = [i for _ in range(args.num_per_prompt) for i in range(len(PROMPTS))]
    images, rewards, particle_rewards = [], [], []
    for start in range(0, len(labels), args.das_batch):
        chunk = labels[start : start + args.das_batch]
        generator = torch.Generator().manual_seed(gen_seed + start)
        result = sampler.sample([PROMPTS[i] for i in chunk], reward, generator)
        rows = torch.arange(len(chunk))
        images.append(result.selected.detach().float().clamp(0, 1))
        rewards.append(result.rewards[rows, result.selected_index].detach().float())
        particle_rewards.append(result.rewards.detach().float().flatten())
        done = start + len(chunk)
        print(f"data {done}/{len(labels)} mean reward of kept samples {torch.cat(rewards).mean():.2f}", flush=True)
    kept = torch.cat(rewards)
    stats = {
        "num_images": len(labels),
        "mean_reward_kept": float(kept.mean()),
        "mean_reward_all_particles": float(torch.cat(particle_rewards).mean()),
    }
    return torch.cat(images), torch.tensor(labels), stats


def finetune(args, images: torch.Tensor, labels: torch.Tensor, generator: torch.Generator):
    """Fine-tunes the UNet on `images` (ε-loss); returns the EMA UNet, the text encoder and the final loss EMA."""
    from diffusers import DDIMScheduler, UNet2DConditionModel
    from transformers import CLIPTextModel, CLIPTokenizer

    from world.train import min_snr_weights

    unet = UNet2DConditionModel.from_pretrained(os.path.join(args.init, "unet"))
    text_encoder = CLIPTextModel.from_pretrained(os.path.join(args.init, "text_encoder")).eval().requires_grad_(False)
    tokenizer = CLIPTokenizer.from_pretrained(os.path.join(args.init, "tokenizer"))
    ids = tokenizer(
        list(PROMPTS) + [""],
        padding="max_length",
        max_length=tokenizer.model_max_length,
        truncation=True,
        return_tensors="pt",
    ).input_ids
    with torch.no_grad():
        hidden_all = text_encoder(ids).last_hidden_state  # (len(PROMPTS) + 1, L, D): frozen, computed once
    uncond_index = len(PROMPTS)
    ema = UNet2DConditionModel.from_config(unet.config)
    ema.load_state_dict(unet.state_dict())
    ema.requires_grad_(False).eval()
    sched = DDIMScheduler.from_pretrained(os.path.join(args.init, "scheduler"))
    abar = sched.alphas_cumprod.float()
    loss_weight = min_snr_weights(abar, args.snr_gamma)
    params = list(unet.parameters())
    opt = torch.optim.AdamW(params, lr=args.lr, weight_decay=1e-4)
    x_all = images * 2.0 - 1.0
    unet.train()
    running = None
    start = time.time()
    for step in range(args.steps):
        lr = args.lr * min(1.0, (step + 1) / max(1, args.warmup))
        lr *= 0.1 + 0.9 * 0.5 * (1 + math.cos(math.pi * step / max(1, args.steps)))
        idx = torch.randint(len(labels), (args.batch_size,), generator=generator)
        x0 = x_all[idx]
        flip = torch.rand(args.batch_size, generator=generator) < 0.5
        x0 = torch.where(flip[:, None, None, None], x0.flip(-1), x0)
        cls = labels[idx]
        drop = torch.rand(args.batch_size, generator=generator) < args.p_uncond
        cls = torch.where(drop, torch.full_like(cls, uncond_index), cls)
        t = torch.randint(0, sched.config.num_train_timesteps, (args.batch_size,), generator=generator)
        noise = torch.randn(x0.shape, generator=generator)
        a = abar[t].view(-1, 1, 1, 1)
        xt = a.sqrt() * x0 + (1 - a).sqrt() * noise
        pred = unet(xt, t, encoder_hidden_states=hidden_all[cls]).sample
        loss = (loss_weight[t] * (pred - noise).pow(2).mean(dim=(1, 2, 3))).mean()
        for group in opt.param_groups:
            group["lr"] = lr
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(params, 1.0)
        opt.step()
        decay = min(args.ema_decay, (1 + step) / (10 + step))
        with torch.no_grad():
            for pe, p in zip(ema.parameters(), params):
                pe.lerp_(p.detach(), 1 - decay)
        running = loss.item() if running is None else 0.95 * running + 0.05 * loss.item()
        if (step + 1) % args.log_every == 0 or step + 1 == args.steps:
            print(
                f"step {step + 1}/{args.steps} loss {running:.4f} lr {lr:.2e} {time.time() - start:.0f}s", flush=True
            )
    return ema, text_encoder, running


@torch.no_grad()
def evaluate(args, reward) -> dict:
    """Mean oracle, JPEG kB and diversity of plain samples of --init and --out, same seeds (25 steps, CFG 3 by
    default)."""
    from das.ancestral import sample_images
    from das.rewards.jpeg import JPEGCompressibility
    from world.featurizer import WorldFeaturizer
    from world.model import load_adapter

    prompts = [p for p in PROMPTS for _ in range(args.eval_per_prompt)]
    featurizer = WorldFeaturizer()
    out = {"samples": len(prompts), "num_steps": args.das_steps, "guidance_scale": args.guidance, "seed": args.seed}
    for name, path in (("pretrained", args.init), ("aligned", args.out)):
        start = time.time()
        adapter = load_adapter(path, num_steps=args.das_steps, guidance_scale=args.guidance, eta=DEFAULT_ETA)
        images = sample_images(adapter, prompts, torch.Generator().manual_seed(10_000 + args.seed))
        values = reward(images, prompts).float()
        feats = featurizer(images).double()
        div = []
        for i in range(len(PROMPTS)):
            unit = torch.nn.functional.normalize(
                feats[i * args.eval_per_prompt : (i + 1) * args.eval_per_prompt], dim=-1
            )
            n = unit.shape[0]
            div.append(float(1 - ((unit @ unit.T).sum() - n) / max(1, n * (n - 1))))
        out[name] = {
            f"{args.oracle}_mean": float(values.mean()),
            f"{args.oracle}_std": float(values.std()),
            f"{args.oracle}_sem": float(values.std() / len(values) ** 0.5),
            "jpeg_kb_mean": float((-JPEGCompressibility(95)(images)).mean()),
            "diversity": sum(div) / len(div),
            "seconds": time.time() - start,
        }
        print(
            f"eval {name}: {args.oracle} {values.mean():.2f} ± {values.std() / len(values) ** 0.5:.2f} (sem), "
            f"JPEG {out[name]['jpeg_kb_mean']:.3f} kB, diversity {out[name]['diversity']:.4f}",
            flush=True,
        )
    return out


def _record_evaluation(out: str, evaluation: dict, command: str) -> None:
    path = os.path.join(out, "training_info.json")
    with open(path, encoding="utf-8") as handle:
        info = json.load(handle)
    info["evaluation"] = {**evaluation, "command": command}
    tmp = path + ".tmp"
    with open(tmp, "w", encoding="utf-8") as handle:
        json.dump(info, handle, indent=2)
    os.replace(tmp, path)


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    setup_torch(args)
    command = "python -m world.align " + " ".join(sys.argv[1:] if argv is None else argv)
    if args.eval_only:
        if not os.path.isfile(os.path.join(args.out, "training_info.json")):
            raise SystemExit(f"error: --eval-only needs an aligned model folder at --out {args.out!r}.")
        _record_evaluation(args.out, evaluate(args, make_oracle_reward(args.oracle)), command)
        return 0
    _check(args)
    from world.train import _save

    started = time.time()
    reward = make_oracle_reward(args.oracle)
    images, labels, stats = generate_data(args, reward, gen_seed=args.seed * 1_000_003)
    data_seconds = time.time() - started
    print(
        f"data: {stats['num_images']} DAS samples in {data_seconds:.0f}s; mean {args.oracle} of kept samples "
        f"{stats['mean_reward_kept']:.2f} (all particles {stats['mean_reward_all_particles']:.2f})",
        flush=True,
    )
    train_started = time.time()
    unet, text_encoder, loss = finetune(args, images, labels, torch.Generator().manual_seed(args.seed + 1))
    train_seconds = time.time() - train_started
    info = {
        "kind": "aligned world model (fine-tuned on DAS samples of p_pre·exp(r/α))",
        "init": os.path.relpath(os.path.abspath(args.init), os.getcwd()) if os.path.isabs(args.init) else args.init,
        "oracle": args.oracle,
        "alpha": args.alpha,
        "data": {
            **stats,
            "num_per_prompt": args.num_per_prompt,
            "particles": args.particles,
            "das_steps": args.das_steps,
            "guidance_scale": args.guidance,
            "eta": DEFAULT_ETA,
            "tempering_gamma": args.tempering_gamma,
            "selection": args.selection,
            "seconds": data_seconds,
        },
        "steps": args.steps,
        "batch_size": args.batch_size,
        "lr": args.lr,
        "p_uncond": args.p_uncond,
        "snr_gamma": args.snr_gamma,
        "ema_decay": args.ema_decay,
        "trained": "unet (text encoder frozen, copied from init)",
        "loss_ema": loss,
        "train_seconds": train_seconds,
        "wall_seconds": time.time() - started,
        "torch_threads": torch.get_num_threads(),
        "seed": args.seed,
        "prompts": list(PROMPTS),
        "command": command,
    }
    _save(args.out, unet, text_encoder, os.path.join(args.init, "tokenizer"), info)
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(args.out, 0o777 & ~umask)  # the folder came from mkdtemp (0700); give it the usual permissions
    print(f"saved {args.out} after {time.time() - started:.0f}s", flush=True)
    if args.eval_per_prompt > 0:
        _record_evaluation(args.out, evaluate(args, reward), command)
    return 0


if __name__ == "__main__":
    sys.exit(main())
