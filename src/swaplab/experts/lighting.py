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
    format="torch state_dict of swaplab LightingNet (features.*, fc.*; architecture read from the shapes) and "
           "`input_box` (left, top, right, bottom: where its training images lie in the canonical crop), or a "
           "swaplab training checkpoint of LightingNetModule (net.* keys, input_box); grayscale input in [-1, 1]",
))


def lighting_state_dict(path: str | Path) -> tuple[dict[str, torch.Tensor], tuple[float, ...] | None]:
    """The LightingNet weights of an exported file or of a LightingNetModule checkpoint (tensors only), and
    the box its training images occupy in the canonical crop (None when the file does not say)."""
    state = load_tensors(path)
    box = state.pop("input_box", None)
    if any(k.startswith("net.") for k in state):
        state = {k[4:]: v for k, v in state.items() if k.startswith("net.")}
    return state, None if box is None else tuple(float(v) for v in box.flatten().tolist())


class LightingFeatures(FrozenExpert):
    """Gamma(x) of the lighting network, and the light loss.

    Input: aligned face crops B x 3 x S x S RGB in [-1, 1] (or B x 1 x S x S grayscale in [-1, 1]), any S.
    They are turned into BT.601 luma, the `crop` box (fractions of the side: where the net's training images
    lie in the canonical crop, read from the weights file; default the whole crop) is cut and resized to the
    net's input size. Output: (B, D) features, D = fc_dims[-1].
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
              fc_dims: Sequence[int] | None = None, crop: Sequence[float] | None = None,
              **kwargs) -> LightingFeatures:
        """`weights="random"`: seeded init of the given (or default) architecture; `"pretrained"`: an exported
        state dict or a swaplab training checkpoint, architecture read from the file (given arguments must
        agree with it). `crop`: None takes the file's training box (the whole crop when it has none); a
        given box that differs from the file's is an error (the net would see faces framed unlike in training)."""
        arch = {k: v for k, v in {"in_channels": in_channels, "input_size": input_size, "widths": widths,
                                  "fc_dims": fc_dims}.items() if v is not None}
        if weights == "random":
            with seeded(seed):
                return cls(LightingNet(**arch), weights="random", crop=crop or (0.0, 1.0), **kwargs)
        if weights != "pretrained":
            raise ValueError(f"weights must be 'random' or 'pretrained', got {weights!r}")
        file = resolve_weights(registry_key, path=path, weights_dir=weights_dir)
        state, trained_box = lighting_state_dict(file)
        if crop is not None and trained_box is not None and not _same_box(crop, trained_box):
            raise ValueError(f"{file} was trained on faces in the box {trained_box} of the canonical crop, but the "
                             f"config gives crop={list(crop)}: leave crop unset to use the trained box")
        found = LightingNet.config_from_state_dict(state)
        clash = [f"{k}={v}" for k, v in arch.items() if _as_ints(v) != _as_ints(found[k])]
        if clash:
            raise ValueError(f"{file} holds a LightingNet with {found}, but the config asks for {', '.join(clash)}")
        with seeded(seed):
            net = LightingNet(**found)
        net.load_state_dict(state, strict=True)
        return cls(net, weights=str(file), crop=crop or trained_box or (0.0, 1.0), **kwargs)


def _same_box(a: Sequence[float], b: Sequence[float]) -> bool:
    def four(box: Sequence[float]) -> list[float]:
        box = check_box(box)
        return list(box) if len(box) == 4 else [box[0], box[0], box[1], box[1]]

    return all(abs(x - y) < 1e-4 for x, y in zip(four(a), four(b), strict=True))


def _as_ints(v: Any) -> Any:
    return [int(x) for x in v] if isinstance(v, Sequence) else int(v)
