"""Building a protocol's metrics by name, with their experts bound. Importing this module registers the built-in
metrics (their modules call `register_metric`)."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

from torch import nn

from swaplab.experts.base import Experts
from swaplab.metrics import fid, geometry, identity, image, truth  # noqa: F401  (register the built-in metrics)
from swaplab.metrics.registry import METRICS, SwapMetrics


def build_metrics(specs: Mapping[str, Mapping[str, Any] | None],
                  experts: Callable[[str], nn.Module] | nn.Module | None = None) -> SwapMetrics:
    """Metrics from `{display name: options}`: the registered metric is `options.metric` (default: the display
    name), the other options go to its constructor. `experts` is an `Experts` container or a role -> expert
    function; every role a metric names must be there."""
    metrics = {}
    for name, options in specs.items():
        if options is None:  # removed from the protocol
            continue
        options = dict(options)
        kind = options.pop("metric", name)
        if kind not in METRICS:
            raise ValueError(f"unknown metric '{kind}' (evaluation.metrics.{name}); registered: {sorted(METRICS)}")
        try:
            metrics[name] = METRICS[kind](**options)
        except (TypeError, ValueError) as err:
            raise ValueError(f"evaluation.metrics.{name}: {err}") from err
    collection = SwapMetrics(metrics)
    if experts is not None:
        lookup = experts if not isinstance(experts, nn.Module) else expert_lookup(experts)
        for metric in collection.values():
            metric.bind(lookup)
    return collection


def expert_lookup(*containers: Experts) -> Callable[[str], nn.Module]:
    """role -> the first container that has it; a clear error naming the roles available otherwise."""

    def find(role: str) -> nn.Module:
        for container in containers:
            if role in container:
                return container.get(role)
        known = sorted({r for c in containers for r in c.roles()})
        raise ValueError(f"a metric needs the '{role}' expert, but the experts provide {known} "
                         f"(add it to the experts config, or to experts_extra when training)")

    return find
