"""hard_samples(cfg): score a dataset with a trained AEI-Net by heuristic error and write its hardest faces as the
target subset HEAR-Net trains on (data.train_subset; experiment=faceshifter_hear hard_samples=<file>)."""

from __future__ import annotations

from pathlib import Path

from omegaconf import DictConfig

from swaplab.data.subsets import write_subset
from swaplab.experts.registry import sha256_of
from swaplab.models.faceshifter.hard_samples import aei_of, hardest, heuristic_errors
from swaplab.models.loading import load_swap_model
from swaplab.runtime import get_logger, resolve_device
from swaplab.tasks.instantiate import instantiate_data

log = get_logger(__name__)


def hard_samples(cfg: DictConfig) -> Path:
    """Returns the subset file written."""
    device = resolve_device(cfg.get("device", "auto"))
    model, _ = load_swap_model(cfg.aei_ckpt)
    aei, identity = aei_of(model.to(device), str(cfg.aei_ckpt))
    dataset = instantiate_data(cfg.data).train_set
    scores = heuristic_errors(aei, identity, dataset, cfg.batch_size, device)
    chosen = hardest(scores, cfg.fraction)
    path = write_subset(cfg.output, chosen.tolist(), scores[chosen].tolist(), len(dataset), fraction=cfg.fraction,
                        scored_with={"aei_ckpt": str(cfg.aei_ckpt), "sha256": sha256_of(Path(cfg.aei_ckpt)),
                                     "dataset": type(dataset).__name__,
                                     "heuristic_error": "mean |X_t - AEI(X_t, z_id(X_t))|"})
    log.info("%d of %d faces (top %.0f%% heuristic error, %.4f..%.4f) written to %s; train HEAR-Net on them with "
             "experiment=faceshifter_hear hard_samples=%s", len(chosen), len(dataset), 100 * cfg.fraction,
             float(scores[chosen].min()), float(scores[chosen].max()), path, path)
    return path
