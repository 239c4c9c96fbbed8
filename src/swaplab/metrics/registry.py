"""The metric registry: swap metrics as torchmetrics `Metric`s, built by name from a protocol config.

Every metric takes the same record per batch (`SwapRecord`: swaps, sources, targets, the batch's ground truth
and, for reconstruction metrics, the model's self-swaps) and names the expert role it uses as a constructor
argument (`identity_role: identity_eval`), resolved against the run's experts when the metrics are built.
States are torchmetrics states (`cat` lists or `sum` tensors), so `compute()` gives the same result on one
process as on N DDP processes that each saw a shard of the data.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torchmetrics import Metric
from torchmetrics.utilities import dim_zero_cat

from swaplab.experts.base import weights_sha256

METRICS: dict[str, type[SwapMetric]] = {}


def register_metric(name: str) -> Callable[[type[SwapMetric]], type[SwapMetric]]:
    """Class decorator: `@register_metric("id_retrieval")` makes the metric buildable by that name."""

    def add(cls: type[SwapMetric]) -> type[SwapMetric]:
        if name in METRICS and METRICS[name] is not cls:
            raise ValueError(f"metric '{name}' registered twice")
        METRICS[name] = cls
        cls.registered_name = name
        return cls

    return add


@dataclass
class SwapRecord:
    """One evaluated batch. Images are B x 3 x H x W in [-1, 1]; `batch` holds the dataset's keys (labels,
    ground truth). Expert outputs are cached per record, so metrics sharing an expert run it once."""

    swap: torch.Tensor
    source: torch.Tensor
    target: torch.Tensor
    batch: Mapping[str, Any]
    reconstruction: torch.Tensor | None = None  # model(target, target), for reconstruction metrics
    cache: dict[tuple[str, str], Any] = field(default_factory=dict, repr=False)

    def image(self, which: str) -> torch.Tensor:
        image = getattr(self, which)
        if image is None:
            raise ValueError(f"this record has no '{which}' images")
        return image

    def expert_output(self, role: str, expert: nn.Module, which: str) -> Any:
        """`expert(<which> images)`, computed once per (role, which)."""
        key = (role, which)
        if key not in self.cache:
            self.cache[key] = expert(self.image(which))
        return self.cache[key]

    def ground_truth(self, key: str) -> torch.Tensor:
        if key not in self.batch:
            raise KeyError(f"the evaluation data has no '{key}' (ground truth comes from data=synthetic); "
                           f"batch keys: {sorted(self.batch)}")
        return self.batch[key]


class SwapMetric(Metric):
    """Base of the registered metrics. Subclasses declare `role_args` (constructor arguments naming expert
    roles), add their states, and implement `update(record)`, `compute() -> {suffix: value}` ('' is the
    metric's headline value) and `per_example() -> {suffix: (N,) tensor}` of the examples seen here."""

    registered_name = ""
    role_args: tuple[str, ...] = ()
    failure_score: float | None = None  # the score of a swap that could not be made (no face); None: undefined
    needs_reconstruction = False
    full_state_update = False

    def __init__(self, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.__dict__["_experts"] = {}  # role -> expert, shared by reference (not a child module)

    def roles(self) -> dict[str, str]:
        """{constructor argument: expert role} of this metric, as configured."""
        return {arg: getattr(self, arg) for arg in self.role_args}

    def bind(self, experts: Callable[[str], nn.Module]) -> None:
        for role in self.roles().values():
            self._experts[role] = experts(role)

    def expert(self, arg: str) -> nn.Module:
        role = getattr(self, arg)
        if role not in self._experts:
            raise RuntimeError(f"metric '{self.registered_name}' is not bound to its '{role}' expert (build_metrics)")
        return self._experts[role]

    def run(self, record: SwapRecord, arg: str, which: str) -> Any:
        """The output of this metric's `arg` expert on the record's `which` images (cached per record)."""
        return record.expert_output(getattr(self, arg), self.expert(arg), which)

    def set_input_template(self, template: str | None) -> None:
        """The crop template of the images to come (what the experts are set to take); metrics that read
        images of their own (a fixed gallery) read them in it."""

    def prepare(self, resolution: int, device: torch.device | str) -> None:
        """Before swaps of `resolution` are scored: load what the metric reads itself (a fixed gallery), so
        its data problems show before anything is scored and its cost is not counted as the swaps'."""

    def per_example(self) -> dict[str, torch.Tensor]:
        return {}

    def details(self) -> dict[str, Any]:
        """Extra results for the summary JSON (e.g. per source video)."""
        return {}


def cat_state(values: list[torch.Tensor] | torch.Tensor) -> torch.Tensor:
    return dim_zero_cat(values) if isinstance(values, torch.Tensor) or values else torch.zeros(0)


class SwapMetrics(nn.Module):
    """The metrics of one protocol by display name; `compute()` flattens them into `{name[/suffix]: float}`."""

    def __init__(self, metrics: Mapping[str, SwapMetric]) -> None:
        super().__init__()
        self.metrics = nn.ModuleDict(metrics)

    def __getitem__(self, name: str) -> SwapMetric:
        return self.metrics[name]

    def __len__(self) -> int:
        return len(self.metrics)

    def keys(self) -> list[str]:
        return list(self.metrics.keys())

    def values(self) -> list[SwapMetric]:
        return list(self.metrics.values())

    def items(self) -> list[tuple[str, SwapMetric]]:
        return list(self.metrics.items())

    @property
    def needs_reconstruction(self) -> bool:
        return any(m.needs_reconstruction for m in self.values())

    def update(self, record: SwapRecord) -> None:
        for metric in self.values():
            metric.update(record)

    def compute(self) -> dict[str, float]:
        out = {}
        for name, metric in self.items():
            for suffix, value in metric.compute().items():
                out[f"{name}/{suffix}" if suffix else name] = float(value)
        return out

    def per_example(self) -> dict[str, torch.Tensor]:
        out = {}
        for name, metric in self.items():
            for suffix, value in metric.per_example().items():
                out[f"{name}/{suffix}" if suffix else name] = value.detach().cpu()
        return out

    def details(self) -> dict[str, Any]:
        return {name: d for name, metric in self.items() if (d := metric.details())}

    def reset(self) -> None:
        for metric in self.values():
            metric.reset()

    def set_input_template(self, template: str | None) -> None:
        for metric in self.values():
            metric.set_input_template(template)

    def prepare(self, resolution: int, device: torch.device | str) -> None:
        for metric in self.values():
            metric.prepare(resolution, device)

    def roles(self) -> list[str]:
        return sorted({role for m in self.values() for role in m.roles().values()})

    def describe(self) -> dict[str, dict[str, Any]]:
        """Per metric: the registered metric, its expert roles and the experts (name, weights, weights sha256)
        behind them."""
        described = {}
        for name, metric in self.items():
            experts = {arg: describe_expert(role, metric._experts.get(role)) for arg, role in metric.roles().items()}
            described[name] = {"metric": metric.registered_name, "experts": experts}
        return described


def describe_expert(role: str, expert: nn.Module | None) -> dict[str, Any]:
    """The role, network name, weights source and weights sha256 of an expert (None: not bound)."""
    return {"role": role, "name": getattr(expert, "name", None), "weights": str(getattr(expert, "weights", None)),
            "sha256": weights_sha256(expert) if expert is not None else None}
