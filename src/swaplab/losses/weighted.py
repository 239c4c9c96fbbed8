"""Weighted sum of loss terms; the weights come only from config (`model.loss_weights`)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

import torch


class WeightedSum:
    """Checks a flat {term: weight} map against a model's terms and sums terms with it.

    Terms with weight 0 are still reported (for monitoring) but cost nothing in the total.
    """

    def __init__(self, weights: Mapping[str, float], terms: Iterable[str], owner: str, shares: bool = False) -> None:
        terms = list(terms)
        unknown = sorted(set(weights) - set(terms))
        missing = sorted(set(terms) - set(weights))
        if unknown or missing:
            raise ValueError(
                f"{owner} loss_weights must name exactly its terms {terms}; "
                f"unknown: {unknown or 'none'}, missing: {missing or 'none'}"
            )
        bad = {k: v for k, v in weights.items() if not isinstance(v, (int, float)) or v < 0}
        if bad:
            raise ValueError(f"{owner} loss weights must be non-negative numbers, got {bad}")
        self.weights = {k: float(weights[k]) for k in terms}
        self.shares = shares  # also log `share_<term>`: each weighted term's fraction of the total


    def __call__(self, values: Mapping[str, torch.Tensor]) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
        """(weighted total, logs) with logs holding every unweighted term and the total (detached), and with
        `shares` each weighted term's share of the total (which terms actually drive the training)."""
        weighted = {k: self.weights[k] * v for k, v in values.items() if k in self.weights and self.weights[k] != 0}
        total = sum(weighted.values())
        if not torch.is_tensor(total):
            raise ValueError(f"no weighted term among {list(values)}; weights {self.weights}")
        logs = {k: v.detach() for k, v in values.items()}
        logs["total"] = total.detach()
        if self.shares:
            logs |= {f"share_{k}": (v / total).detach() for k, v in weighted.items()}
        return total, logs
