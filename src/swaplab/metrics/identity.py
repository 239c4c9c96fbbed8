"""Identity metrics: ID retrieval (FF++ protocol) and the cosine similarity of swap and source embeddings."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from swaplab.metrics.registry import SwapMetric, SwapRecord, cat_state, register_metric


@register_metric("id_retrieval")
class IDRetrieval(SwapMetric):
    """Top-k identity retrieval: each swap's embedding is matched by cosine against a gallery of one mean
    embedding per source label (per source video on FF++, per identity on synthetic data), averaged over
    every source frame seen; a swap is correct when its source's label is among the k nearest. Swaps whose
    label has no gallery entry count as wrong. Values are fractions in [0, 1]."""

    role_args = ("identity_role",)
    higher_is_better = True

    def __init__(self, identity_role: str = "identity_eval", label_key: str = "source_identity",
                 top_k: Sequence[int] = (1, 5), **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.identity_role, self.label_key = identity_role, label_key
        self.top_k = sorted({int(k) for k in top_k})
        if not self.top_k or self.top_k[0] < 1:
            raise ValueError(f"id_retrieval top_k must be positive integers, got {list(top_k)}")
        for name in ("query", "query_label", "gallery", "gallery_label"):
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def update(self, record: SwapRecord) -> None:
        labels = record.ground_truth(self.label_key).to(record.swap.device).long().reshape(-1)
        self.query.append(F.normalize(self.run(record, "identity_role", "swap").float(), dim=-1))
        self.gallery.append(F.normalize(self.run(record, "identity_role", "source").float(), dim=-1))
        self.query_label.append(labels)
        self.gallery_label.append(labels)

    def _retrieved(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Labels of the max(top_k) nearest gallery entries per query (N x k) and the query labels (N)."""
        gallery, gallery_label = cat_state(self.gallery), cat_state(self.gallery_label)
        query, query_label = cat_state(self.query), cat_state(self.query_label)
        labels, inverse = torch.unique(gallery_label, return_inverse=True)
        means = torch.zeros(len(labels), gallery.shape[-1], device=gallery.device, dtype=gallery.dtype)
        means = F.normalize(means.index_add_(0, inverse, gallery), dim=-1)
        nearest = (query @ means.T).topk(min(self.top_k[-1], len(labels)), dim=-1).indices
        return labels[nearest], query_label

    def _hits(self) -> dict[int, torch.Tensor]:
        retrieved, truth = self._retrieved()
        return {k: (retrieved[:, :k] == truth[:, None]).any(-1) for k in self.top_k}

    def compute(self) -> dict[str, torch.Tensor]:
        hits = self._hits()
        return {("" if k == self.top_k[0] else f"top{k}"): hit.float().mean() for k, hit in hits.items()}

    def per_example(self) -> dict[str, torch.Tensor]:
        retrieved, _ = self._retrieved()
        hits = self._hits()
        return {"retrieved": retrieved[:, 0],
                **{("" if k == self.top_k[0] else f"top{k}"): hit.float() for k, hit in hits.items()}}

    def details(self) -> dict[str, Any]:
        """Top-1 (first k) retrieval per source label."""
        hit, labels = self._hits()[self.top_k[0]].float(), cat_state(self.query_label)
        keys, inverse = torch.unique(labels, return_inverse=True)
        per = torch.zeros(len(keys), device=hit.device).index_add_(0, inverse, hit)
        per = per / torch.bincount(inverse, minlength=len(keys))
        return {"per_source": {int(k): round(float(v), 6) for k, v in zip(keys, per, strict=True)}}


@register_metric("id_similarity")
class IDSimilarity(SwapMetric):
    """Cosine similarity between the embeddings of each swap and its source image (mean over swaps)."""

    role_args = ("identity_role",)
    higher_is_better = True

    def __init__(self, identity_role: str = "identity_eval", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.identity_role = identity_role
        self.add_state("values", default=[], dist_reduce_fx="cat")

    def update(self, record: SwapRecord) -> None:
        swap = self.run(record, "identity_role", "swap").float()
        source = self.run(record, "identity_role", "source").float()
        self.values.append(F.cosine_similarity(swap, source, dim=-1))

    def compute(self) -> dict[str, torch.Tensor]:
        return {"": cat_state(self.values).mean()}

    def per_example(self) -> dict[str, torch.Tensor]:
        return {"": cat_state(self.values)}
