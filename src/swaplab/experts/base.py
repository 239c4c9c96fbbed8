"""Frozen pretrained networks shared by generators, losses and metrics.

A `FrozenExpert` keeps its network outside the module tree: it moves with `.to()` / `.half()` like a
child, but its parameters are invisible to optimizers, DDP, `state_dict()` and `.train()`. So an expert
is never trained, never stored in a checkpoint, stays in eval mode and can be shared by reference
(deep copies, e.g. for a generator EMA, return the same instance).
"""

from __future__ import annotations

import logging
from typing import Any

import torch
from torch import nn

log = logging.getLogger(__name__)


class FrozenExpert(nn.Module):
    """Wraps a pretrained network `net`; subclasses define `forward` in terms of `self.net`."""

    def __init__(self, net: nn.Module, name: str, weights: str = "random") -> None:
        super().__init__()
        net.eval().requires_grad_(False)
        self.__dict__["net"] = net  # hidden from the module tree on purpose (see module docstring)
        self.name = name
        self.weights = weights  # where the weights came from: a file path, "random", or a package name
        self.training = False
        if weights == "random":
            log.warning("Expert '%s' uses RANDOM weights (tests / quickstart only); results mean nothing.", name)

    def _apply(self, fn: Any, recurse: bool = True) -> FrozenExpert:
        self.net._apply(fn, recurse)
        return super()._apply(fn, recurse)

    def train(self, mode: bool = True) -> FrozenExpert:
        return super().train(False)  # always eval: BatchNorm statistics and dropout stay frozen

    def __deepcopy__(self, memo: dict) -> FrozenExpert:
        return self  # one instance per run, shared by reference

    @property
    def device(self) -> torch.device:
        return next(self.net.parameters()).device

    def num_parameters(self) -> int:
        return sum(p.numel() for p in self.net.parameters())

    def __call__(self, *inputs: Any, **kwargs: Any) -> Any:
        # Build an autograd graph only when a gradient has to flow back through an input.
        needs_grad = torch.is_grad_enabled() and any(
            isinstance(x, torch.Tensor) and x.requires_grad for x in (*inputs, *kwargs.values())
        )
        with torch.set_grad_enabled(needs_grad):
            return super().__call__(*inputs, **kwargs)

    def extra_repr(self) -> str:
        return f"name={self.name}, weights={self.weights}, params={self.num_parameters():,}"


class Experts(nn.Module):
    """The run's set of experts by role (identity, perceptual, ...), built once and handed to everyone."""

    def __init__(self, **experts: FrozenExpert | None) -> None:
        super().__init__()
        for role, expert in experts.items():
            if expert is not None:
                self.add_module(role, expert)

    def require(self, *roles: str) -> None:
        missing = [r for r in roles if not hasattr(self, r)]
        if missing:
            raise ValueError(
                f"this model needs experts {missing}, but the experts config provides {list(self._modules)}"
            )

    def describe(self) -> dict[str, dict[str, Any]]:
        return {
            role: {"name": e.name, "weights": str(e.weights), "params": e.num_parameters()}
            for role, e in self._modules.items()
        }
