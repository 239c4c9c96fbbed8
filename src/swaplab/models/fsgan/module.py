"""FSGAN (Nirkin et al. ICCV 2019): subject-agnostic reenactment (Gr), segmentation (Gs), inpainting (Gc) and
blending (Gb), trained one stage at a time in the order segmentation -> reenactment -> inpainting -> blending.

`stage` picks the generator that trains; the earlier stages' generators come from `predecessor_ckpt` (the
previous stage's checkpoint, which must record them as trained: swaplab.models.stages) and stay frozen, so the
last stage's checkpoint holds the whole pipeline. Terms (weights in conf/model/fsgan.yaml, one flat map for all
stages; LSGAN against a multi-scale PatchGAN; pix = L1, id / attr = the VGGFace2 / CelebA VGG19 losses):
  segmentation: seg_ce = cross-entropy of Gs(x) against the 3-class labels of source and target.
  reenactment:  the stepwise training of the official v1 train_reenactment_stepwise.py, on same-identity pairs:
                the direct path Gr(source, target landmarks) -> reenact_pix / _id / _attr against the target,
                reenact_seg = cross-entropy of its segmentation, reenact_adv (the D sees the direct output only);
                the two-step path Gr(Gr(source, midpoint landmarks), target landmarks) -> reenact_step_pix /
                _id (no attribute term) against the target, reenact_step_seg. The midpoint render itself is
                compared with nothing: only where the two steps end is. Inference runs `num_steps` applications
                of Gr along the landmark path (the official stepwise inference: a fixed 2).
  inpainting:   Gc fills the reenacted face inside the target's face mask; training cuts a hole shaped like the
                official ones into the reenacted face (an ellipse on its border, swaplab.models.fsgan.holes);
                inpaint_* against the target's own face (same-identity pairs); the D sees that face as real.
  blending:     Gb blends the inpainted face transferred into the target; blend_* against the Poisson blending
                (cv2.seamlessClone NORMAL_CLONE) of that transfer into the target, on every pair.
Landmarks and segmentation labels: the batch's ground truth `<side>_landmarks` / `<side>_mask` when the batch
has them (data=synthetic); else the `landmarks` expert (dlib 68) and, for labels, Gs (the parser expert for
Gs's own training labels). The `pose` expert (Hopenet) gives the (yaw, pitch) of source views for face view
interpolation at inference (swaplab.models.fsgan.views).
"""

from __future__ import annotations

import functools
from collections.abc import Callable, Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from swaplab.experts import VGG_LOSS_WEIGHTS
from swaplab.experts.dlib_models import dlib_landmarks
from swaplab.imaging import seamless_clone
from swaplab.losses import AdversarialLoss, masked_mean
from swaplab.models.base import Batch, SwapModule, SwapOutput
from swaplab.models.fsgan.generators import (
    STAGES,
    FSGANGenerators,
    face_label_mask,
    half_resolution,
    halve,
    transfer,
)
from swaplab.models.fsgan.heatmaps import interpolate_views, landmark_heatmaps
from swaplab.models.fsgan.holes import HOLE_DRAWS, hair_holes
from swaplab.models.fsgan.views import ViewMap
from swaplab.models.stages import load_predecessors, recorded_resolution, self_contained_config


def _optimize_only(optimizer: Callable[..., torch.optim.Optimizer], module: nn.Module, _params: Any
                   ) -> torch.optim.Optimizer:
    """The generator optimizer over the training stage's network alone (the frozen ones have no state)."""
    return optimizer(module.parameters())


FULL_RESOLUTION = "full_resolution"  # a progressive-phase batch's key: the batch before it was halved
STAGE_PREFIX = {"segmentation": "seg_", "reenactment": "reenact_", "inpainting": "inpaint_", "blending": "blend_"}
HOW_TO_CHAIN = (f"train the FSGAN stages in order ({' -> '.join(STAGES)}) and pass the previous stage's checkpoint, "
                "e.g. model.predecessor_ckpt=<run dir>/checkpoints/last.ckpt")


class FSGAN(SwapModule):
    generator_terms = ("seg_ce", "reenact_pix", "reenact_id", "reenact_attr", "reenact_seg", "reenact_adv",
                       "reenact_step_pix", "reenact_step_id", "reenact_step_seg",
                       "inpaint_pix", "inpaint_id", "inpaint_attr", "inpaint_adv",
                       "blend_pix", "blend_id", "blend_attr", "blend_adv")
    required_experts = ("landmarks", "pose", "parsing", "perceptual", "perceptual_attr")

    def __init__(
        self,
        generator: FSGANGenerators,
        discriminator: nn.Module | None,
        stage: str = "reenactment",          # the generator that trains: segmentation, reenactment, inpainting, blending
        predecessor_ckpt: str | None = None,  # the previous stage's checkpoint: the frozen earlier generators
        allow_random_predecessors: bool = False,  # no predecessor_ckpt: random frozen generators (tests only)
        predecessor_record: dict | None = None,  # filled in checkpoints' configs: frozen weights in the state dict
        num_steps: int = 2,                  # inference: applications of Gr from the source's view to the target's
        heatmap_sigma: float = 2.0,          # landmark Gaussian std in pixels of a 256 crop (scaled with the side)
        progressive_steps: int = 0,          # first steps at half resolution, global U-Net only (128 -> 256)
        full_resolution_lr: Mapping[str, float] | None = None,  # {"g", "d"}: fresh optimizers at these lrs at 256
        full_resolution_batch: int | None = None,  # global pairs per step at full resolution (official: 16 at 256)
        **base_kwargs: Any,
    ) -> None:
        if stage not in STAGES:
            raise ValueError(f"FSGAN stage must be one of {STAGES}, got {stage!r}")
        if num_steps < 1 or heatmap_sigma <= 0 or progressive_steps < 0:
            raise ValueError(f"need num_steps >= 1, heatmap_sigma > 0, progressive_steps >= 0; got {num_steps}, "
                             f"{heatmap_sigma}, {progressive_steps}")
        super().__init__(generator=generator, discriminator=None if stage == "segmentation" else discriminator,
                         **base_kwargs)
        self.stage, self.num_steps = stage, num_steps
        self.heatmap_sigma, self.progressive_steps = heatmap_sigma, progressive_steps
        self.full_resolution_lr = dict(full_resolution_lr or {})
        if self.full_resolution_lr and (not progressive_steps or not set(self.full_resolution_lr) <= {"g", "d"}):
            raise ValueError(f"full_resolution_lr ({self.full_resolution_lr}) takes keys g / d and needs "
                             "progressive_steps > 0")
        self.full_resolution_batch = full_resolution_batch
        if full_resolution_batch is not None and (full_resolution_batch < 1 or not progressive_steps):
            raise ValueError(f"full_resolution_batch ({full_resolution_batch}) must be >= 1 and needs "
                             "progressive_steps > 0")
        if progressive_steps and stage == "segmentation":
            raise ValueError("progressive training runs the multi-scale generators (Gr, Gc, Gb), not Gs")
        self._full_resolution_started = False
        earlier = STAGES[: STAGES.index(stage)]
        self.predecessors = load_predecessors(f"FSGAN stage {stage}", earlier, predecessor_ckpt,
                                              allow_random_predecessors, predecessor_record, HOW_TO_CHAIN)
        for name in earlier:
            self.predecessors.load_into(name, generator[name])
        self.predecessors.release()
        # the side each frozen generator was trained at (its run's record): it runs there, whatever this phase's
        # side. In the half-size phase the frozen stages run on the full-resolution batch (FULL_RESOLUTION) and
        # their outputs are halved where the training stage takes them, as the official code does
        record = (self.predecessors.predecessor or {}).get("record")
        self.frozen_resolutions = {name: recorded_resolution(record, name) for name in earlier}
        self._trained_side: int | None = None  # the side of the last training batch: the resolution recorded
        for name in STAGES:
            generator[name].requires_grad_(name == stage)
        self.train(self.training)  # frozen generators in eval mode from the start (fit alone never calls train)
        if self.generator_ema is not None:
            self.generator_ema.load_state_dict(generator.state_dict())
        self.optimizer_g = functools.partial(_optimize_only, self.optimizer_g, generator[stage])
        self.adversarial = AdversarialLoss("lsgan")

    def trained_networks(self) -> list[str]:
        return [self.stage]

    def network_weights(self) -> dict[str, str]:
        ema = self.generator_ema is not None  # the frozen generators are the same in both
        return {name: f"generator{'_ema' if ema and name == self.stage else ''}.{name}." for name in STAGES}

    def on_save_checkpoint(self, checkpoint: dict[str, Any]) -> None:
        super().on_save_checkpoint(checkpoint)
        side = self._trained_side or (self.run_config.get("data") or {}).get("resolution")
        if side and self._trained_side is None and self.global_step < self.progressive_steps:
            side = side // 2  # saved in the half-size phase before any step since a resume
        if side:  # the side the training stage was trained at (so far): later stages run it there
            checkpoint["swaplab"]["stages"]["resolutions"] = {self.stage: int(side)}
        self_contained_config(checkpoint["swaplab"], self.predecessors)

    def train(self, mode: bool = True) -> FSGAN:
        super().train(mode)
        for net in (self.generator, self.generator_ema):
            for name in STAGES:
                if net is not None and name != self.stage:
                    net[name].eval()  # frozen: BatchNorm keeps its trained statistics
        return self

    # ---- the batch's ground truth, else the experts ---------------------------------------------
    def landmarks(self, images: torch.Tensor, truth: Batch | None = None) -> torch.Tensor:
        found = self.batch_truth(images, "landmarks", truth)
        return found.to(images.dtype) if found is not None else dlib_landmarks(self.experts.landmarks, images)

    @torch.no_grad()
    def pose(self, images: torch.Tensor, truth: Batch | None = None) -> torch.Tensor:
        found = self.batch_truth(images, "pose", truth)
        return found.to(images.dtype) if found is not None else self.experts.pose(images)

    @torch.no_grad()
    def labels(self, images: torch.Tensor, segmenter: Callable[[torch.Tensor], torch.Tensor],
               truth: Batch | None = None) -> torch.Tensor:
        """B x H x W labels (background / face / hair): the batch's `*_mask`, else segmenter(images) arg-max."""
        found = self.batch_truth(images, "mask", truth)
        return found.long() if found is not None else segmenter(images).argmax(1)

    def parser_logits(self, images: torch.Tensor) -> torch.Tensor:
        return self.experts.parsing.group_masks(self.experts.parsing(images))

    # ---- the stages ------------------------------------------------------------------------------
    def _run(self, generator: FSGANGenerators, stage: str, x: torch.Tensor, global_only: bool = False
             ) -> torch.Tensor:
        """One generator; a frozen one runs without a graph, at the side it was trained at (its input resized
        there and its output back, bilinearly), the training one (`global_only`: the progressive phase's global
        U-Net alone) with one."""
        side = self.frozen_resolutions.get(stage)
        if stage != self.stage and side and side != x.shape[-1]:
            size = x.shape[-2:]
            with torch.no_grad():
                out = generator[stage](F.interpolate(x, size=(round(size[0] * side / size[1]), side),
                                                     mode="bilinear", align_corners=False, antialias=side < size[1]))
                return F.interpolate(out, size=size, mode="bilinear", align_corners=False, antialias=side > size[1])
        if stage != self.stage or not torch.is_grad_enabled():
            with torch.no_grad():
                return generator[stage](x)
        return generator[stage](x, global_only=True) if global_only else generator[stage](x)

    def render(self, generator: FSGANGenerators, image: torch.Tensor, points: torch.Tensor,
               global_only: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
        """Gr once: `image` under the heatmaps of the landmarks `points` -> (RGB, segmentation logits)."""
        sigma = self.heatmap_sigma * image.shape[-1] / 256
        heatmaps = landmark_heatmaps(points, image.shape[-1], sigma)
        out = self._run(generator, "reenactment", torch.cat([image, heatmaps], dim=1), global_only)
        return out[:, :3], out[:, 3:]

    def reenact(self, generator: FSGANGenerators, source: torch.Tensor, target: torch.Tensor,
                truth: Batch | None = None, global_only: bool = False) -> tuple[list[torch.Tensor], torch.Tensor]:
        """Inference reenactment: `num_steps` applications of Gr, each re-rendering the previous output under the
        next landmarks of the linear path from the source's to the target's -> (every step's image, Gr's
        segmentation logits of the last)."""
        return self._reenact_to(generator, source, self.landmarks(source, truth), self.landmarks(target, truth),
                                global_only)

    def _reenact_to(self, generator: FSGANGenerators, source: torch.Tensor, source_points: torch.Tensor,
                    target_points: torch.Tensor, global_only: bool = False) -> tuple[list[torch.Tensor], torch.Tensor]:
        points = interpolate_views(source_points, target_points, self.num_steps)
        image, images = source, []
        for j in range(1, self.num_steps + 1):
            image, seg_logits = self.render(generator, image, points[j], global_only)
            images.append(image)
        return images, seg_logits

    def stepwise_training(self, generator: FSGANGenerators, source: torch.Tensor, target: torch.Tensor,
                          truth: Batch | None = None, global_only: bool = False) -> SwapOutput:
        """The reenactment stage's training paths: direct (one Gr) and two-step (through the midpoint landmarks),
        both ending at the target's landmarks. The official midpoint rotates the source's 3D landmarks half way
        to the target's pose; with 2D landmarks it is their mean here (pose and expression half way)."""
        source_points, target_points = self.landmarks(source, truth), self.landmarks(target, truth)
        direct, direct_seg = self.render(generator, source, target_points, global_only)
        midpoint_points = interpolate_views(source_points, target_points, 2)[1]
        midpoint, _ = self.render(generator, source, midpoint_points, global_only)
        two_step, two_step_seg = self.render(generator, midpoint, target_points, global_only)
        return SwapOutput(direct, {"direct_seg": direct_seg, "midpoint": midpoint, "two_step": two_step,
                                   "two_step_seg": two_step_seg, "adv_fake": direct, "adv_real": target})

    def generate(self, source: torch.Tensor, target: torch.Tensor, generator: nn.Module) -> SwapOutput:
        return self.swap_path(source, target, generator)

    def generate_batch(self, batch: Batch, generator: nn.Module) -> SwapOutput:
        """With the batch's ground truth; the progressive phase trains the global U-Net alone. The reenactment
        stage trains (and validates) on its direct and two-step paths."""
        progressive = self.training and self.global_step < self.progressive_steps
        if self.stage == "reenactment":
            return self.stepwise_training(generator, batch["source"], batch["target"], batch, progressive)
        full = batch.get(FULL_RESOLUTION) if progressive else None
        if full is not None:  # the frozen stages on the full-resolution images, the training one at half side
            return self.swap_path(full["source"], full["target"], generator, full, progressive, halve_trained=True)
        return self.swap_path(batch["source"], batch["target"], generator, batch, progressive)

    def swap_path(self, source: torch.Tensor, target: torch.Tensor, generator: nn.Module,
                  truth: Batch | None = None, global_only: bool = False, halve_trained: bool = False) -> SwapOutput:
        """The pipeline up to this model's stage: Gs alone (no swap: returns the target), reenactment (the
        reenacted source), inpainting (the completed face pasted by the target's face mask) or blending.
        `truth`: a batch whose ground truth (landmarks, pose, masks) replaces the experts' estimates.
        `halve_trained` (the progressive phase of inpainting and blending): what reaches the training stage, and
        everything after it, is halved (`halve`, as `half_resolution` halves the batch); the frozen stages before
        it run on the full-resolution images."""
        if self.stage == "segmentation":
            logits = self._run(generator, "segmentation", torch.cat([source, target]), global_only)
            return SwapOutput(target, {"seg_logits": logits})
        images, seg_logits = self.reenact(generator, source, target, truth, global_only)
        return self._complete(generator, images, seg_logits, target, truth, global_only, halve_trained=halve_trained)

    def _complete(self, generator: nn.Module, images: list[torch.Tensor], seg_logits: torch.Tensor,
                  target: torch.Tensor, truth: Batch | None = None, global_only: bool = False,
                  extras: dict[str, Any] | None = None, halve_trained: bool = False) -> SwapOutput:
        """The swap path after the reenactment (`images`: its steps, the last one reenacted to the target)."""
        extras = (extras or {}) | {"steps": images, "seg_logits": seg_logits}
        if self.stage == "reenactment":
            return SwapOutput(images[-1], extras | {"adv_fake": images[-1], "adv_real": target})

        def trained_side(*tensors: torch.Tensor) -> tuple[torch.Tensor, ...]:
            return tuple(halve(t) for t in tensors) if halve_trained else tensors

        segment = functools.partial(self._run, generator, "segmentation")  # frozen: at its recorded side
        reenacted = images[-1].detach()
        reenacted_face = face_label_mask(self.labels(reenacted, segment))
        target_face = face_label_mask(self.labels(target, segment, truth))
        if self.stage == "inpainting":
            reenacted, reenacted_face, target, target_face = trained_side(reenacted, reenacted_face, target,
                                                                          target_face)
        if self.training and self.stage == "inpainting":  # holes over the reenacted face's border (official shape)
            draws = truth.get("inpainting_hole_draws") if truth is not None else None
            reenacted_face &= ~hair_holes(reenacted_face, draws)
        holed = reenacted.masked_fill(~reenacted_face, -1.0)
        inpainted = self._run(generator, "inpainting", torch.cat([holed, target_face.to(holed.dtype)], dim=1),
                              global_only)
        swapped = transfer(inpainted, target, target_face)
        extras |= {"inpainted": inpainted, "target_face": target_face}
        if self.stage == "inpainting":
            real = target.masked_fill(~target_face, -1.0)
            return SwapOutput(swapped, extras | {"adv_fake": inpainted, "adv_real": real, "inpainting_target": real})
        swapped, target, target_face = trained_side(swapped.detach(), target, target_face)
        blended = self._run(generator, "blending", torch.cat([swapped, target, target_face.to(target.dtype)], dim=1),
                            global_only)
        return SwapOutput(blended, extras | {"transfer": swapped, "target_face": target_face, "adv_fake": blended,
                                             "adv_real": target})

    # ---- face view interpolation (inference) -------------------------------------------------------
    def view_map(self, views: torch.Tensor) -> ViewMap:
        """The triangulated (yaw, pitch) of the source views (N x 3 x H x W crops), from the `pose` expert."""
        return ViewMap(self.pose(views)[:, :2])

    @torch.no_grad()
    def swap_views(self, views: torch.Tensor, view_map: ViewMap, target: torch.Tensor,
                   generator: nn.Module | None = None) -> SwapOutput:
        """The swap with face view interpolation: each target is reenacted from the source views around its pose
        (`view_map.weights` of its (yaw, pitch)) and those reenactments are blended with their weights before
        segmentation, inpainting and blending. extras["views"]: each target's (view indices, weights)."""
        if self.stage == "segmentation":
            raise ValueError("face view interpolation needs a reenactment generator: a stage after segmentation")
        if len(view_map) != len(views):
            raise ValueError(f"the view map holds {len(view_map)} views, got {len(views)} view images")
        generator = self.inference_generator if generator is None else generator
        view_points, target_points = self.landmarks(views), self.landmarks(target)
        target_angles = self.pose(target)[:, :2]
        used = [view_map.weights(angles) for angles in target_angles.cpu()]  # (indices, weights) per target
        # every (target, view) pair reenacted in one batch, then each target's views summed with their weights
        owner = torch.cat([torch.full((len(i),), b, dtype=torch.long) for b, (i, _) in enumerate(used)]).to(views.device)
        index = torch.cat([torch.as_tensor(i, dtype=torch.long) for i, _ in used]).to(views.device)
        weight = torch.cat([torch.as_tensor(w) for _, w in used]).to(views.device, views.dtype)
        images, seg_logits = self._reenact_to(generator, views[index], view_points[index], target_points[owner])

        def blend(x: torch.Tensor) -> torch.Tensor:
            weighted = x * weight.view(-1, *[1] * (x.dim() - 1))
            return torch.zeros(len(target), *x.shape[1:], dtype=x.dtype, device=x.device).index_add_(0, owner, weighted)

        return self._complete(generator, [blend(images[-1])], blend(seg_logits), target, extras={"views": used})

    # ---- losses ----------------------------------------------------------------------------------
    def perceptual(self, images: torch.Tensor, reference: torch.Tensor, roles: tuple[str, ...]
                   ) -> list[torch.Tensor]:
        """Per-sample FSGAN VGGLoss (level-weighted L1 of VGG maps) under each expert of `roles`."""
        distances = []
        for role in roles:
            expert = getattr(self.experts, role)
            with torch.no_grad():
                wanted = expert(reference)
            found = expert(images)
            weights = VGG_LOSS_WEIGHTS[-len(found):]
            distances.append(sum(w * (f - r).abs().flatten(1).mean(1) for w, f, r in zip(weights, found, wanted, strict=True)))
        return distances

    def reconstruction_terms(self, prefix: str, images: torch.Tensor, reference: torch.Tensor,
                             where: torch.Tensor | None, attribute: bool = True) -> dict[str, torch.Tensor]:
        """pix (L1), id (VGGFace2 VGG) and, if `attribute`, attr (CelebA VGG) of `images` against `reference`,
        averaged over the pairs `where` (all if None)."""
        roles = ("perceptual", "perceptual_attr") if attribute else ("perceptual",)
        per_sample = [(images - reference).abs().flatten(1).mean(1), *self.perceptual(images, reference, roles)]
        names = ("pix", "id", "attr")[: len(per_sample)]
        return {prefix + name: value.mean() if where is None else masked_mean(value, where)
                for name, value in zip(names, per_sample, strict=True)}

    def generator_losses(self, batch: Batch, out: SwapOutput) -> dict[str, torch.Tensor]:
        extras, target, same = out.extras, batch["target"], batch["same"]
        if self.stage == "segmentation":
            labels = (self.labels(batch["source"], self.parser_logits, batch),
                      self.labels(target, self.parser_logits, batch))
            return {"seg_ce": F.cross_entropy(extras["seg_logits"], torch.cat(labels))}
        prefix = STAGE_PREFIX[self.stage]
        adv = {prefix + "adv": self.adversarial.generator(self.discriminator(extras["adv_fake"]))}
        if self.stage == "reenactment":  # both paths end at the target's landmarks: both are scored on the target
            segment = functools.partial(self._run, self.generator, "segmentation")
            full = batch.get(FULL_RESOLUTION)  # progressive phase: the frozen Gs labels the full-resolution target
            labels = (self.labels(target, segment, batch) if full is None
                      else halve(self.labels(full["target"], segment, full)))

            def seg(logits: torch.Tensor) -> torch.Tensor:
                return masked_mean(F.cross_entropy(logits, labels, reduction="none").flatten(1).mean(1), same)

            return (self.reconstruction_terms("reenact_", out.swap, target, same)
                    | self.reconstruction_terms("reenact_step_", extras["two_step"], target, same, attribute=False)
                    | adv | {"reenact_seg": seg(extras["direct_seg"]), "reenact_step_seg": seg(extras["two_step_seg"])})
        if self.stage == "inpainting":
            return self.reconstruction_terms(prefix, extras["inpainted"], extras["inpainting_target"], same) | adv
        poisson = seamless_clone(extras["transfer"], target, extras["target_face"].to(target.dtype))
        return self.reconstruction_terms(prefix, out.swap, poisson, None) | adv

    def discriminator_losses(self, batch: Batch, out: SwapOutput) -> dict[str, torch.Tensor]:
        extras = out.extras
        return self.adversarial.discriminator(self.discriminator(extras["adv_real"]),
                                              self.discriminator(extras["adv_fake"]))

    def setup(self, stage: str) -> None:
        super().setup(stage)
        loaded = getattr(getattr(self.trainer, "datamodule", None), "batch_size", None) if self._trainer else None
        world = self.trainer.world_size if self._trainer else 1
        wanted = self.full_resolution_batch
        if stage == "fit" and wanted is not None and (wanted % world or (loaded is not None and wanted > loaded)):
            raise ValueError(f"model.full_resolution_batch={wanted} must divide over the {world} processes and "
                             f"not exceed data.batch_size={loaded} (the full-resolution steps train on part of "
                             "each loaded batch)")

    def training_step(self, batch: Batch, batch_idx: int) -> None:
        if self.stage == "inpainting":  # this step's hole draws: own per process and step, the same on resume
            draws = torch.rand(len(batch["target"]), HOLE_DRAWS, device=self.device,
                               generator=self.step_generator(batch_idx))
            batch = {**batch, "inpainting_hole_draws": draws}
        if self.global_step < self.progressive_steps:  # progressive 128 -> 256: half resolution first
            batch = half_resolution(batch) | {FULL_RESOLUTION: batch}
        else:
            if self.full_resolution_batch is not None:  # official: a smaller batch at full resolution
                keep = self.full_resolution_batch // self.trainer.world_size
                loaded = len(batch["target"])
                batch = {k: v[:keep] if torch.is_tensor(v) and v.dim() else v for k, v in batch.items()}
            if self.global_step == self.progressive_steps and not self._full_resolution_started:
                self.start_full_resolution(loaded / keep if self.full_resolution_batch is not None else 1.0)
        self._trained_side = batch["target"].shape[-1]
        super().training_step(batch, batch_idx)

    def start_full_resolution(self, batch_ratio: float = 1.0) -> None:
        """The 256 px phase as the official code starts it: new optimizers (no Adam moments) at the phase's learning
        rates, and their step decay restarted. `batch_ratio` (loaded pairs / pairs per step, full_resolution_batch):
        a StepLR's period in steps grows by it, so that it stays the same number of samples (official: StepLR
        counts epochs of a fixed sample count at either batch size)."""
        self._full_resolution_started = True
        schedulers = self.lr_schedulers() or []
        schedulers = schedulers if isinstance(schedulers, list) else [schedulers]
        for scheduler in schedulers:
            if hasattr(scheduler, "step_size"):
                scheduler.step_size = round(scheduler.step_size * batch_ratio)
        for key, optimizer in zip(("g", "d"), self._optimizer_pair(), strict=True):
            if optimizer is None or key not in self.full_resolution_lr:
                continue
            optimizer = getattr(optimizer, "optimizer", optimizer)
            optimizer.state.clear()
            lr = float(self.full_resolution_lr[key])
            for group in optimizer.param_groups:
                group["lr"] = group["initial_lr"] = lr
            for scheduler in schedulers:
                if scheduler.optimizer is optimizer:
                    scheduler.base_lrs = [lr] * len(optimizer.param_groups)
                    scheduler.last_epoch = 0
                    scheduler._last_lr = [lr] * len(optimizer.param_groups)
