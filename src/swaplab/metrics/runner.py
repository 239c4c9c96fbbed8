"""The batched evaluation loop shared by eval.py, the SwapEvaluation callback and the benchmark."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

import torch
from torch import nn

from swaplab.data.prepare import plan_batch, prepare_batch
from swaplab.metrics.registry import SwapMetrics, SwapRecord

# batch keys kept per example (those the data has) to identify rows of the per-example results
EXAMPLE_KEYS = ("index", "target_video", "frame", "source_video", "source_frame", "target_identity",
                "source_identity")


def to_device(batch: Mapping[str, Any], device: torch.device | str) -> dict[str, Any]:
    return {k: v.to(device, non_blocking=True) if torch.is_tensor(v) else v for k, v in batch.items()}


@torch.inference_mode()
def evaluate_swaps(model: nn.Module, batches: Iterable[Mapping[str, Any]], metrics: SwapMetrics,
                   device: torch.device | str) -> dict[str, torch.Tensor]:
    """Swap every batch on `device` (`model(source, target).swap`, plus `model(target, target)` when a
    reconstruction metric is present; a model with `swap_batch(batch)` / `reconstruct_batch(batch)`, such as
    the reference rows of `swaplab.metrics.references`, reads them from the batch instead), update `metrics`,
    and return the EXAMPLE_KEYS of every example in order (on the CPU). The model is put in eval mode for the
    loop and restored afterwards."""
    was_training = model.training
    model.eval()
    seen: dict[str, list[torch.Tensor]] = {k: [] for k in EXAMPLE_KEYS}
    try:
        for batch in batches:
            batch = prepare_batch(to_device(plan_batch(batch), device))
            source, target = batch["source"], batch["target"]
            swap = model.swap_batch(batch) if hasattr(model, "swap_batch") else model(source, target).swap
            reconstruction = None
            if metrics.needs_reconstruction:
                reconstruction = (model.reconstruct_batch(batch) if hasattr(model, "reconstruct_batch")
                                  else model(target, target).swap)
            metrics.update(SwapRecord(swap, source, target, batch, reconstruction))
            for key, values in seen.items():
                if key in batch:
                    values.append(batch[key].detach().cpu())
    finally:
        model.train(was_training)
    return {k: torch.cat(v) for k, v in seen.items() if v}
