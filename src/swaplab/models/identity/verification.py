"""Face verification accuracy as LFW reports it: the cosine threshold is chosen on 9 folds of the pairs and the
accuracy measured on the tenth, averaged over the ten folds (no threshold ever sees the pairs it is scored on)."""

from __future__ import annotations

import torch

YAW_BINS = (0.0, 10.0, 20.0, 30.0, 90.0)  # pairs binned by the larger |yaw| of their two faces (degrees)


def best_threshold(scores: torch.Tensor, same: torch.Tensor) -> float:
    """The cosine threshold with the most correct same / different calls on these pairs."""
    candidates = torch.cat([scores.sort().values, scores.new_tensor([1.0 + 1e-6])])
    correct = ((scores[None] >= candidates[:, None]) == same[None]).float().sum(1)
    return float(candidates[correct.argmax()])


def verification_report(scores: torch.Tensor, same: torch.Tensor, yaw: torch.Tensor | None = None,
                        folds: int = 10) -> dict[str, float]:
    """`accuracy` (10-fold), `threshold` (on all pairs) and, given each pair's larger |yaw|, the accuracy per
    YAW_BINS bin at each pair's own fold threshold (`accuracy_yaw_<lo>_<hi>`, with `pairs_yaw_<lo>_<hi>`)."""
    scores, same = scores.float().cpu(), same.bool().cpu()
    fold = torch.arange(len(scores)) % folds
    correct = torch.zeros(len(scores), dtype=torch.bool)
    for k in range(folds):
        held = fold == k
        threshold = best_threshold(scores[~held], same[~held])
        correct[held] = (scores[held] >= threshold) == same[held]
    report = {"accuracy": correct.float().mean().item(), "threshold": best_threshold(scores, same),
              "pairs": float(len(scores))}
    if yaw is not None:
        yaw = yaw.float().cpu()
        for lo, hi in zip(YAW_BINS[:-1], YAW_BINS[1:], strict=True):
            inside = (yaw >= lo) & (yaw < hi)
            name = f"yaw_{lo:g}_{hi:g}"
            report[f"pairs_{name}"] = float(inside.sum())
            report[f"accuracy_{name}"] = correct[inside].float().mean().item() if inside.any() else float("nan")
    return report
