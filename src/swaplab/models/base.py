"""The GAN LightningModule skeleton shared by the four methods.

A method subclasses `SwapModule` and defines `generate` (the swap), `generator_losses` and
`discriminator_losses` (named, unweighted terms). The skeleton owns the step logic: manual optimization,
the generator output computed once per step and detached for D, D frozen for the G loss, explicit
scheduler steps, gradient clipping, a generator EMA, weighted sums from `loss_weights` and logging as
`train/g/<term>` / `train/d/<term>` on logging steps. `trainer.global_step` counts generator iterations: the
D update is applied through the strategy so that it does not advance the step counter. Under
`swaplab.training.strategies.GANDDPStrategy` each optimizer's gradients are averaged over processes before it steps.

Fast paths (config switches, off by default): `channels_last` memory format for G, D and the step's images,
`compile` (torch.compile of G and D, in place so checkpoints keep their keys) and `accumulate_grad_batches`
(manual optimization: losses scaled by 1/N, optimizers, schedulers and the EMA stepped every N batches).
Mixed precision is `trainer.precision` (Lightning autocasts training_step); loss terms are summed in fp32.
"""

from __future__ import annotations

import contextlib
import copy
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, replace
from typing import Any

import pytorch_lightning as pl
import torch
from torch import nn

from swaplab.data.pairs import PAIR_FLAGS, check_pair_rates, dataset_pair_rates, flag_rate
from swaplab.data.prepare import prepare_batch
from swaplab.experts import Experts
from swaplab.losses import WeightedSum
from swaplab.models.stages import Predecessors, stage_record
from swaplab.runtime import get_logger, seeded_generator

Batch = dict[str, torch.Tensor]
log = get_logger(__name__)
# D terms that differentiate through D twice (R1 / gradient penalty): AOT autograd (torch.compile) cannot
DOUBLE_BACKWARD_TERMS = ("gp", "r1")


@contextlib.contextmanager
def without_gradients(module: nn.Module | None) -> Iterator[None]:
    """`module`'s trainable weights get no gradients inside the block (requires_grad restored after)."""
    params = [p for p in module.parameters() if p.requires_grad] if module is not None else []
    for p in params:
        p.requires_grad_(False)
    try:
        yield
    finally:
        for p in params:
            p.requires_grad_(True)


def check_method_pairs(owner: str, pair_terms: Mapping[str, str], pair_rates: Mapping[str, float] | None
                       ) -> dict[str, float] | None:
    """A method's `pair_rates` (same_identity_rate, same_image_rate), validated against its pair-gated terms: a
    rate that draws none of a term's pairs fails here, at start-up."""
    unknown = {t: f for t, f in pair_terms.items() if f not in PAIR_FLAGS}
    if unknown:
        raise ValueError(f"{owner}.pair_terms {unknown} use flags outside the pair vocabulary {list(PAIR_FLAGS)}")
    if pair_rates is None:
        return None
    if set(pair_rates) != {"same_identity_rate", "same_image_rate"}:
        raise ValueError(f"model.pair_rates needs exactly same_identity_rate and same_image_rate, got {dict(pair_rates)}")
    rates = check_pair_rates(pair_rates["same_identity_rate"], pair_rates["same_image_rate"])
    for term, flag in pair_terms.items():
        if flag_rate(flag, *rates) == 0:
            raise ValueError(f"model.pair_rates {dict(pair_rates)} draw no {flag} pairs, on which {owner}'s {term} "
                             "term is defined")
    return dict(zip(("same_identity_rate", "same_image_rate"), rates, strict=True))


def _fp32(terms: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """Loss terms in fp32 before weighting and summing (bf16/fp16 autocast leaves some in half precision)."""
    return {k: v.float() for k, v in terms.items()}


@dataclass
class SwapOutput:
    """A batch of swaps: `swap` (B,3,H,W) in [-1, 1] and method-specific tensors in `extras`."""

    swap: torch.Tensor
    extras: dict[str, Any] = field(default_factory=dict)

    def detach(self) -> SwapOutput:
        def _detach(v: Any) -> Any:
            if torch.is_tensor(v):
                return v.detach()
            if isinstance(v, (list, tuple)):
                return type(v)(_detach(x) for x in v)
            return v

        return replace(self, swap=self.swap.detach(), extras={k: _detach(v) for k, v in self.extras.items()})


class SwapModule(pl.LightningModule):
    """The training skeleton of every swap method (with or without a discriminator); see the module docstring
    for what subclasses provide."""

    generator_terms: tuple[str, ...] = ()  # weighted generator loss terms (names in loss_weights)
    # generator terms defined on one kind of pair only: term -> the batch flag its paper defines it on
    # (swaplab.data.pairs.PAIR_FLAGS); `pairs_of(term, batch)` is that flag, the one place a term is gated
    pair_terms: Mapping[str, str] = {}
    discriminator_terms: tuple[str, ...] = ()  # weighted D terms beyond real/fake (e.g. "gp")
    required_experts: tuple[str, ...] = ()
    uses_source: bool = True  # False: the identity lives in the weights (Fast Face-swap); inference needs no source
    network_name: str = "generator"  # the trained network's name in checkpoint records (swaplab.models.stages)
    predecessors: Predecessors | None = None  # frozen networks from an earlier run (FSGAN stages, HEAR-Net)

    def __init__(
        self,
        generator: nn.Module,  # plain nn.Module, loadable alone for inference
        discriminator: nn.Module | None,  # None for methods without an adversarial term
        experts: Experts,  # frozen networks shared with losses and metrics
        loss_weights: Mapping[str, float],  # flat {term: weight}, from conf/model/<model>.yaml
        optimizer_g: Callable[..., torch.optim.Optimizer],  # partial: params -> optimizer
        optimizer_d: Callable[..., torch.optim.Optimizer] | None = None,
        scheduler_g: Callable[..., Any] | None = None,  # partial: optimizer -> scheduler, stepped per iteration
        scheduler_d: Callable[..., Any] | None = None,
        ema_decay: float | None = None,  # generator EMA (used by forward / inference when set)
        grad_clip_norm: float | None = None,  # clip G and D gradients to this norm
        channels_last: bool = False,  # G, D and the step's images in channels_last memory format
        compile: bool = False,  # torch.compile G and D at fit start (in place: state_dict keys unchanged)
        compile_backend: str = "inductor",  # torch.compile backend ("aot_eager": no C++ compiler needed)
        accumulate_grad_batches: int = 1,  # optimizer steps every N batches (losses scaled by 1/N)
        pair_rates: Mapping[str, float] | None = None,  # the pairs the paper trains on (data configs read them)
        seed: int = 0,  # run seed of the training-step draws (step_generator: occluders, holes)
    ) -> None:
        super().__init__()
        self.automatic_optimization = False
        experts.require(*self.required_experts)
        if discriminator is not None and optimizer_d is None:
            raise ValueError("a discriminator needs optimizer_d")
        if discriminator is None and self.discriminator_terms:
            raise ValueError(f"{type(self).__name__} has discriminator terms {self.discriminator_terms} "
                             "but no discriminator")
        if ema_decay is not None and not 0.0 < ema_decay < 1.0:
            raise ValueError(f"ema_decay must be in (0, 1) or null, got {ema_decay}")
        if accumulate_grad_batches < 1:
            raise ValueError(f"accumulate_grad_batches must be >= 1, got {accumulate_grad_batches}")
        if compile and compile_backend not in torch.compiler.list_backends(exclude_tags=()):
            raise ValueError(f"unknown compile_backend {compile_backend!r}; torch.compile knows "
                             f"{torch.compiler.list_backends()}")
        self.pair_rates = check_method_pairs(type(self).__name__, self.pair_terms, pair_rates)
        self.seed = int(seed)
        self.generator = generator
        self.discriminator = discriminator
        self.experts = experts
        weights = dict(loss_weights)
        WeightedSum(weights, self.generator_terms + self.discriminator_terms, type(self).__name__)  # validate
        self.g_loss = WeightedSum({k: weights[k] for k in self.generator_terms}, self.generator_terms, "generator")
        self.d_loss: WeightedSum | None = None  # generator-only methods (discriminator=None) have no D loss
        if discriminator is not None:
            d_weights = {"real": 1.0, "fake": 1.0, **{k: weights[k] for k in self.discriminator_terms}}
            self.d_loss = WeightedSum(d_weights, d_weights, "discriminator")
        self.optimizer_g, self.optimizer_d = optimizer_g, optimizer_d
        self.scheduler_g, self.scheduler_d = scheduler_g, scheduler_d
        self.ema_decay = ema_decay
        self.grad_clip_norm = grad_clip_norm
        self.channels_last, self.compile_networks, self.compile_backend = channels_last, compile, compile_backend
        self.accumulate_grad_batches = accumulate_grad_batches
        self.generator_ema = copy.deepcopy(generator).requires_grad_(False) if ema_decay else None
        self.run_config: dict[str, Any] = {}  # resolved run config, stored in checkpoints for inference

    # ---- what a method defines -------------------------------------------------------------
    def generate(self, source: torch.Tensor, target: torch.Tensor, generator: nn.Module) -> SwapOutput:
        raise NotImplementedError

    def generate_batch(self, batch: Batch, generator: nn.Module) -> SwapOutput:
        """The swap of a training / validation batch. A method that uses more of the batch than its two images
        (FSGAN: ground-truth landmarks, poses and masks) overrides this."""
        return self.generate(batch["source"], batch["target"], generator)

    def generator_losses(self, batch: Batch, out: SwapOutput) -> dict[str, torch.Tensor]:
        raise NotImplementedError

    def step_generator(self, batch_idx: int, stream: int = 0) -> torch.Generator:
        """The generator of this training batch's random draws in the step (occluders, inpainting holes), on the
        module's device: seeded by (seed, rank, epoch, batch, stream), where batch counts the batches trained
        (global_step x accumulate_grad_batches + the batch within the update). Every process draws its own, and a
        run resumed from a checkpoint draws what the uninterrupted run would have. (Pairs and augmentations are
        drawn by the dataset from each pair's key, which the sampler makes distinct per rank and epoch.)"""
        n = self.accumulate_grad_batches
        batch = self.global_step * n + batch_idx % n
        return seeded_generator(self.device, self.seed, self.global_rank, self.current_epoch, batch, stream)

    def pairs_of(self, term: str, batch: Batch) -> torch.Tensor:
        """(B,) bool: the pairs of `batch` that the pair-gated generator term `term` is defined on."""
        return batch[self.pair_terms[term]].bool()

    @staticmethod
    def batch_truth(images: torch.Tensor, key: str, truth: Batch | None) -> torch.Tensor | None:
        """`<side>_<key>` of the batch `truth` when `images` is that batch's `<side>` tensor itself (the data's
        ground truth or preprocessed labels: the synthetic renderer's, the shard store's), else None: the
        caller falls back to its expert."""
        for side in ("source", "target"):
            if truth is not None and truth.get(side) is images and f"{side}_{key}" in truth:
                return truth[f"{side}_{key}"]
        return None

    def discriminator_losses(self, batch: Batch, out: SwapOutput) -> dict[str, torch.Tensor]:
        """Only called when the method has a discriminator."""
        raise NotImplementedError

    # ---- inference ----------------------------------------------------------------------------
    @property
    def inference_generator(self) -> nn.Module:
        return self.generator_ema if self.generator_ema is not None else self.generator

    def forward(self, source: torch.Tensor, target: torch.Tensor, use_ema: bool = True) -> SwapOutput:
        """The inference swap (a method's whole inference path: subclasses that add steps, e.g. Fast Face-swap's
        paste-back, override this): with the EMA generator where the method keeps one, the raw generator when
        `use_ema` is False. The one place that makes this choice (swap.py, FaceSwapPipeline)."""
        return self.generate(source, target, self.inference_generator if use_ema else self.generator)

    def train(self, mode: bool = True) -> SwapModule:
        super().train(mode)
        if self.generator_ema is not None:
            self.generator_ema.eval()
        return self

    # ---- optimization -------------------------------------------------------------------------
    def configure_optimizers(self) -> Any:
        optimizers = [self.optimizer_g(self.generator.parameters())]
        schedulers = []
        if self.scheduler_g is not None:
            schedulers.append({"scheduler": self.scheduler_g(optimizers[0]), "interval": "step", "name": "lr/g"})
        if self.discriminator is not None:
            optimizers.append(self.optimizer_d(self.discriminator.parameters()))
            if self.scheduler_d is not None:
                schedulers.append({"scheduler": self.scheduler_d(optimizers[1]), "interval": "step", "name": "lr/d"})
        return optimizers, schedulers

    def _optimizer_pair(self) -> tuple[Any, Any | None]:
        opts = self.optimizers()
        opts = opts if isinstance(opts, list) else [opts]
        return opts[0], (opts[1] if len(opts) > 1 else None)

    def _clip(self, optimizer: Any) -> None:
        if self.grad_clip_norm:
            self.clip_gradients(optimizer, gradient_clip_val=self.grad_clip_norm, gradient_clip_algorithm="norm")

    # ---- fast paths ----------------------------------------------------------------------------
    def setup(self, stage: str) -> None:
        # setup, not on_fit_start: methods override on_fit_start; this runs before the optimizers are built
        if stage != "fit":
            return
        self._check_training_pairs()
        if self.channels_last:
            for net in (self.generator, self.generator_ema, self.discriminator):
                if net is not None:
                    net.to(memory_format=torch.channels_last)
        if self.compile_networks:
            try:  # torch.compile checks at call time that it supports this Python (the check has no public API)
                self._compile(self.generator)
            except RuntimeError as error:
                raise RuntimeError(f"model.compile=true but torch.compile is not supported here (torch "
                                   f"{torch.__version__}: {error}); set model.compile=false") from error
            if self.discriminator is not None and set(self.discriminator_terms) & set(DOUBLE_BACKWARD_TERMS):
                log.warning("model.compile: %s's discriminator stays eager (its %s term needs double backward, "
                            "which torch.compile does not support)", type(self).__name__, self.discriminator_terms)
            elif self.discriminator is not None:
                self._compile(self.discriminator)

    def _check_training_pairs(self) -> None:
        """Start-up: warn when a weighted pair-gated term meets none of its pairs in the training data (data that
        overrides the method's rates, or fixed swaps such as FaceForensics++'s)."""
        datamodule = getattr(self.trainer, "datamodule", None) if self._trainer is not None else None
        rates = dataset_pair_rates(getattr(datamodule, "train_set", None))
        for term, flag in self.pair_terms.items():
            if self.g_loss.weights.get(term) and rates and max(flag_rate(flag, *r) for r in rates) == 0:
                log.warning("%s's %s term is defined on %s pairs and the training data draws none (data.train "
                            "same_identity_rate / same_image_rate %s; the method's model.pair_rates: %s): it stays 0",
                            type(self).__name__, term, flag, rates, self.pair_rates)

    def _compile(self, net: nn.Module) -> None:
        """Compile `net` in place; a container without a forward of its own (FSGAN's stages) per child."""
        if type(net).forward is nn.Module.forward:
            for child in net.children():
                self._compile(child)
        else:
            net.compile(backend=self.compile_backend)

    def on_after_batch_transfer(self, batch: Any, dataloader_idx: int) -> Any:
        # uint8 crops from the loader workers -> float batches, template warps and augmentation, on this device
        batch = prepare_batch(batch)
        # here, not in training_step: methods look batch tensors up by identity (FSGAN's ground truth)
        if not self.channels_last or not isinstance(batch, dict):
            return batch
        return {k: v.contiguous(memory_format=torch.channels_last) if torch.is_tensor(v) and v.dim() == 4 else v
                for k, v in batch.items()}

    def training_step(self, batch: Batch, batch_idx: int) -> None:
        opt_g, opt_d = self._optimizer_pair()
        accumulate = self.accumulate_grad_batches
        update = (batch_idx + 1) % accumulate == 0  # accumulate=1: every batch
        out = self.generate_batch(batch, self.generator)

        # D's weights get no gradients from the G loss; the D loss sees only detached swaps, so the generator needs
        # no freezing. (Lightning's toggled_optimizer does the same by walking every optimizer's parameters.)
        with without_gradients(self.discriminator):
            g_total, g_logs = self.g_loss(_fp32(self.generator_losses(batch, out)))
        with self._averaged_gradients(opt_g, update):
            self.manual_backward(g_total / accumulate if accumulate > 1 else g_total)
        if update:
            self._clip(opt_g)
            opt_g.step()
            opt_g.zero_grad(set_to_none=True)

        logs = {f"train/g/{k}": v for k, v in g_logs.items()}
        if opt_d is not None:
            d_total, d_logs = self.d_loss(_fp32(self.discriminator_losses(batch, out.detach())))
            with self._averaged_gradients(opt_d, update):
                self.manual_backward(d_total / accumulate if accumulate > 1 else d_total)
            if update:
                self._clip(opt_d)
                # Through the strategy (precision/AMP handled) but without advancing global_step.
                self.trainer.strategy.optimizer_step(opt_d.optimizer, closure=lambda: None)
                opt_d.zero_grad(set_to_none=True)
            logs.update({f"train/d/{k}": v for k, v in d_logs.items()})

        if update:
            schedulers = self.lr_schedulers() or []
            for scheduler in schedulers if isinstance(schedulers, list) else [schedulers]:
                scheduler.step()
            self._update_ema()
        if self._writes_logs_this_step(batch_idx):
            self.log_dict(logs, on_step=True, on_epoch=False, batch_size=batch["target"].shape[0])
            self.log("train/g/total_pbar", g_logs["total"], prog_bar=True, logger=False)

    def _averaged_gradients(self, optimizer: Any, update: bool) -> contextlib.AbstractContextManager:
        """Around the backward pass before `optimizer` steps: multi-process strategies without a DDP wrapper
        (swaplab.training.strategies.GANDDPStrategy) average its gradients there."""
        average = getattr(self.trainer.strategy, "averaged_gradients", None)
        return average(optimizer.optimizer) if average is not None and update else contextlib.nullcontext()

    def _writes_logs_this_step(self, batch_idx: int) -> bool:
        """Whether the trainer writes this step's logs: every `trainer.log_every_n_steps` batches, when it stops,
        and on the last step. Each `self.log` costs about a millisecond of Python on any device, so the steps
        whose values would be dropped skip it (the progress bar's loss also updates on logging steps only).

        Lightning writes a batch's logged values when the number of batches trained so far (all epochs, this
        one included) is a multiple of `log_every_n_steps`; a value logged on another batch would be written
        later with the wrong step. Called after this batch's updates: `global_step` (generator updates)
        counts the batches, times N under `accumulate_grad_batches=N` plus those of the update in progress."""
        trainer = self.trainer
        every = trainer.log_every_n_steps
        if trainer.fast_dev_run or trainer.should_stop or 0 < trainer.max_steps <= self.global_step:
            return True
        if not every:
            return False
        n = self.accumulate_grad_batches
        if n > 1 and trainer.num_training_batches % n:
            return True  # epochs end mid-update: batches are not a function of updates, log every batch
        return (self.global_step * n + (batch_idx + 1) % n) % every == 0

    @torch.no_grad()
    def _update_ema(self) -> None:
        if self.generator_ema is None:
            return
        torch._foreach_lerp_(list(self.generator_ema.parameters()), list(self.generator.parameters()),
                             1.0 - self.ema_decay)
        ema_buffers, buffers = list(self.generator_ema.buffers()), list(self.generator.buffers())
        if buffers:
            torch._foreach_copy_(ema_buffers, buffers)

    def validation_step(self, batch: Batch, batch_idx: int) -> None:
        out = self.generate_batch(batch, self.inference_generator)
        _, logs = self.g_loss(self.generator_losses(batch, out))
        self.log_dict({f"val/g/{k}": v for k, v in logs.items()}, on_epoch=True, sync_dist=True,
                      batch_size=batch["target"].shape[0])

    # ---- bookkeeping ----------------------------------------------------------------------------
    def parameter_counts(self) -> dict[str, int]:
        counts = {"params/generator": sum(p.numel() for p in self.generator.parameters())}
        if self.discriminator is not None:
            counts["params/discriminator"] = sum(p.numel() for p in self.discriminator.parameters())
        for role, info in self.experts.describe().items():
            counts[f"params/experts/{role}"] = info["params"]
        return counts

    def trained_networks(self) -> list[str]:
        """The networks this run trains, by their names in checkpoint records."""
        return [self.network_name]

    def network_weights(self) -> dict[str, str]:
        """Network name -> its state-dict prefix in this model's checkpoints (the EMA where one is kept)."""
        return {self.network_name: "generator_ema." if self.generator_ema is not None else "generator."}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        stages = stage_record(type(self).__name__, self.trained_networks(), self.network_weights(), self.predecessors)
        checkpoint["swaplab"] = {"config": self.run_config, "experts": self.experts.describe(), "stages": stages}
