"""Package metadata for the DAS toolkit: test-time alignment and online black-box
optimization of diffusion models."""

from setuptools import find_packages, setup

setup(
    name="das-toolkit",
    version="0.1.0",
    license="Apache-2.0",
    description=(
        "Diffusion Alignment as Sampling (SMC over the denoising chain) and an online "
        "black-box optimization loop with uncertainty-aware surrogates."
    ),
    long_description=open("README.md", encoding="utf-8").read(),
    long_description_content_type="text/markdown",
    python_requires=">=3.10",
    packages=find_packages(
        include=[
            "atomicfile",
            "das",
            "das.*",
            "dasapp",
            "dasapp.*",
            "world",
            "world.*",
            "surrogate",
            "surrogate.*",
            "online",
            "online.*",
            "config",
            "config.*",
        ]
    ),
    include_package_data=True,
    # The two tools as commands of the environment: `.venv/bin/das-online --config config/GP_smc.py:tiny_jpeg`
    # (the online loop, also `python -m online`) and `.venv/bin/das-sample --config config/sd.py:world`
    # (offline DAS sampling, also `python -m das`).
    entry_points={
        "console_scripts": [
            "das-online = online.online_main_smc:main",
            "das-sample = dasapp.cli:main",
        ]
    },
    package_data={"online.human": ["page.html"]},
    install_requires=[
        # Ranges that the CPU wheel torch==2.13.0 satisfies; install it first.
        "torch>=2.1,<3",
        "numpy>=1.24",
        "scipy>=1.11",
        "safetensors>=0.4",
        "ml_collections>=0.1.1",
        "absl-py>=1.0",
        "tqdm>=4.60",
        "matplotlib>=3.7",
        "pillow>=9.0",
        "diffusers>=0.30",
        "transformers>=4.40",
        "accelerate>=0.30",
        "scikit-learn>=1.3",
        "gpytorch>=1.11",
        "botorch>=0.11",
    ],
    extras_require={
        # The human oracle's rating page: a local web app (online/human/).
        "human": ["starlette>=0.27", "uvicorn>=0.23"],
        # The suite also tests the rating page in headless Chromium (Debian's chromium and
        # chromium-driver, driven by selenium) and the tensorboard tracker.
        # `make lint` runs ruff, pinned so that formatting does not drift between versions.
        "test": [
            "pytest>=7",
            "starlette>=0.27",
            "uvicorn>=0.23",
            "selenium>=4.11",
            "tensorboard>=2.12",
            "ruff==0.17.6",
        ],
        # Heavy optional scorers, imported only when the reward is chosen.
        "imagereward": ["image-reward>=1.5"],
        "hpsv2": ["hpsv2>=1.2", "open_clip_torch>=2.20"],
        "tracking": ["tensorboard>=2.12"],
        "wandb": ["wandb>=0.15"],
    },
)
