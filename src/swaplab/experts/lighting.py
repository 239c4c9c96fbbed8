"""The light-loss expert of Fast Face-swap: Gamma(x) of a frozen lighting network (`swaplab.nets.lighting`),
trained and exported with swaplab (no official weights were published)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import torch

from swaplab.experts.base import FrozenExpert
from swaplab.experts.registry import WeightEntry, load_tensors, register_weights, resolve_weights, seeded
from swaplab.faces.crop import check_box, crop_box
from swaplab.nets.lighting import LightingNet, to_grayscale

register_weights(WeightEntry(
    key="lighting_net",
    filename="lighting_net.pth",
    source="train it with `python train.py experiment=lighting_net` (see README) and export with "
           "`python -m swaplab.models.lighting.export <run dir>/checkpoints/last.ckpt weights/lighting_net.pth` "
           "(no official weights were published)",
    format="torch state_dict of swaplab LightingNet (features.*, fc.*; architecture read from the shapes), "
           "or a swaplab training checkpoint of LightingNetModule (net.* keys); grayscale input in [-1, 1]",
))


def lighting_state_dict(path: str | Path) -> dict[str, torch.Tensor]:
    """The LightingNet weights of an exported file or of a LightingNetModule checkpoint (tensors only)."""
    state = load_tensors(path)
    if any(k.startswith("net.") for k in state):
        state = {k[4:]: v for k, v in state.items() if k.startswith("net.")}
    return state


class LightingFeatures(FrozenExpert):
    """Gamma(x) of the lighting network, and the light loss.

    Input: aligned face crops B x 3 x S x S RGB in [-1, 1] (or B x 1 x S x S grayscale in [-1, 1]), any S.
    They are turned into BT.601 luma, the `crop` box (fractions of the side; default the whole crop, as the
    net was trained on) is cut and resized to the net's input size. Output: (B, D) features, D = fc_dims[-1].
    """

    def __init__(self, net: LightingNet, name: str = "lighting_net", weights: str = "random",
                 crop: Sequence[float] = (0.0, 1.0)) -> None:
        super().__init__(net, name=name, weights=weights)
        self.crop = check_box(crop)

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.net(crop_box(to_grayscale(images), self.crop, self.net.input_size))

    def loss(self, generated: torch.Tensor, content: torch.Tensor) -> torch.Tensor:
        """L_light = 1/|Gamma| ||Gamma(generated) - Gamma(content)||^2, averaged over the batch."""
        return (self(generated) - self(content)).square().mean()

    @classmethod
    def build(cls, weights: str = "random", path: str | None = None, weights_dir: str | None = None,
              registry_key: str = "lighting_net", seed: int = 0, in_channels: int | None = None,
              input_size: int | None = None, widths: Sequence[int] | None = None,
              fc_dims: Sequence[int] | None = None, **kwargs) -> LightingFeatures:
        """`weights="random"`: seeded init of the given (or default) architecture; `"pretrained"`: an exported
        state dict or a swaplab training checkpoint, architecture read from the file (given arguments must
        agree with it)."""
        arch = {k: v for k, v in {"in_channels": in_channels, "input_size": input_size, "widths": widths,
                                  "fc_dims": fc_dims}.items() if v is not None}
        if weights == "random":
            with seeded(seed):
                return cls(LightingNet(**arch), weights="random", **kwargs)
        if weights != "pretrained":
            raise ValueError(f"weights must be 'random' or 'pretrained', got {weights!r}")
        file = resolve_weights(registry_key, path=path, weights_dir=weights_dir)
        state = lighting_state_dict(file)
        found = LightingNet.config_from_state_dict(state)
        clash = [f"{k}={v}" for k, v in arch.items() if _as_ints(v) != _as_ints(found[k])]
        if clash:
            raise ValueError(f"{file} holds a LightingNet with {found}, but the config asks for {', '.join(clash)}")
        with seeded(seed):
            net = LightingNet(**found)
        net.load_state_dict(state, strict=True)
        return cls(net, weights=str(file), **kwargs)


def _as_ints(v: Any) -> Any:
    return [int(x) for x in v] if isinstance(v, Sequence) else int(v)
