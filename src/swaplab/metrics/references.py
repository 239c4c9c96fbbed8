"""Reference rows of an evaluation table (`evaluation.references`): stand-in "models" whose swap is read from
the batch, scored by the same metrics and the same loop (`evaluate_swaps`) as the checkpoints, so every number
has its floor and ceiling beside it:

- `copy_target`: swap = the target (perfect attributes, no identity transfer);
- `copy_source`: swap = the source (perfect identity, none of the target's pose, expression, light, ...);
- `true_swap`: swap = the batch's true swap (`SyntheticSwapDataset(true_swap=True)`): what a perfect face swap
  gives, so its scores are the metrics' and experts' own ceiling.

A reference's self-swap of the target (reconstruction metrics) is the target.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import torch
from torch import nn

PREFIX = "reference/"


class ReferenceSwap(nn.Module):
    """Base of the references: `swap_batch(batch)` gives the B x 3 x H x W swaps of a batch; `requires` names the
    batch keys it reads."""

    name = ""
    key = ""
    requires: tuple[str, ...] = ()
    experts = None  # no model experts (the evaluation summary describes those of checkpoints)

    def swap_batch(self, batch: Mapping[str, Any]) -> torch.Tensor:
        return batch[self.key]

    def reconstruct_batch(self, batch: Mapping[str, Any]) -> torch.Tensor:
        return batch["target"]

    def forward(self, source: torch.Tensor, target: torch.Tensor) -> Any:
        raise TypeError(f"reference '{self.name}' swaps whole batches: call swap_batch(batch)")


class CopyTarget(ReferenceSwap):
    name, key, requires = "copy_target", "target", ("target",)


class CopySource(ReferenceSwap):
    name, key, requires = "copy_source", "source", ("source",)


class TrueSwap(ReferenceSwap):
    name, key, requires = "true_swap", "true_swap", ("true_swap",)


class SwapVideos(ReferenceSwap):
    """Existing swap videos scored as a method's swaps (eval.py videos=<dir>): the batch's `fake` frames, read
    by the protocol's data (FF++: `FaceForensicsPairs(fakes=<dir>)`, cropped as the target frames are)."""

    name, key, requires = "videos", "fake", ("fake",)


REFERENCES: dict[str, type[ReferenceSwap]] = {cls.name: cls for cls in (CopyTarget, CopySource, TrueSwap)}


def build_references(names: Sequence[str] | None) -> dict[str, ReferenceSwap]:
    """`{row name (reference/<name>): reference}` for the protocol's `references` list, in its order."""
    out = {}
    for name in names or []:
        if name not in REFERENCES:
            raise ValueError(f"unknown reference '{name}' (evaluation.references); known: {sorted(REFERENCES)}")
        out[PREFIX + name] = REFERENCES[name]()
    return out


def check_reference_data(references: Mapping[str, ReferenceSwap], example: Mapping[str, Any],
                         where: str = "evaluation.dataset") -> None:
    """A clear error when the protocol's data lacks what a reference reads (`example`: one item or batch)."""
    for reference in references.values():
        missing = [k for k in reference.requires if k not in example]
        if missing:
            hint = (" (SyntheticSwapDataset with true_swap: true, as in evaluation=synthetic_truth)"
                    if "true_swap" in missing else "")
            raise ValueError(f"evaluation.references: '{reference.name}' needs {missing}, which {where} does not "
                             f"provide{hint}; its items have {sorted(example)}")
