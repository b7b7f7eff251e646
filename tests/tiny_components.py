"""Tiny randomly initialized components of the real diffusers/transformers classes.

Shared by tests (and benchmarks) that must never download: a byte-level CLIP tokenizer
written to a temporary folder, tiny CLIP text/vision models, UNets, a VAE, and ready
pipelines (Stable Diffusion, SDXL, LCM) and a pixel-space model folder in the layout
``unet/``, ``scheduler/``, ``text_encoder/``, ``tokenizer/``.
"""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path

import torch

MAX_TOKENS = 16
TEXT_HIDDEN = 32


def _byte_chars() -> list[str]:
    """The 256 printable stand-ins of byte-level BPE, in CLIP's order."""
    from world.tokenizer import bytes_to_unicode

    return list(bytes_to_unicode().values())


def write_tokenizer_files(folder: str | os.PathLike) -> tuple[str, str]:
    """Writes a byte-level CLIP ``vocab.json`` + empty ``merges.txt``; returns their paths."""
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    chars = _byte_chars()
    vocab: dict[str, int] = {}
    for c in chars:
        vocab[c] = len(vocab)
    for c in chars:
        vocab[c + "</w>"] = len(vocab)
    vocab["<|startoftext|>"] = len(vocab)
    vocab["<|endoftext|>"] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return str(folder / "vocab.json"), str(folder / "merges.txt")


VOCAB_SIZE = 514
BOS_ID, EOS_ID = 512, 513


def tiny_tokenizer(max_length: int = MAX_TOKENS):
    from transformers import CLIPTokenizer

    folder = tempfile.mkdtemp(prefix="tiny_clip_tok_")
    vocab, merges = write_tokenizer_files(folder)
    return CLIPTokenizer(vocab, merges, model_max_length=max_length)


def tiny_text_config(hidden: int = TEXT_HIDDEN, projection_dim: int = 32):
    from transformers import CLIPTextConfig

    return CLIPTextConfig(
        bos_token_id=BOS_ID,
        eos_token_id=EOS_ID,
        pad_token_id=EOS_ID,
        hidden_size=hidden,
        intermediate_size=37,
        layer_norm_eps=1e-05,
        num_attention_heads=4,
        num_hidden_layers=2,
        vocab_size=VOCAB_SIZE,
        max_position_embeddings=MAX_TOKENS,
        projection_dim=projection_dim,
        hidden_act="gelu",
    )


def tiny_text_encoder(seed: int = 0, with_projection: bool = False):
    from transformers import CLIPTextModel, CLIPTextModelWithProjection

    torch.manual_seed(seed)
    cls = CLIPTextModelWithProjection if with_projection else CLIPTextModel
    return cls(tiny_text_config()).eval()


def tiny_clip_model(seed: int = 0, image_size: int = 32, projection_dim: int = 16):
    """A tiny ``CLIPModel`` (text + vision towers) for rewards and the featurizer."""
    from transformers import CLIPConfig, CLIPModel, CLIPVisionConfig

    torch.manual_seed(seed)
    text = tiny_text_config(projection_dim=projection_dim).to_dict()
    vision = CLIPVisionConfig(
        hidden_size=32,
        intermediate_size=37,
        num_attention_heads=4,
        num_hidden_layers=2,
        image_size=image_size,
        patch_size=8,
        projection_dim=projection_dim,
    ).to_dict()
    config = CLIPConfig(text_config=text, vision_config=vision, projection_dim=projection_dim)
    return CLIPModel(config).eval()


def tiny_cond_unet(
    seed: int = 0,
    in_channels: int = 4,
    sample_size: int = 8,
    cross_attention_dim: int = TEXT_HIDDEN,
    time_cond_proj_dim: int | None = None,
    block_out_channels: tuple[int, int] = (8, 16),
    layers_per_block: int = 1,
    attention_head_dim: int = 2,
):
    from diffusers import UNet2DConditionModel

    torch.manual_seed(seed)
    return UNet2DConditionModel(
        block_out_channels=block_out_channels,
        layers_per_block=layers_per_block,
        sample_size=sample_size,
        in_channels=in_channels,
        out_channels=in_channels,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        cross_attention_dim=cross_attention_dim,
        attention_head_dim=attention_head_dim,
        norm_num_groups=4,
        time_cond_proj_dim=time_cond_proj_dim,
    ).eval()


def tiny_uncond_unet(seed: int = 0, sample_size: int = 8):
    from diffusers import UNet2DModel

    torch.manual_seed(seed)
    return UNet2DModel(
        sample_size=sample_size,
        in_channels=3,
        out_channels=3,
        block_out_channels=(8, 16),
        layers_per_block=1,
        down_block_types=("DownBlock2D", "DownBlock2D"),
        up_block_types=("UpBlock2D", "UpBlock2D"),
        norm_num_groups=4,
    ).eval()


def tiny_vae(seed: int = 0, block_out_channels: tuple[int, int] = (8, 16), sample_size: int = 16):
    from diffusers import AutoencoderKL

    torch.manual_seed(seed)
    return AutoencoderKL(
        block_out_channels=block_out_channels,
        in_channels=3,
        out_channels=3,
        down_block_types=("DownEncoderBlock2D", "DownEncoderBlock2D"),
        up_block_types=("UpDecoderBlock2D", "UpDecoderBlock2D"),
        latent_channels=4,
        norm_num_groups=4,
        sample_size=sample_size,
    ).eval()


def ddim_scheduler():
    from diffusers import DDIMScheduler

    return DDIMScheduler(
        beta_start=0.00085,
        beta_end=0.012,
        beta_schedule="scaled_linear",
        clip_sample=False,
        set_alpha_to_one=False,
        steps_offset=1,
    )


def tiny_sd_pipeline(seed: int = 0, proportioned: bool = False):
    """A tiny ``StableDiffusionPipeline`` with a DDIM scheduler.

    By default latents 4×8×8 and images 16×16 (UNet and VAE channels (8, 16), one layer per
    block). ``proportioned=True`` gives components closer to Stable Diffusion's proportions,
    for speed measurements: UNet channels (32, 64) with 2 layers per block and attention heads
    of 8, cross-attention 32, latents 4×32×32, VAE channels (32, 64), images 64×64.
    """
    from diffusers import StableDiffusionPipeline

    if proportioned:
        unet = tiny_cond_unet(
            seed, sample_size=32, block_out_channels=(32, 64), layers_per_block=2, attention_head_dim=8
        )
        vae = tiny_vae(seed, block_out_channels=(32, 64), sample_size=64)
    else:
        unet, vae = tiny_cond_unet(seed), tiny_vae(seed)
    return StableDiffusionPipeline(
        vae=vae,
        text_encoder=tiny_text_encoder(seed),
        tokenizer=tiny_tokenizer(),
        unet=unet,
        scheduler=ddim_scheduler(),
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def tiny_sdxl_pipeline(seed: int = 0):
    """A tiny ``StableDiffusionXLPipeline`` with two text encoders and text-time embeddings."""
    from diffusers import StableDiffusionXLPipeline, UNet2DConditionModel

    torch.manual_seed(seed)
    unet = UNet2DConditionModel(
        block_out_channels=(8, 16),
        layers_per_block=1,
        sample_size=8,
        in_channels=4,
        out_channels=4,
        down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
        up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"),
        attention_head_dim=2,
        use_linear_projection=True,
        addition_embed_type="text_time",
        addition_time_embed_dim=8,
        projection_class_embeddings_input_dim=6 * 8 + 32,
        cross_attention_dim=2 * TEXT_HIDDEN,
        norm_num_groups=4,
    ).eval()
    return StableDiffusionXLPipeline(
        vae=tiny_vae(seed),
        text_encoder=tiny_text_encoder(seed),
        text_encoder_2=tiny_text_encoder(seed + 1, with_projection=True),
        tokenizer=tiny_tokenizer(),
        tokenizer_2=tiny_tokenizer(),
        unet=unet,
        scheduler=ddim_scheduler(),
        add_watermarker=False,
    )


def tiny_lcm_pipeline(seed: int = 0):
    """A tiny ``LatentConsistencyModelPipeline`` (guidance embedding in the UNet)."""
    from diffusers import LatentConsistencyModelPipeline, LCMScheduler

    scheduler = LCMScheduler(
        beta_start=0.00085, beta_end=0.012, beta_schedule="scaled_linear", clip_sample=False, set_alpha_to_one=True
    )
    return LatentConsistencyModelPipeline(
        vae=tiny_vae(seed),
        text_encoder=tiny_text_encoder(seed),
        tokenizer=tiny_tokenizer(),
        unet=tiny_cond_unet(seed, time_cond_proj_dim=8),
        scheduler=scheduler,
        safety_checker=None,
        feature_extractor=None,
        requires_safety_checker=False,
    )


def save_pixel_model(folder: str | os.PathLike, conditional: bool = True, seed: int = 0) -> str:
    """Saves a tiny pixel-space model in the ``unet/ scheduler/ [text_encoder/ tokenizer/]`` layout."""
    folder = Path(folder)
    if conditional:
        tiny_cond_unet(seed, in_channels=3).save_pretrained(folder / "unet")
        tiny_text_encoder(seed).save_pretrained(folder / "text_encoder")
        tiny_tokenizer().save_pretrained(folder / "tokenizer")
    else:
        tiny_uncond_unet(seed).save_pretrained(folder / "unet")
    ddim_scheduler().save_pretrained(folder / "scheduler")
    return str(folder)
