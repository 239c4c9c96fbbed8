"""Data-parallel training for GANs without DistributedDataParallel's unused-parameter search.

DDP wraps the whole LightningModule and expects every trainable weight to get a gradient in every backward
pass. A GAN step runs two backward passes (G, then D), each leaving the other network without gradients, so
DDP needs `find_unused_parameters=True`: a walk of the autograd graph after every forward. `GANDDPStrategy`
instead leaves the module unwrapped (as StyleGAN2/3's training loops do) and averages each optimizer's
gradients itself, just before that optimizer steps: `GradientAverager` packs the gradients into buckets and
launches each bucket's all-reduce from autograd hooks as soon as backward has produced it, so communication
overlaps the rest of the backward pass, like DDP's reducer. Gradient accumulation communicates once per update,
not once per micro-batch.
"""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterable, Iterator
from typing import Any

import torch
import torch.distributed as dist
from pytorch_lightning.strategies import DDPStrategy
from torch import nn


@torch.no_grad()
def broadcast_from_rank_zero(module: nn.Module, group: dist.ProcessGroup | None = None) -> None:
    """Every process takes rank 0's parameters and buffers of `module`, in place (one broadcast per tensor: this
    runs once, at start-up). Without an initialized process group (or with one process) nothing happens."""
    if not (dist.is_available() and dist.is_initialized()) or dist.get_world_size(group) == 1:
        return
    source = dist.get_global_rank(group, 0) if group is not None else 0
    for tensor in itertools.chain(module.parameters(), module.buffers()):
        dist.broadcast(tensor.detach(), src=source, group=group)


class GradientAverager:
    """Averages the gradients of `params` over the process group between `arm()` and `finish()`.

    Buckets of about `bucket_mb` MiB are filled in reverse registration order (the order backward produces
    gradients) and all-reduced in bucket order as they fill, so every rank launches the same collectives in
    the same order. A weight that got no gradient on some rank counts as zero there; one that got none on any
    rank keeps `grad=None` (the optimizer skips it, as without DDP).
    """

    def __init__(self, params: Iterable[torch.nn.Parameter], bucket_mb: float = 25.0,
                 group: dist.ProcessGroup | None = None) -> None:
        self.params = [p for p in params if p.requires_grad]
        self.group = group
        self.buckets: list[list[torch.nn.Parameter]] = []
        size, limit = 0, bucket_mb * 2**20
        for p in reversed(self.params):
            new_bucket = not self.buckets or size >= limit or self.buckets[-1][0].dtype != p.dtype
            if new_bucket:
                self.buckets.append([])
                size = 0
            self.buckets[-1].append(p)
            size += p.numel() * p.element_size()
        self._bucket_of = {p: i for i, bucket in enumerate(self.buckets) for p in bucket}
        self._hooks = [p.register_post_accumulate_grad_hook(self._on_gradient) for p in self.params]
        self._armed = False
        self._missing: list[int] = []
        self._launched: list[tuple[torch.Tensor, Any]] = []

    def arm(self) -> None:
        """The next backward pass's gradients are the ones to average (the last micro-batch of an update)."""
        self._armed = True
        self._missing = [len(bucket) for bucket in self.buckets]
        self._launched = []

    def _on_gradient(self, param: torch.nn.Parameter) -> None:
        if not self._armed:
            return
        self._missing[self._bucket_of[param]] -= 1
        while len(self._launched) < len(self.buckets) and self._missing[len(self._launched)] == 0:
            self._launch(len(self._launched))

    def _launch(self, index: int) -> None:
        bucket = self.buckets[index]
        grads = [p.grad.reshape(-1) if p.grad is not None else torch.zeros_like(p).reshape(-1) for p in bucket]
        if self._missing[index] == 0:  # every weight has its gradient: no host-built tensor, no sync
            used = torch.ones(len(bucket), dtype=grads[0].dtype, device=grads[0].device)
        else:
            used = torch.tensor([p.grad is not None for p in bucket], dtype=grads[0].dtype, device=grads[0].device)
        flat = torch.cat([*grads, used])
        self._launched.append((flat, dist.all_reduce(flat, group=self.group, async_op=True)))

    def finish(self) -> None:
        """Launches what backward left (weights without gradients), waits, and writes the averages back."""
        while len(self._launched) < len(self.buckets):
            self._launch(len(self._launched))
        world = dist.get_world_size(self.group)
        for bucket, (flat, work) in zip(self.buckets, self._launched, strict=True):
            work.wait()
            *grads, used = flat.div_(world).split([*(p.numel() for p in bucket), len(bucket)])
            # reading `used` syncs with the device: only for buckets where this rank lacked a gradient
            used_anywhere = used.tolist() if any(p.grad is None for p in bucket) else [1.0] * len(bucket)
            for p, grad, anywhere in zip(bucket, grads, used_anywhere, strict=True):
                if p.grad is None:
                    if not anywhere:
                        continue
                    p.grad = torch.empty_like(p)
                p.grad.copy_(grad.view(p.shape))
        self._armed = False
        self._launched = []

    def remove(self) -> None:
        for hook in self._hooks:
            hook.remove()
        self._hooks = []


class GANDDPStrategy(DDPStrategy):
    """DDP for `SwapModule` modules: the module stays unwrapped, start weights are broadcast from rank 0, and each
    optimizer's gradients are averaged before it steps (`averaged_gradients`). Takes DDPStrategy's arguments
    except the DistributedDataParallel ones; `bucket_cap_mb` sizes the all-reduce buckets."""

    def __init__(self, *args: Any, bucket_cap_mb: float = 25.0, **kwargs: Any) -> None:
        ddp_only = {"find_unused_parameters", "static_graph", "gradient_as_bucket_view", "broadcast_buffers",
                    "ddp_comm_state", "ddp_comm_hook", "ddp_comm_wrapper", "model_averaging_period"}
        if ddp_only & set(kwargs):
            raise ValueError(f"GANDDPStrategy does not wrap the model in DistributedDataParallel: "
                             f"{sorted(ddp_only & set(kwargs))} do not apply")
        if not bucket_cap_mb >= 0:
            raise ValueError(f"bucket_cap_mb must be >= 0 (0: one bucket per weight), got {bucket_cap_mb}")
        super().__init__(*args, **kwargs)
        self.bucket_cap_mb = bucket_cap_mb
        self._averagers: dict[int, GradientAverager] = {}

    def configure_ddp(self) -> None:
        broadcast_from_rank_zero(self.model)  # every rank starts from rank 0's weights and buffers

    def setup_optimizers(self, trainer: Any) -> None:
        super().setup_optimizers(trainer)
        self._remove_averagers()
        if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
            self._averagers = {id(opt): GradientAverager((p for g in opt.param_groups for p in g["params"]),
                                                         self.bucket_cap_mb) for opt in self.optimizers}

    @contextlib.contextmanager
    def averaged_gradients(self, optimizer: torch.optim.Optimizer) -> Iterator[None]:
        """Around the backward pass after which `optimizer` steps: its gradients come out averaged."""
        averager = self._averagers.get(id(optimizer))
        if averager is None:  # one process
            yield
            return
        averager.arm()
        yield
        averager.finish()

    def _remove_averagers(self) -> None:
        for averager in self._averagers.values():
            averager.remove()
        self._averagers = {}

    def teardown(self) -> None:
        self._remove_averagers()
        super().teardown()
