"""Shared by the benchmark scripts: the train config composed as `python train.py overrides...` would, and a
description of the machine."""

from __future__ import annotations

import contextlib
import os
import platform
import tempfile
from pathlib import Path

import torch
from omegaconf import DictConfig, open_dict

from swaplab.tasks.compose import compose_run_config

CONF = Path(__file__).resolve().parents[2] / "conf"
# 32x32 faces and networks of a few thousand weights: the --tiny mode of every benchmark (tests)
TINY = ["data.resolution=32", "model.generator.base_channels=8", "model.generator.max_channels=32",
        "model.discriminator.base_channels=8", "model.discriminator.max_channels=32",
        "model.discriminator.num_layers=2", "experts=random", "experts.identity.widths=[8,16,32,32]", "experts.identity.input_size=32"]
_FSGAN_NETS = [f"model.generator.{net}.{key}={value}" for net in ("reenactment", "inpainting", "blending")
               for key, value in (("base_channels", 4), ("max_channels", 16), ("flat_blocks", "[1,0,1,1]"))]
# the same for each method (train_step.py --tiny --model M)
TINY_MODELS = {
    "faceshifter": TINY,
    "faceshifter_hear": [*TINY[:1], *TINY[-2:], "model.generator.widths=[8,16,32]"],
    "hififace": [*(o for o in TINY if not o.startswith("model.discriminator.num_layers")),
                 "experts.face3d.input_size=32", "experts.parsing.input_size=32"],
    "fsgan": ["data.resolution=32", "experts.pose.input_size=32", "experts.parsing.input_size=32",
              "model.generator.segmentation.widths=[4,8,16]", "model.discriminator.base_channels=4",
              "model.discriminator.max_channels=8", "model.discriminator.num_layers=2", *_FSGAN_NETS],
    "fast_faceswap": ["data.resolution=32", "data.train.num_identities=4", "data.train.images_per_identity=2",
                      "model.style_set.num_images=4", "model.n_best=2", "model.generator.branch_channels=8",
                      "model.generator.join_channels=[16,16,16]"],
}


# experts whose files ship with pip packages: they keep them
SHIPPED_EXPERTS = ("MTCNNDetector", "DlibDetector", "DlibLandmarks", "DlibFaceDescriptor")


def random_expert_weights(cfg: DictConfig) -> None:
    """The run's expert architectures (R100 ArcFace, ResNet-50 3DMM, ...) with seeded random weights: a benchmark
    of a paper config pays for its real experts without their files (speed does not depend on the weights)."""
    with open_dict(cfg):
        for node in cfg.experts.values():
            if not isinstance(node, DictConfig) or any(n in str(node.get("_target_", "")) for n in SHIPPED_EXPERTS):
                continue
            if node.get("weights") == "pretrained":
                node.weights = "random"
            if node.get("bfm") == "pretrained":
                node.bfm = "synthetic"


def train_config(overrides: list[str]) -> DictConfig:
    return compose_run_config(CONF, "train", overrides, output_dir=tempfile.mkdtemp(prefix="swaplab_bench_"))


def machine(device: torch.device) -> dict:
    return {"device": torch.cuda.get_device_name(device) if device.type == "cuda" else cpu_name(),
            "torch": torch.__version__, "torch_threads": torch.get_num_threads()}


def cpu_name() -> str:
    """'<n>-core CPU (<model name>)' from /proc/cpuinfo (platform.processor() is empty on Linux)."""
    model = platform.processor()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    return f"{os.cpu_count()}-core CPU ({model or 'unknown model'})"


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)
