"""Identity metrics: ID retrieval (FF++ protocol) and the cosine similarity of swap and source embeddings."""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any

import hydra
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset, default_collate

from swaplab.errors import plain_user_errors
from swaplab.metrics.registry import SwapMetric, SwapRecord, cat_state, register_metric


def label_means(embeddings: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The sorted distinct labels (L) and the normalised mean of the (normalised) embeddings of each (L x D)."""
    keys, inverse = torch.unique(labels, return_inverse=True)
    means = torch.zeros(len(keys), embeddings.shape[-1], device=embeddings.device, dtype=embeddings.dtype)
    return keys, F.normalize(means.index_add_(0, inverse, embeddings), dim=-1)


def dataset_batches(dataset: Dataset, batch_size: int) -> Iterator[Mapping[str, Any]]:
    """The items of a map-style dataset in order, `batch_size` at a time (one `__getitems__` call where it has one)."""
    for start in range(0, len(dataset), batch_size):
        indices = list(range(start, min(start + batch_size, len(dataset))))
        if hasattr(dataset, "__getitems__"):
            yield dataset.__getitems__(indices)
        else:
            yield default_collate([dataset[i] for i in indices])


@register_metric("id_retrieval")
class IDRetrieval(SwapMetric):
    """Top-k identity retrieval: each swap's embedding is matched by cosine against a gallery of one mean
    embedding per source label (per source video on FF++, per identity on synthetic data), averaged over
    every source frame seen; a swap is correct when its source's label is among the k nearest. Swaps whose
    label has no gallery entry count as wrong. Values are fractions in [0, 1].

    With `gallery` (a dataset config, e.g. `swaplab.data.identities.SyntheticIdentities` of every held-out
    person, instantiated at the swaps' resolution unless it sets one; or a Dataset) the gallery is fixed instead:
    one mean embedding per `gallery_label_key` over the dataset's `image`s, computed once per resolution
    (batched, without autograd, on the swaps' device) and cached, so its size and every per-swap result are
    independent of how many pairs are scored. Its size is in `details()["gallery_size"]`."""

    role_args = ("identity_role",)
    higher_is_better = True

    def __init__(self, identity_role: str = "identity_eval", label_key: str = "source_identity",
                 top_k: Sequence[int] = (1, 5), gallery: Mapping[str, Any] | Dataset | None = None,
                 gallery_label_key: str = "identity", gallery_batch_size: int = 64, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.identity_role, self.label_key = identity_role, label_key
        self.top_k = sorted({int(k) for k in top_k})
        if not self.top_k or self.top_k[0] < 1:
            raise ValueError(f"id_retrieval top_k must be positive integers, got {list(top_k)}")
        if gallery is not None and not isinstance(gallery, (Mapping, Dataset)):
            raise ValueError(f"id_retrieval gallery must be a dataset config or a Dataset, got {type(gallery)}")
        if int(gallery_batch_size) < 1:
            raise ValueError(f"id_retrieval gallery_batch_size must be >= 1, got {gallery_batch_size}")
        self.gallery_config, self.gallery_label_key = gallery, gallery_label_key
        self.gallery_batch_size = int(gallery_batch_size)
        self._fixed: dict[int, tuple[torch.Tensor, torch.Tensor]] = {}  # resolution -> (labels, mean embeddings)
        self._active: int | None = None  # the resolution of the swaps scored last
        for name in ("query", "query_label", "gallery", "gallery_label"):
            self.add_state(name, default=[], dist_reduce_fx="cat")

    def fixed_gallery(self, resolution: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        """The fixed gallery's labels (L) and normalised mean embeddings (L x D) for swaps of `resolution`."""
        if resolution not in self._fixed:
            self._fixed[resolution] = self._embed_gallery(resolution, device)
        labels, means = self._fixed[resolution]
        return labels.to(device), means.to(device)

    @torch.no_grad()
    def _embed_gallery(self, resolution: int, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        dataset = self.gallery_config
        if not isinstance(dataset, Dataset):
            extra = {} if dataset.get("resolution") is not None else {"resolution": resolution}
            with plain_user_errors():
                dataset = hydra.utils.instantiate(dataset, **extra, _convert_="all")
        expert = self.expert("identity_role")
        embeddings, labels = [], []
        for batch in dataset_batches(dataset, self.gallery_batch_size):
            if self.gallery_label_key not in batch:
                raise KeyError(f"id_retrieval gallery items have no '{self.gallery_label_key}' "
                               f"(gallery_label_key); keys: {sorted(batch)}")
            embeddings.append(F.normalize(expert(batch["image"].to(device)).float(), dim=-1))
            labels.append(torch.as_tensor(batch[self.gallery_label_key]).to(device).long().reshape(-1))
        if not embeddings:
            raise ValueError("id_retrieval gallery is empty")
        return label_means(torch.cat(embeddings), torch.cat(labels))

    def update(self, record: SwapRecord) -> None:
        labels = record.ground_truth(self.label_key).to(record.swap.device).long().reshape(-1)
        self.query.append(F.normalize(self.run(record, "identity_role", "swap").float(), dim=-1))
        self.query_label.append(labels)
        if self.gallery_config is not None:
            self._active = int(record.swap.shape[-1])
            self.fixed_gallery(self._active, record.swap.device)
            return
        self.gallery.append(F.normalize(self.run(record, "identity_role", "source").float(), dim=-1))
        self.gallery_label.append(labels)

    def _gallery_means(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The gallery's labels (L) and normalised mean embeddings (L x D): the fixed gallery, else the sources."""
        query = cat_state(self.query)
        if self.gallery_config is not None:
            if self._active is None:
                raise RuntimeError("id_retrieval: no swaps scored yet")
            return self.fixed_gallery(self._active, query.device)
        return label_means(cat_state(self.gallery), cat_state(self.gallery_label))

    def _retrieved(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Labels of the max(top_k) nearest gallery entries per query (N x k) and the query labels (N)."""
        query, query_label = cat_state(self.query), cat_state(self.query_label)
        labels, means = self._gallery_means()
        nearest = (query @ means.T.to(query.dtype)).topk(min(self.top_k[-1], len(labels)), dim=-1).indices
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
        out: dict[str, Any] = {"per_source": {int(k): round(float(v), 6) for k, v in zip(keys, per, strict=True)}}
        if self.gallery_config is not None:
            out["gallery_size"] = len(self._gallery_means()[0])
        return out


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
