"""Pieces shared by the adapters over diffusers models.

:class:`DiffusersAdapter` holds the common "predict the noise, with classifier-free
guidance in one doubled batch, then let the scheduler compute the transition" logic. A
family only says how to encode prompts, how to call its UNet and how to decode.

Conditioning convention: for every conditional tensor ``key`` the conditioning dict also
holds ``negative_<key>`` (the unconditional / negative-prompt version) when guidance is on.
:func:`guidance_batch` puts them into one batch ``[negative; positive]`` — the order the
diffusers pipelines use — and :func:`apply_guidance` combines the two halves.
"""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import torch

from das.adapters.base import Conditioning, Transition
from das.adapters.scheduling import ddim_transition

NEGATIVE = "negative_"
#: The model dtypes a config may name, with the torch dtype each stands for (the one table; the
#: config checks read it too).
DTYPES = {"fp32": "float32", "fp16": "float16", "bf16": "bfloat16"}


def resolve_dtype(dtype: str | torch.dtype) -> torch.dtype:
    """``"fp32" | "fp16" | "bf16"`` (or the torch name, or a torch dtype) to a torch dtype."""
    if isinstance(dtype, torch.dtype):
        return dtype
    name = DTYPES.get(dtype, dtype if dtype in DTYPES.values() else None)
    if name is None:
        raise ValueError(f"Unknown dtype {dtype!r}; choose one of: {', '.join(DTYPES)}.")
    return getattr(torch, name)


def guidance_batch(cond: Conditioning, guided: bool) -> Conditioning:
    """Conditioning for one UNet call: ``[negative; positive]`` rows when `guided`.

    Args:
        cond: ``N`` rows per tensor, with ``negative_<key>`` twins when `guided`.
        guided: whether classifier-free guidance doubles the batch.

    Returns:
        The positive keys, with ``2N`` rows each when `guided`, ``N`` otherwise.
    """
    out = {}
    for key, value in cond.items():
        if key.startswith(NEGATIVE):
            continue
        out[key] = torch.cat([cond[NEGATIVE + key], value]) if guided else value
    return out


def apply_guidance(output: torch.Tensor, guidance_scale: float) -> torch.Tensor:
    """``ε_u + w (ε_c − ε_u)`` from a doubled batch `(2N, ...)` ordered ``[uncond; cond]``."""
    uncond, cond = output.chunk(2)
    return uncond + guidance_scale * (cond - uncond)


class DiffusersAdapter:
    """Base of the adapters over a diffusers UNet and scheduler (DDIM by default).

    Subclasses implement :meth:`encode_prompts`, :meth:`_model_output` and :meth:`decode`,
    and may override :meth:`_step` (LCM does). :meth:`set_speed_options` turns on the opt-in
    ``channels_last`` layout and ``torch.compile`` of the UNet.

    Args:
        unet: the denoiser; moved to `device`/`dtype`, frozen.
        scheduler: a scheduler owned by this adapter (``set_timesteps`` is called here).
        latent_shape: ``(C, h, w)`` of one particle.
        num_steps: denoising transitions.
        eta: DDIM stochasticity (1 is the DDPM-like default of DAS; 0 deterministic).
        guidance_scale: classifier-free guidance weight ``w``; no doubled batch when ``w <= 1``.
        device: where everything runs.
        dtype: model and particle dtype.
    """

    uses_doubled_guidance = True

    def __init__(
        self,
        unet,
        scheduler,
        latent_shape: Sequence[int],
        num_steps: int,
        eta: float,
        guidance_scale: float,
        device: torch.device | str,
        dtype: torch.dtype,
    ):
        if num_steps < 1:
            raise ValueError(f"num_steps must be at least 1, got {num_steps}.")
        if eta < 0:
            raise ValueError(f"eta must be non-negative, got {eta}.")
        self._device = torch.device(device)
        self.dtype = resolve_dtype(dtype)
        self.unet = unet.to(device=self._device, dtype=self.dtype).eval().requires_grad_(False)
        self.scheduler = scheduler
        self.scheduler.set_timesteps(num_steps, device=self._device)
        self._timesteps = [int(t) for t in self.scheduler.timesteps]
        self.latent_shape = tuple(int(s) for s in latent_shape)
        self.eta = float(eta)
        self.guidance_scale = float(guidance_scale)

    # ---------------------------------------------------------------- protocol
    @property
    def num_steps(self) -> int:
        return len(self._timesteps)

    @property
    def device(self) -> torch.device:
        return self._device

    @property
    def timesteps(self) -> list[int]:
        """The scheduler's timesteps, one per chain step."""
        return list(self._timesteps)

    @property
    def do_guidance(self) -> bool:
        """Whether the UNet runs on a doubled ``[uncond; cond]`` batch."""
        return self.uses_doubled_guidance and self.guidance_scale > 1.0

    def initial_noise(self, num_rows: int, generator: torch.Generator) -> torch.Tensor:
        """``x_T``: standard normal scaled by the scheduler's ``init_noise_sigma``, `(num_rows, C, h, w)`."""
        noise = torch.randn((num_rows, *self.latent_shape), generator=generator, device=self._device, dtype=self.dtype)
        return noise * self.scheduler.init_noise_sigma

    def model_output(self, x_t: torch.Tensor, step: int, cond: Conditioning) -> torch.Tensor:
        """The (guided) model prediction at `x_t`, `(N, C, h, w)`, as the pipeline computes it."""
        timestep = self.scheduler.timesteps[step]
        model_in = self.scheduler.scale_model_input(x_t, timestep)
        guided = self.do_guidance
        if guided:
            model_in = torch.cat([model_in, model_in])
        output = self._model_output(model_in, timestep, guidance_batch(cond, guided))
        return apply_guidance(output, self.guidance_scale) if guided else output

    @property
    def prediction_type(self) -> str:
        """What :meth:`model_output` predicts (the scheduler's ``prediction_type``, e.g. ``"epsilon"``)."""
        return str(self.scheduler.config.get("prediction_type", "epsilon"))

    def transition_from_output(self, model_output: torch.Tensor, step: int, x_t: torch.Tensor) -> Transition:
        """The transition this adapter's scheduler step computes from `model_output` at `x_t`."""
        return self._step(model_output, step, x_t)

    def transition(self, x_t: torch.Tensor, step: int, cond: Conditioning) -> Transition:
        """Pretrained transition at chain step `step`, computed by the scheduler's own step."""
        return self.transition_from_output(self.model_output(x_t, step, cond), step, x_t)

    def set_speed_options(self, channels_last: bool = False, compile_unet: bool = False) -> DiffusersAdapter:
        """Opt-in layout and compilation of the model passes; both off leaves the adapter as it is.

        Args:
            channels_last: store the UNet's (and the VAE's, where there is one) weights in the
                ``channels_last`` memory format.
            compile_unet: wrap the UNet in ``torch.compile``; compiling happens at the first
                call, and if it fails there the UNet runs eagerly, with one warning.

        Returns:
            The adapter.
        """
        if channels_last:
            for module in (self.unet, getattr(self, "vae", None)):
                if module is not None:
                    module.to(memory_format=torch.channels_last)
        if compile_unet and not isinstance(self.unet, CompiledOrEager):
            self.unet = CompiledOrEager(self.unet)
        return self

    # ---------------------------------------------------------------- hooks
    def _step(self, model_output: torch.Tensor, step: int, x_t: torch.Tensor) -> Transition:
        return ddim_transition(self.scheduler, model_output, self._timesteps[step], x_t, self.eta)

    def _model_output(self, model_in: torch.Tensor, timestep: torch.Tensor, cond: Conditioning) -> torch.Tensor:
        raise NotImplementedError

    def encode_prompts(self, prompts: Sequence[str]) -> Conditioning:
        raise NotImplementedError

    def decode(self, x0: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError


class CompiledOrEager:
    """A module called through ``torch.compile``, falling back to the eager module if compiling fails.

    Attribute access (``config``, ``dtype`` ...) reads the eager module.
    """

    def __init__(self, module: torch.nn.Module):
        self.eager = module
        self.compiled = torch.compile(module)
        self.failed = False

    def __call__(self, *args, **kwargs):
        if not self.failed:
            try:
                return self.compiled(*args, **kwargs)
            except Exception as error:  # compiling happens, and fails, at a call
                self.failed = True
                first_line = (str(error).strip().splitlines() or [""])[0][:200]
                warnings.warn(
                    f"torch.compile of {type(self.eager).__name__} failed ({type(error).__name__}: {first_line}); "
                    f"running it eagerly.",
                    RuntimeWarning,
                    stacklevel=2,
                )
        return self.eager(*args, **kwargs)

    def __getattr__(self, name: str):
        if name == "eager":  # not set yet (a copy being built): no recursion
            raise AttributeError(name)
        return getattr(self.eager, name)


def to_ddim(scheduler_or_config):
    """A fresh ``DDIMScheduler`` with the coefficients of `scheduler_or_config` (a scheduler or its config)."""
    from diffusers import DDIMScheduler

    config = getattr(scheduler_or_config, "config", scheduler_or_config)
    return DDIMScheduler.from_config(config)
