"""The style set of a Fast Face-swap network: the target identity's aligned images, kept in the checkpoint,
and their VGG neural patches, computed once per device and never saved."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from swaplab.losses.style import channel_scales, neural_patches


class StyleBank(nn.Module):
    """Aligned style images (`images`, N x 3 x S x S in [-1, 1], a checkpointed buffer of any N) and, after
    `prepare`, their unit k x k patches per style layer (N x C k k x M), selection features (N x D) and the
    per-channel scales of Gatys et al.'s VGG normalisation (C) measured on them."""

    def __init__(self, chunk: int = 16) -> None:
        super().__init__()
        self.chunk = chunk  # style images per VGG forward while preparing
        self.register_buffer("images", torch.zeros(0, 3, 1, 1))
        self.patches: dict[str, torch.Tensor] = {}
        self.scales: dict[str, torch.Tensor] = {}
        self.selection: torch.Tensor | None = None
        self._prepared_for: tuple[Any, ...] | None = None

    def __len__(self) -> int:
        return self.images.shape[0]

    def fill(self, images: torch.Tensor) -> None:
        if images.dim() != 4 or images.shape[1] != 3 or len(images) == 0:
            raise ValueError(f"style images must be N x 3 x S x S with N >= 1, got {tuple(images.shape)}")
        self.images = images.detach().to(self.images.device, torch.float32).contiguous()
        self.patches, self.scales, self.selection, self._prepared_for = {}, {}, None, None

    @torch.no_grad()
    def prepare(self, perceptual: nn.Module, style_layers: Sequence[str], selection_layer: str,
                patch_size: int, normalise_layers: Sequence[str] = ()) -> None:
        """VGG features of every style image (in chunks, on the bank's device); a no-op when up to date.
        `normalise_layers`: layers given Gatys et al.'s normalisation, `scales[layer]` = each channel's mean
        activation over the style images (`channel_scales`); their maps, the style patches included, are
        divided by it."""
        key = (id(perceptual), tuple(style_layers), selection_layer, patch_size, tuple(normalise_layers),
               self.images.device, self.images.data_ptr())
        if self._prepared_for == key:
            return
        layers = list(dict.fromkeys([*style_layers, *normalise_layers, selection_layer]))
        per_layer: dict[str, list[torch.Tensor]] = {layer: [] for layer in layers}
        for images in self.images.split(self.chunk):
            for layer, features in zip(layers, perceptual(images, layers), strict=True):
                per_layer[layer].append(features)
        maps = {layer: torch.cat(chunks) for layer, chunks in per_layer.items()}
        self.scales = {layer: channel_scales(maps[layer]) for layer in normalise_layers}
        self.patches = {layer: neural_patches(self.normalise(layer, maps[layer]), patch_size)
                        for layer in style_layers}
        self.selection = maps[selection_layer].flatten(1)
        self._prepared_for = key

    def normalise(self, layer: str, maps: torch.Tensor) -> torch.Tensor:
        """B x C x H x W maps of `layer` divided by its channel scales (unchanged for a layer without any)."""
        scale = self.scales.get(layer)
        return maps if scale is None else maps / scale.to(maps.dtype)[:, None, None]

    def nearest(self, features: torch.Tensor, n_best: int) -> torch.Tensor:
        """B x min(n_best, N) indices of the style images closest (L2) to the given selection-layer maps."""
        if self.selection is None:
            raise RuntimeError("StyleBank.prepare must run before nearest")
        distances = torch.cdist(features.flatten(1).float(), self.selection.float())
        return distances.topk(min(n_best, len(self)), dim=1, largest=False).indices

    def _load_from_state_dict(self, state_dict: dict[str, torch.Tensor], prefix: str, *args: Any) -> None:
        stored = state_dict.get(prefix + "images")
        if stored is not None:  # the buffer takes the stored set's size before the strict copy
            self.images = torch.empty_like(stored, device=self.images.device)
            self.patches, self.scales, self.selection, self._prepared_for = {}, {}, None, None
        super()._load_from_state_dict(state_dict, prefix, *args)
