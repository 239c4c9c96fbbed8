"""Small building blocks shared by several networks."""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

NORMS: dict[str, Callable[[int], nn.Module]] = {
    "batch": nn.BatchNorm2d,
    "instance": lambda c: nn.InstanceNorm2d(c, affine=True),
    "none": lambda c: nn.Identity(),
}


def make_norm(name: str, channels: int) -> nn.Module:
    """A 2-D normalization layer by name: "batch", "instance" (affine) or "none"."""
    if name not in NORMS:
        raise ValueError(f"norm must be one of {sorted(NORMS)}, got {name!r}")
    return NORMS[name](channels)


def conv_norm_act(in_channels: int, out_channels: int, norm: str = "batch", kernel: int = 3, stride: int = 1,
                  act: str = "relu") -> nn.Sequential:
    """conv (same padding) -> norm -> ReLU / LeakyReLU(0.2); the conv has a bias only without a norm."""
    acts = {"relu": lambda: nn.ReLU(inplace=True), "lrelu": lambda: nn.LeakyReLU(0.2, inplace=True)}
    if act not in acts:
        raise ValueError(f"activation must be one of {sorted(acts)}, got {act!r}")
    return nn.Sequential(nn.Conv2d(in_channels, out_channels, kernel, stride, kernel // 2, bias=norm == "none"),
                         make_norm(norm, out_channels), acts[act]())
