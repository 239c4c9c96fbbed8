"""Training-step throughput: images/s of a method's LightningModule step (G and D updates) against a bare PyTorch
loop doing the same updates on the same networks and batch (the framework overhead), FLOPs per step and per swap
(torch.utils.flop_counter) and, on a GPU, the model FLOP utilisation against the device's bf16 dense peak.
Prints one JSON object with the keys in KEYS.

    .venv/bin/python experiments/benchmarks/train_step.py --tiny --model hififace --steps 40   # CPU, tiny networks
    .venv/bin/python experiments/benchmarks/train_step.py --model faceshifter --override experiment=faceshifter_paper \
        --batch-size 16 --precision bf16-mixed                                        # the paper config on a GPU
    .venv/bin/python experiments/benchmarks/train_step.py --model fsgan --override model.stage=inpainting \
        model.channels_last=true model.compile=true                                   # a stage, with fast paths

Random expert weights (the speed does not depend on them); synthetic faces. Bare and Lightning steps alternate
batch by batch after --warmup steps; the medians are reported.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import statistics
import sys
import time
from pathlib import Path

import hydra
import pytorch_lightning as pl
import torch
from omegaconf import DictConfig, open_dict
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils.data import DataLoader
from torch.utils.flop_counter import FlopCounterMode

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import TINY_MODELS, machine, random_expert_weights, synchronize, train_config  # noqa: E402

from swaplab.models.base import without_gradients  # noqa: E402
from swaplab.models.fsgan.generators import half_resolution  # noqa: E402
from swaplab.models.loading import build_model  # noqa: E402
from swaplab.runtime import resolve_device  # noqa: E402

# bf16 dense tensor-core peaks (FLOP/s) from the vendors' data sheets (SXM parts; PCIe H100: 756e12)
PEAK_BF16_FLOPS = {"H200": 989.4e12, "H100": 989.4e12, "A100": 312e12}
KEYS = ("machine", "model", "overrides", "resolution", "batch_size", "precision", "steps", "images_per_second",
        "step_seconds", "bare_images_per_second", "bare_step_seconds", "framework_overhead_percent",
        "flops_per_step", "flops_per_image", "flops_per_swap", "achieved_flops_per_second", "peak_flops", "mfu",
        "params", "peak_rss_bytes", "peak_gpu_allocated_bytes", "load_average")


def parse(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--model", default="faceshifter")
    parser.add_argument("--resolution", type=int, default=None, help="default: the config's data.resolution")
    parser.add_argument("--batch-size", type=int, default=None, help="default: the config's data.batch_size")
    parser.add_argument("--steps", type=int, default=20,
                        help="timed steps of each kind, interleaved (after the warm-up); medians are reported")
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--precision", default="32-true", choices=["32-true", "bf16-mixed", "16-mixed"])
    parser.add_argument("--device", default="auto")
    parser.add_argument("--flops-only", action="store_true",
                        help="count one step's FLOPs, no timing (paper configs on a CPU); timing keys are null")
    parser.add_argument("--no-flops", action="store_true",
                        help="skip the FLOP count (one step less: slow CPU runs); FLOP keys are null")
    parser.add_argument("--tiny", action="store_true", help="32x32 tiny networks, batch 4 (CPU; tests)")
    parser.add_argument("--override", nargs="*", default=[], help="extra train-config overrides")
    return parser.parse_args(argv)


class InterleavedTimer(pl.Callback):
    """Times other steps and a Lightning step in turn, batch after batch, so that a slow spell of a shared machine
    hits every side alike. At each batch start it runs (and times) each of `steps` (name -> function) once, then
    times the Lightning step from there to the next batch start: the module's step plus the loop, hooks and data
    fetch around it."""

    def __init__(self, steps: dict, warmup: int, device: torch.device) -> None:
        self.steps, self.warmup, self.device = steps, warmup, device
        self.times: dict[str, list[float]] = {name: [] for name in steps}
        self.lightning: list[float] = []
        self._lightning_start: float | None = None

    def _now(self) -> float:
        synchronize(self.device)
        return time.perf_counter()

    def on_train_batch_start(self, trainer, pl_module, batch, batch_idx):
        now = self._now()
        if self._lightning_start is not None and batch_idx > self.warmup:
            self.lightning.append(now - self._lightning_start)
        for name, step in self.steps.items():
            step()
            end = self._now()
            if batch_idx >= self.warmup:
                self.times[name].append(end - now)
            now = end
        self._lightning_start = now

    def on_train_end(self, trainer, pl_module):
        self.lightning.append(self._now() - self._lightning_start)  # the last step


def interleaved_times(model: pl.LightningModule, batch: dict, steps: dict, warmup: int, timed: int,
                      precision: str, device: torch.device) -> tuple[dict[str, list[float]], list[float]]:
    """Seconds of every timed step: ({name: [...]} of `steps`, Lightning's [...]), taken in turn batch by batch."""
    timer = InterleavedTimer(steps, warmup, device)
    total = warmup + timed
    trainer = pl.Trainer(max_steps=total, accelerator=device.type, devices=1, precision=precision,
                         logger=False, callbacks=[timer], enable_checkpointing=False, enable_progress_bar=False,
                         enable_model_summary=False, num_sanity_val_steps=0)
    trainer.fit(model, train_dataloaders=DataLoader([batch] * total, batch_size=None))
    return timer.times, timer.lightning


def interleaved_seconds(model: pl.LightningModule, batch: dict, bare_step, args: argparse.Namespace,
                        device: torch.device) -> tuple[float, float]:
    """Median seconds per step: (bare loop, Lightning)."""
    times, lightning = interleaved_times(model, batch, {"bare": bare_step}, args.warmup, args.steps, args.precision,
                                         device)
    return statistics.median(times["bare"]), statistics.median(lightning)


def peak_memory(device: torch.device) -> dict:
    """This process's peak resident memory (Linux ru_maxrss is in KiB) and, on a GPU, torch's peak allocation."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * (1 if sys.platform == "darwin" else 1024)
    gpu = torch.cuda.max_memory_allocated(device) if device.type == "cuda" else None
    return {"peak_rss_bytes": rss, "peak_gpu_allocated_bytes": gpu}


def autocast(device: torch.device, precision: str) -> contextlib.AbstractContextManager:
    if precision == "32-true":
        return contextlib.nullcontext()
    return torch.autocast(device.type, dtype=torch.bfloat16 if precision == "bf16-mixed" else torch.float16)


def bare_step_fn(model: pl.LightningModule, batch: dict, device: torch.device, precision: str):
    """One G and one D update written against the networks directly, as the module's training_step does."""
    if model.global_step < getattr(model, "progressive_steps", 0):
        batch = half_resolution(batch)  # FSGAN's training_step halves the batch in its progressive phase
    opt_g = model.optimizer_g(model.generator.parameters())
    opt_d = model.optimizer_d(model.discriminator.parameters()) if model.discriminator is not None else None
    scaler = torch.amp.GradScaler(device.type, enabled=precision == "16-mixed")

    def step() -> None:
        with autocast(device, precision):
            out = model.generate_batch(batch, model.generator)
            with without_gradients(model.discriminator):
                g_total, _ = model.g_loss(model.generator_losses(batch, out))
        scaler.scale(g_total).backward()
        scaler.step(opt_g)
        opt_g.zero_grad(set_to_none=True)
        if opt_d is not None:
            with autocast(device, precision):
                d_total, _ = model.d_loss(model.discriminator_losses(batch, out.detach()))
            scaler.scale(d_total).backward()
            scaler.step(opt_d)
            opt_d.zero_grad(set_to_none=True)
        scaler.update()

    return step


class FlopCount(TorchDispatchMode):
    """Total FLOPs of the ops run inside, by torch.utils.flop_counter's formulas. FlopCounterMode itself tracks
    modules with autograd hooks that fail inside torch.autograd.grad (HifiFace's R1 penalty)."""

    def __init__(self) -> None:
        super().__init__()
        self.formulas, self.total = FlopCounterMode(display=False).flop_registry, 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        out = func(*args, **kwargs)
        formula = self.formulas.get(func._overloadpacket)
        if formula is not None:
            self.total += formula(*args, **kwargs, out_val=out)
        return out


def count_flops(fn) -> int:
    with FlopCount() as counter:
        fn()
    return counter.total


def peak_flops(device: torch.device) -> float | None:
    if device.type != "cuda":
        return None
    name = torch.cuda.get_device_name(device)
    return next((peak for key, peak in PEAK_BF16_FLOPS.items() if key in name), None)


def random_predecessors(cfg: DictConfig, tiny: bool) -> None:
    """FSGAN's later stages and HEAR-Net without a model.predecessor_ckpt: random frozen predecessors (the speed
    does not depend on their training); HEAR-Net's AEI-Net is FaceShifter's (paper-sized unless --tiny)."""
    if "predecessor_ckpt" not in cfg.model or cfg.model.get("predecessor_ckpt"):
        return
    with open_dict(cfg):
        cfg.model.allow_random_predecessors = True
        if "aei_generator" in cfg.model and not cfg.model.get("aei_generator"):
            sizes = TINY_MODELS["faceshifter"] if tiny else ["experiment=faceshifter_paper"]
            cfg.model.aei_generator = train_config(["model=faceshifter", *sizes]).model.generator


def prepare(args: argparse.Namespace) -> tuple[DictConfig, pl.LightningModule, dict, torch.device]:
    """The config, the model (on the device, fast paths applied as a fit would) and one batch after transfer.
    Fills args.resolution / args.batch_size from the config when they were not given."""
    if args.tiny:
        args.resolution, args.batch_size = 32, 4
    device = resolve_device(args.device)
    if args.tiny and args.model not in TINY_MODELS:
        raise SystemExit(f"--tiny knows {sorted(TINY_MODELS)}, not {args.model!r}")
    tiny = TINY_MODELS[args.model] if args.tiny else []
    sizes = [f"data.{key}={value}" for key, value in (("resolution", args.resolution), ("batch_size", args.batch_size))
             if value is not None]
    cfg = train_config([f"model={args.model}", *(["experts=random"] if args.tiny else []), *tiny, *args.override,
                        *sizes, "data.num_workers=0"])
    random_expert_weights(cfg)
    random_predecessors(cfg, args.tiny)
    args.resolution, args.batch_size = cfg.data.resolution, cfg.data.batch_size
    pl.seed_everything(0, verbose=False)
    model, _ = build_model(cfg)
    datamodule = hydra.utils.instantiate(cfg.data, _convert_="all")
    datamodule.setup("fit")
    batch = {k: v.to(device) if torch.is_tensor(v) else v for k, v in next(iter(datamodule.train_dataloader())).items()}
    model.to(device).train()
    model.setup("fit")  # the fast paths (channels_last, compile) as a fit would apply them
    return cfg, model, model.on_after_batch_transfer(batch, 0), device


def main(argv: list[str] | None = None) -> dict:
    args = parse(argv)
    _, model, batch, device = prepare(args)
    bare_step = bare_step_fn(model, batch, device, args.precision)
    bare_step()  # one-time work (Fast Face-swap's style features, lazy buffers) stays out of the count
    flops_per_step = flops_per_swap = None
    if not args.no_flops:
        flops_per_step = count_flops(bare_step)
        with torch.no_grad(), autocast(device, args.precision):
            flops_per_swap = count_flops(lambda: model.generate(batch["source"], batch["target"], model.generator))
    result = {"machine": machine(device), "model": args.model, "overrides": args.override,
              "resolution": args.resolution,
              "batch_size": args.batch_size, "precision": args.precision, "steps": args.steps,
              "images_per_second": None, "step_seconds": None, "bare_images_per_second": None,
              "bare_step_seconds": None, "framework_overhead_percent": None, "flops_per_step": flops_per_step,
              "flops_per_image": flops_per_step // args.batch_size if flops_per_step else None,
              "flops_per_swap": flops_per_swap // args.batch_size if flops_per_swap else None,
              "achieved_flops_per_second": None, "peak_flops": peak_flops(device), "mfu": None,
              "params": model.parameter_counts()}
    if not args.flops_only:
        bare_seconds, step_seconds = interleaved_seconds(model, batch, bare_step, args, device)
        peak = result["peak_flops"]
        achieved = flops_per_step / step_seconds if flops_per_step else None
        result.update({"images_per_second": round(args.batch_size / step_seconds, 2),
                       "step_seconds": round(step_seconds, 5),
                       "bare_images_per_second": round(args.batch_size / bare_seconds, 2),
                       "bare_step_seconds": round(bare_seconds, 5),
                       "framework_overhead_percent": round(100 * (step_seconds - bare_seconds) / bare_seconds, 2),
                       "achieved_flops_per_second": round(achieved) if achieved else None,
                       "mfu": round(achieved / peak, 4) if peak and achieved else None})
    result.update(peak_memory(device), load_average=[round(x, 2) for x in os.getloadavg()])
    print(json.dumps(result, indent=1))
    return result


if __name__ == "__main__":
    main()
