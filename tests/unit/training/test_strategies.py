"""GANDDPStrategy's gradient averaging (two gloo processes on the CPU); the full DDP training run is in
test_cli.py."""

from __future__ import annotations

import socket

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from swaplab.training.strategies import GANDDPStrategy, GradientAverager, broadcast_from_rank_zero

pytestmark = pytest.mark.usefixtures("single_thread")


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3).to(memory_format=torch.channels_last)
        self.head = nn.Linear(4, 2)
        self.rank0_only = nn.Linear(4, 2)  # used by one process: half its gradient after averaging
        self.unused = nn.Linear(4, 2)  # used by none: keeps grad=None

    def loss(self, x: torch.Tensor, use_rank0_only: bool) -> torch.Tensor:
        features = self.conv(x).mean((2, 3))
        loss = self.head(features).square().mean()
        return loss + self.rank0_only(features).abs().mean() if use_rank0_only else loss


def batches(rank: int) -> list[torch.Tensor]:
    generator = torch.Generator().manual_seed(100 + rank)
    return [torch.randn(2, 3, 6, 6, generator=generator).contiguous(memory_format=torch.channels_last)
            for _ in range(2)]


def start_states(rank: int) -> nn.Module:
    """A module whose weights and buffers (float and integer, channels_last included) differ by rank."""
    torch.manual_seed(rank)
    module = nn.Sequential(Net(), nn.BatchNorm1d(4))
    module[1].running_mean.fill_(rank + 1.0)
    module[1].num_batches_tracked.fill_(rank + 5)
    return module


def _worker(rank: int, port: int, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=2)
    synced = start_states(rank)
    broadcast_from_rank_zero(synced)
    torch.save(synced.state_dict(), f"{out}{rank}_states.pt")
    grads = {}
    for bucket_mb in BUCKET_MB:
        torch.manual_seed(0)
        net = Net()
        averager = GradientAverager(net.parameters(), bucket_mb=bucket_mb)
        first, second = batches(rank)
        net.loss(first, rank == 0).backward()  # an accumulated micro-batch: not averaged on its own
        averager.arm()
        net.loss(second, rank == 0).backward()
        averager.finish()
        grads[bucket_mb] = {name: p.grad for name, p in net.named_parameters()}
    torch.save(grads, f"{out}{rank}.pt")
    dist.destroy_process_group()


BUCKET_MB = {0.0: 8, 25.0: 1}  # bucket size: number of buckets (one per weight tensor, or one for all)


@pytest.fixture(scope="module")
def two_processes(tmp_path_factory) -> str:
    """Runs `_worker` on two gloo processes once; the prefix of the files they wrote."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    out = str(tmp_path_factory.mktemp("two_processes") / "grads")
    mp.spawn(_worker, args=(port, out), nprocs=2, join=True)
    return out


def test_gradient_averager_equals_the_mean_of_the_processes_gradients(two_processes):
    out = two_processes
    averaged = [torch.load(f"{out}{rank}.pt") for rank in range(2)]

    torch.manual_seed(0)
    net = Net()
    for rank in range(2):
        for x in batches(rank):
            (net.loss(x, rank == 0) / 2).backward()  # the mean over processes of each one's accumulated sum
    for bucket_mb, num_buckets in BUCKET_MB.items():
        assert len(GradientAverager(net.parameters(), bucket_mb=bucket_mb).buckets) == num_buckets
        for name, p in net.named_parameters():
            for rank in range(2):
                got = averaged[rank][bucket_mb][name]
                if name.startswith("unused"):
                    assert got is None
                else:
                    torch.testing.assert_close(got, p.grad, rtol=1e-5, atol=1e-7)
        assert averaged[0][bucket_mb]["conv.weight"].is_contiguous(memory_format=torch.channels_last)


def test_gan_ddp_strategy_starts_every_rank_from_rank_zeros_weights_and_buffers(two_processes):
    out = two_processes
    reference = start_states(0).state_dict()
    assert not torch.equal(start_states(1).state_dict()["0.head.weight"], reference["0.head.weight"])
    for rank in range(2):
        synced = torch.load(f"{out}{rank}_states.pt")
        assert synced.keys() == reference.keys()
        for name, value in reference.items():
            assert torch.equal(synced[name], value), (rank, name)


def test_gan_ddp_strategy_rejects_ddp_wrapper_options_and_bad_buckets():
    with pytest.raises(ValueError, match="find_unused_parameters"):
        GANDDPStrategy(find_unused_parameters=True)
    with pytest.raises(ValueError, match="ddp_comm_hook"):
        GANDDPStrategy(ddp_comm_hook=lambda state, bucket: bucket)
    with pytest.raises(ValueError, match="bucket_cap_mb must be >= 0"):
        GANDDPStrategy(bucket_cap_mb=-1)
    assert GANDDPStrategy(bucket_cap_mb=5).bucket_cap_mb == 5


def test_other_ranks_drop_lightnings_info_messages_and_ours(monkeypatch):
    import logging
    import warnings

    from lightning_fabric.utilities.rank_zero import rank_zero_only

    from swaplab.runtime import get_logger, quiet_other_ranks

    seen: list[str] = []

    class Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            seen.append(record.getMessage())

    handler = Collect()
    hosts = [logging.getLogger(), logging.getLogger("lightning_fabric"), logging.getLogger("pytorch_lightning")]
    for host in hosts:  # Lightning's loggers may have handlers of their own and not propagate
        monkeypatch.setattr(host, "handlers", [handler])
        if host.name != "root":
            monkeypatch.setattr(host, "propagate", False)
    monkeypatch.setattr(logging.getLogger("somelib"), "level", logging.INFO)
    quiet_other_ranks()
    quiet_other_ranks()  # idempotent
    assert sum(type(f).__name__ == "_OtherRanksQuiet" for f in handler.filters) == 1

    def speak() -> None:
        logging.getLogger("lightning_fabric.utilities.distributed").info("fabric info")
        logging.getLogger("pytorch_lightning.trainer").warning("lightning warning")
        get_logger("swaplab.some_module").warning("ours")
        logging.getLogger("somelib").info("other library")

    speak()
    assert seen == ["fabric info", "lightning warning", "ours", "other library"]
    seen.clear()
    monkeypatch.setattr(rank_zero_only, "rank", 1)
    speak()
    assert seen == ["lightning warning", "other library"]

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        quiet_other_ranks()  # on rank 1: Lightning's Python warnings are ignored too
        warnings.warn_explicit("lightning says", UserWarning, "_pytree.py", 1, module="pytorch_lightning.utilities._pytree")
        warnings.warn_explicit("others say", UserWarning, "x.py", 1, module="somelib.x")
    assert [str(w.message) for w in caught] == ["others say"]
