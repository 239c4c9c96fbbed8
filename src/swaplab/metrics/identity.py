"""Identity metrics: ID retrieval (FF++ protocol) and the cosine similarity of swap and source embeddings."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

import hydra
import torch
import torch.nn.functional as F
from omegaconf import DictConfig, OmegaConf
from torch.utils.data import Dataset, default_collate

from swaplab.data.prepare import prepare_batch
from swaplab.errors import plain_user_errors
from swaplab.experts.base import weights_sha256
from swaplab.faces.templates import CANONICAL
from swaplab.metrics.registry import SwapMetric, SwapRecord, cat_state, register_metric
from swaplab.runtime import get_logger

log = get_logger(__name__)


def label_means(embeddings: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """The sorted distinct labels (L) and the normalised mean of the (normalised) embeddings of each (L x D)."""
    keys, inverse = torch.unique(labels, return_inverse=True)
    means = torch.zeros(len(keys), embeddings.shape[-1], device=embeddings.device, dtype=embeddings.dtype)
    return keys, F.normalize(means.index_add_(0, inverse, embeddings), dim=-1)


def read_items(dataset: Dataset, indices: list[int]) -> Mapping[str, Any]:
    """Items `indices` of a map-style dataset as one float batch (one `__getitems__` call where it has one;
    compact crops finished by `prepare_batch`)."""
    if hasattr(dataset, "__getitems__"):
        return prepare_batch(dataset.__getitems__(indices))
    return prepare_batch(default_collate([dataset[i] for i in indices]))


def dataset_batches(dataset: Dataset, batch_size: int) -> Iterator[Mapping[str, Any]]:
    """The items of a map-style dataset in order, `batch_size` at a time."""
    for start in range(0, len(dataset), batch_size):
        yield read_items(dataset, list(range(start, min(start + batch_size, len(dataset)))))


MATCHES = ("mean", "nearest")
SIMILARITY_CHUNK = 1 << 24  # query x gallery similarities computed at a time (64 MB of float32)


def label_scores(query: torch.Tensor, labels: torch.Tensor, embeddings: torch.Tensor,
                 match: str) -> tuple[torch.Tensor, torch.Tensor]:
    """The sorted distinct gallery labels (L) and each query's score for each (N x L), by cosine: `mean`, with
    the normalised mean of the label's embeddings; `nearest`, with the nearest of them (so the best-scoring
    label is the label of the nearest gallery image)."""
    if match == "mean":
        keys, means = label_means(embeddings, labels)
        return keys, query @ means.T.to(query.dtype)
    keys, inverse = torch.unique(labels, return_inverse=True)
    scores = []
    for chunk in query.split(max(1, SIMILARITY_CHUNK // max(len(labels), 1))):
        best = torch.full((len(chunk), len(keys)), -2.0, device=query.device, dtype=query.dtype)
        similarity = chunk @ embeddings.T.to(query.dtype)
        scores.append(best.scatter_reduce_(1, inverse.expand_as(similarity), similarity, "amax"))
    return keys, torch.cat(scores) if scores else query.new_zeros(0, len(keys))


@register_metric("id_retrieval")
class IDRetrieval(SwapMetric):
    """Top-k identity retrieval: each swap's embedding is matched by cosine against a gallery of labelled
    embeddings (source videos on FF++, identities on synthetic data); a swap is correct when its source's label
    is among the k best-scoring labels. `match` names the protocol: `mean` scores a label by the normalised mean
    of its embeddings (one entry per video); `nearest` by its nearest embedding, so top-1 is correct when the
    nearest gallery image comes from the source (FaceShifter, Li et al. 2020: the nearest frame among all
    frames of all original FF++ videos). Swaps whose label has no gallery entry count as wrong. Values are
    fractions in [0, 1].

    Without `gallery`, the gallery is the sources of the swaps scored (it changes with the subset scored). With
    `gallery` (a dataset config, e.g. `swaplab.data.ffpp.FaceForensicsFrames` of every original video, given the
    swaps' resolution unless it sets one and the input template where its `template` is null; or a Dataset) the
    gallery is fixed: the dataset's `image`s labelled by `gallery_label_key`, embedded once per (resolution,
    template) (batched, without autograd, on the swaps' device), so its size and every per-swap result are
    independent of the pairs scored. With `cache_dir` the embeddings are also kept on disk, in a file keyed by
    the embedder's weights hash, the gallery config, the data's fingerprint (`dataset.fingerprint()`, where the
    dataset has one), resolution and template. Its size is in `details()["gallery_size"]`."""

    role_args = ("identity_role",)
    higher_is_better = True
    failure_score = 0.0  # a swap that could not be made retrieves nothing

    def __init__(self, identity_role: str = "identity_eval", label_key: str = "source_identity",
                 top_k: Sequence[int] = (1, 5), gallery: Mapping[str, Any] | Dataset | None = None,
                 gallery_label_key: str = "identity", gallery_batch_size: int = 64, match: str = "mean",
                 cache_dir: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.identity_role, self.label_key = identity_role, label_key
        self.top_k = sorted({int(k) for k in top_k})
        if not self.top_k or self.top_k[0] < 1:
            raise ValueError(f"id_retrieval top_k must be positive integers, got {list(top_k)}")
        if gallery is not None and not isinstance(gallery, (Mapping, Dataset)):
            raise ValueError(f"id_retrieval gallery must be a dataset config or a Dataset, got {type(gallery)}")
        if int(gallery_batch_size) < 1:
            raise ValueError(f"id_retrieval gallery_batch_size must be >= 1, got {gallery_batch_size}")
        if match not in MATCHES:
            raise ValueError(f"id_retrieval match must be one of {list(MATCHES)}, got {match!r}")
        if cache_dir is not None and gallery is None:
            raise ValueError("id_retrieval cache_dir needs a fixed gallery (the gallery option)")
        self.gallery_config, self.gallery_label_key = gallery, gallery_label_key
        self.gallery_batch_size, self.match = int(gallery_batch_size), match
        self.cache_dir = Path(cache_dir) if cache_dir else None
        self.input_template: str | None = None  # the template of the swaps (and so of the gallery images)
        self._fixed: dict[tuple[int, str | None], tuple[torch.Tensor, torch.Tensor]] = {}  # (labels, embeddings)
        self._active: tuple[int, str | None] | None = None  # the data setup of the swaps scored last
        for name in ("query", "query_label", "gallery", "gallery_label"):
            self.add_state(name, default=[], dist_reduce_fx="cat")
        self._retrieval: tuple[Any, tuple[torch.Tensor, torch.Tensor]] | None = None  # (state key, _retrieved())

    def set_input_template(self, template: str | None) -> None:
        self.input_template = template  # the gallery is embedded in the swaps' template

    def prepare(self, resolution: int, device: torch.device | str) -> None:
        if self.gallery_config is not None:
            self.fixed_gallery(resolution, device, self.input_template)

    def fixed_gallery(self, resolution: int, device: torch.device | str,
                      template: str | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The fixed gallery's labels (G) and normalised embeddings (G x D), one per image, for swaps of
        `resolution` in crop `template`."""
        setup = (int(resolution), template)
        if setup not in self._fixed:
            self._fixed[setup] = self._cached_gallery(*setup, torch.device(device))
        labels, embeddings = self._fixed[setup]
        return labels.to(device), embeddings.to(device)

    def _gallery_dataset(self, resolution: int, template: str | None) -> Dataset:
        dataset = self.gallery_config
        if isinstance(dataset, Dataset):
            return dataset
        extra: dict[str, Any] = {} if dataset.get("resolution") is not None else {"resolution": resolution}
        if "template" in dataset and dataset["template"] is None:
            extra["template"] = template or CANONICAL
        with plain_user_errors():
            return hydra.utils.instantiate(dataset, **extra, _convert_="all")

    def _cached_gallery(self, resolution: int, template: str | None,
                        device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
        dataset = self._gallery_dataset(resolution, template)
        config = self.gallery_config
        if self.cache_dir is None or not (isinstance(config, Mapping) or hasattr(dataset, "fingerprint")):
            return self._embed_gallery(dataset, device)  # a Dataset object without a fingerprint has no key
        expert = self.expert("identity_role")
        key = {"embedder": getattr(expert, "name", type(expert).__name__), "weights_sha256": weights_sha256(expert),
               "gallery": OmegaConf.to_container(config, resolve=True) if isinstance(config, DictConfig)
               else dict(config) if isinstance(config, Mapping) else type(dataset).__name__,
               "data": dataset.fingerprint() if hasattr(dataset, "fingerprint") else None,
               "label_key": self.gallery_label_key, "resolution": resolution, "template": template}
        digest = hashlib.sha256(json.dumps(key, sort_keys=True, default=str).encode()).hexdigest()[:32]
        path = self.cache_dir / f"id_gallery_{digest}.pt"
        if path.is_file():
            cached = torch.load(path, map_location="cpu", weights_only=True)
            log.info("id_retrieval gallery from %s (%d images)", path, len(cached["labels"]))
            return cached["labels"].to(device), cached["embeddings"].to(device)
        labels, embeddings = self._embed_gallery(dataset, device)
        path.parent.mkdir(parents=True, exist_ok=True)
        partial = path.with_suffix(".partial")
        torch.save({"labels": labels.cpu(), "embeddings": embeddings.cpu(), "key": json.dumps(key, default=str)},
                   partial)
        partial.replace(path)  # never a half-written cache file
        return labels, embeddings

    @torch.no_grad()
    def _embed_gallery(self, dataset: Dataset, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
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
        return torch.cat(labels), torch.cat(embeddings)

    def reset(self) -> None:
        super().reset()
        self._retrieval = None

    def update(self, record: SwapRecord) -> None:
        self._retrieval = None
        labels = record.ground_truth(self.label_key).to(record.swap.device).long().reshape(-1)
        self.query.append(F.normalize(self.run(record, "identity_role", "swap").float(), dim=-1))
        self.query_label.append(labels)
        if self.gallery_config is not None:
            resolution = int(record.swap.shape[-1])
            self._active = (resolution, self.input_template)
            self.fixed_gallery(resolution, record.swap.device, self.input_template)
            return
        self.gallery.append(F.normalize(self.run(record, "identity_role", "source").float(), dim=-1))
        self.gallery_label.append(labels)

    def _gallery(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The gallery's labels (G) and normalised embeddings (G x D): the fixed gallery, else the sources."""
        query = cat_state(self.query)
        if self.gallery_config is not None:
            if self._active is None:
                raise RuntimeError("id_retrieval: no swaps scored yet")
            return self.fixed_gallery(self._active[0], query.device, self._active[1])
        return cat_state(self.gallery_label), cat_state(self.gallery)

    def _retrieved(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Labels of the max(top_k) best-scoring gallery labels per query (N x k) and the query labels (N); the
        query x gallery scores are computed once per state (compute, per_example and details all read them)."""
        state = self.query if isinstance(self.query, list) else [self.query]
        key = (tuple(id(t) for t in state), self._active)  # new after update / reset / a DDP sync of the states
        if self._retrieval is None or self._retrieval[0] != key:
            query, query_label = cat_state(self.query), cat_state(self.query_label)
            keys, scores = label_scores(query, *self._gallery(), self.match)
            best = scores.topk(min(self.top_k[-1], len(keys)), dim=-1).indices
            self._retrieval = (key, (keys[best], query_label))
        return self._retrieval[1]

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
        """Top-1 (first k) retrieval per source label; for a fixed gallery its size (labels) and images."""
        hit, labels = self._hits()[self.top_k[0]].float(), cat_state(self.query_label)
        keys, inverse = torch.unique(labels, return_inverse=True)
        per = torch.zeros(len(keys), device=hit.device).index_add_(0, inverse, hit)
        per = per / torch.bincount(inverse, minlength=len(keys))
        out: dict[str, Any] = {"match": self.match,
                               "per_source": {int(k): round(float(v), 6) for k, v in zip(keys, per, strict=True)}}
        if self.gallery_config is not None:
            out["gallery_size"], out["gallery_images"] = self.gallery_size()
        return out

    def gallery_size(self) -> tuple[int, int]:
        """The labels and the images of the gallery the last swaps were scored against."""
        labels = self._gallery()[0]
        return len(torch.unique(labels)), len(labels)


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
