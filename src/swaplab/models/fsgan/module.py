"""FSGAN (Nirkin et al. ICCV 2019): subject-agnostic reenactment (Gr), segmentation (Gs), inpainting (Gc) and
blending (Gb), trained one stage at a time in the order segmentation -> reenactment -> inpainting -> blending.

`stage` picks the generator that trains; the earlier stages' generators come from `predecessor_ckpt` (the
previous stage's checkpoint, which must record them as trained: swaplab.models.stages) and stay frozen, so the
last stage's checkpoint holds the whole pipeline. Terms (weights in
conf/model/fsgan.yaml, one flat map for all stages; official: rec = 0.1 pix + 0.5 id + 0.5 attr, seg 0.1,
adv 0.001 with LSGAN and a multi-scale PatchGAN):
  segmentation: seg_ce = cross-entropy of Gs(x) against the 3-class labels of source and target.
  reenactment:  the landmarks and Euler angles are interpolated from source to target over the steps; each step
                re-renders the previous output under that step's landmark heatmaps; reenact_pix / _id / _attr =
                L1 / VGGFace2-VGG / CelebA-VGG distance to the target averaged over every step, on same-identity
                pairs; reenact_seg = cross-entropy of Gr's segmentation; reenact_adv on the last step.
  inpainting:   Gc fills the reenacted face (random holes cut in training) inside the target's face mask;
                inpaint_* against the target's own face (same-identity pairs); the D sees that face as real.
  blending:     Gb blends the inpainted face transferred into the target; blend_* against the Poisson blending
                (cv2.seamlessClone NORMAL_CLONE) of that transfer into the target, on every pair.
Landmarks, poses and segmentation labels: the batch's ground truth `<side>_landmarks` / `<side>_pose` /
`<side>_mask` when the batch has them (data=synthetic); else the `landmarks` (dlib 68), `pose` (Hopenet) experts,
and for labels Gs (the parser expert for Gs's own training labels).
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
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
    random_holes,
    transfer,
)
from swaplab.models.fsgan.heatmaps import interpolate_views, landmark_heatmaps
from swaplab.models.stages import load_predecessors, self_contained_config


def _optimize_only(optimizer: Callable[..., torch.optim.Optimizer], module: nn.Module, _params: Any
                   ) -> torch.optim.Optimizer:
    """The generator optimizer over the training stage's network alone (the frozen ones have no state)."""
    return optimizer(module.parameters())


STAGE_PREFIX = {"segmentation": "seg_", "reenactment": "reenact_", "inpainting": "inpaint_", "blending": "blend_"}
HOW_TO_CHAIN = (f"train the FSGAN stages in order ({' -> '.join(STAGES)}) and pass the previous stage's checkpoint, "
                "e.g. model.predecessor_ckpt=<run dir>/checkpoints/last.ckpt")


class FSGAN(SwapModule):
    generator_terms = ("seg_ce", "reenact_pix", "reenact_id", "reenact_attr", "reenact_seg", "reenact_adv",
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
        num_steps: int = 2,                  # reenactment steps from the source's view to the target's
        max_step_angle: float | None = None,  # if set: ceil(largest angle change / this) steps, at most num_steps
        heatmap_sigma: float = 2.0,          # landmark Gaussian std in pixels of a 256 crop (scaled with the side)
        progressive_steps: int = 0,          # first steps at half resolution, global U-Net only (128 -> 256)
        **base_kwargs: Any,
    ) -> None:
        if stage not in STAGES:
            raise ValueError(f"FSGAN stage must be one of {STAGES}, got {stage!r}")
        if num_steps < 1 or heatmap_sigma <= 0 or progressive_steps < 0:
            raise ValueError(f"need num_steps >= 1, heatmap_sigma > 0, progressive_steps >= 0; got {num_steps}, "
                             f"{heatmap_sigma}, {progressive_steps}")
        if max_step_angle is not None and max_step_angle <= 0:
            raise ValueError(f"max_step_angle must be > 0 or null, got {max_step_angle}")
        super().__init__(generator=generator, discriminator=None if stage == "segmentation" else discriminator,
                         **base_kwargs)
        self.stage, self.num_steps, self.max_step_angle = stage, num_steps, max_step_angle
        self.heatmap_sigma, self.progressive_steps = heatmap_sigma, progressive_steps
        earlier = STAGES[: STAGES.index(stage)]
        self.predecessors = load_predecessors(f"FSGAN stage {stage}", earlier, predecessor_ckpt,
                                              allow_random_predecessors, predecessor_record, HOW_TO_CHAIN)
        for name in earlier:
            self.predecessors.load_into(name, generator[name])
        self.predecessors.release()
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
        self_contained_config(checkpoint["swaplab"], self.predecessors)

    def train(self, mode: bool = True) -> FSGAN:
        super().train(mode)
        for net in (self.generator, self.generator_ema):
            for name in STAGES:
                if net is not None and name != self.stage:
                    net[name].eval()  # frozen: BatchNorm keeps its trained statistics
        return self

    # ---- the batch's ground truth, else the experts ---------------------------------------------
    @staticmethod
    def _ground_truth(images: torch.Tensor, key: str, truth: Batch | None) -> torch.Tensor | None:
        """`<side>_<key>` of the batch `truth` when `images` is that batch's `<side>` tensor itself."""
        for side in ("source", "target"):
            if truth is not None and truth.get(side) is images and f"{side}_{key}" in truth:
                return truth[f"{side}_{key}"]
        return None

    def landmarks(self, images: torch.Tensor, truth: Batch | None = None) -> torch.Tensor:
        found = self._ground_truth(images, "landmarks", truth)
        return found.to(images.dtype) if found is not None else dlib_landmarks(self.experts.landmarks, images)

    @torch.no_grad()
    def pose(self, images: torch.Tensor, truth: Batch | None = None) -> torch.Tensor:
        found = self._ground_truth(images, "pose", truth)
        return found.to(images.dtype) if found is not None else self.experts.pose(images)

    @torch.no_grad()
    def labels(self, images: torch.Tensor, segmenter: Callable[[torch.Tensor], torch.Tensor],
               truth: Batch | None = None) -> torch.Tensor:
        """B x H x W labels (background / face / hair): the batch's `*_mask`, else segmenter(images) arg-max."""
        found = self._ground_truth(images, "mask", truth)
        return found.long() if found is not None else segmenter(images).argmax(1)

    def parser_logits(self, images: torch.Tensor) -> torch.Tensor:
        return self.experts.parsing.group_masks(self.experts.parsing(images))

    # ---- the stages ------------------------------------------------------------------------------
    def _run(self, generator: FSGANGenerators, stage: str, x: torch.Tensor, global_only: bool = False
             ) -> torch.Tensor:
        """One generator; a frozen one runs without a graph, the training one (`global_only`: the progressive
        phase's global U-Net alone) with one."""
        if stage != self.stage or not torch.is_grad_enabled():
            with torch.no_grad():
                return generator[stage](x)
        return generator[stage](x, global_only=True) if global_only else generator[stage](x)

    def steps_for(self, source_pose: torch.Tensor, target_pose: torch.Tensor) -> int:
        if self.max_step_angle is None:
            return self.num_steps
        largest = float((target_pose - source_pose).abs().max()) if source_pose.numel() else 0.0
        return max(1, min(self.num_steps, math.ceil(largest / self.max_step_angle)))

    def reenact(self, generator: FSGANGenerators, source: torch.Tensor, target: torch.Tensor,
                truth: Batch | None = None, global_only: bool = False
                ) -> tuple[list[torch.Tensor], torch.Tensor, torch.Tensor]:
        """Stepwise reenactment: (the image of every step, Gr's segmentation logits of the last, angle path)."""
        source_pose, target_pose = self.pose(source, truth), self.pose(target, truth)
        steps = self.steps_for(source_pose, target_pose)
        points = interpolate_views(self.landmarks(source, truth), self.landmarks(target, truth), steps)
        angles = interpolate_views(source_pose, target_pose, steps)
        sigma = self.heatmap_sigma * source.shape[-1] / 256
        image, images = source, []
        for j in range(1, steps + 1):
            heatmaps = landmark_heatmaps(points[j], source.shape[-1], sigma)
            out = self._run(generator, "reenactment", torch.cat([image, heatmaps], dim=1), global_only)
            image, seg_logits = out[:, :3], out[:, 3:]
            images.append(image)
        return images, seg_logits, angles

    def generate(self, source: torch.Tensor, target: torch.Tensor, generator: nn.Module) -> SwapOutput:
        return self.swap_path(source, target, generator)

    def generate_batch(self, batch: Batch, generator: nn.Module) -> SwapOutput:
        """With the batch's ground truth; the progressive phase trains the global U-Net alone."""
        progressive = self.training and self.global_step < self.progressive_steps
        return self.swap_path(batch["source"], batch["target"], generator, batch, progressive)

    def swap_path(self, source: torch.Tensor, target: torch.Tensor, generator: nn.Module,
                  truth: Batch | None = None, global_only: bool = False) -> SwapOutput:
        """The pipeline up to this model's stage: Gs alone (no swap: returns the target), reenactment (the
        reenacted source), inpainting (the completed face pasted by the target's face mask) or blending.
        `truth`: a batch whose ground truth (landmarks, pose, masks) replaces the experts' estimates."""
        if self.stage == "segmentation":
            logits = self._run(generator, "segmentation", torch.cat([source, target]), global_only)
            return SwapOutput(target, {"seg_logits": logits})
        images, seg_logits, angles = self.reenact(generator, source, target, truth, global_only)
        extras: dict[str, Any] = {"steps": images, "seg_logits": seg_logits, "angles": angles}
        if self.stage == "reenactment":
            return SwapOutput(images[-1], extras | {"adv_fake": images[-1], "adv_real": target})
        segment = generator.segmentation
        reenacted = images[-1].detach()
        reenacted_face = face_label_mask(self.labels(reenacted, segment))
        target_face = face_label_mask(self.labels(target, segment, truth))
        if self.training and self.stage == "inpainting":
            reenacted_face &= ~random_holes(reenacted_face)
        holed = reenacted.masked_fill(~reenacted_face, -1.0)
        inpainted = self._run(generator, "inpainting", torch.cat([holed, target_face.to(holed.dtype)], dim=1),
                              global_only)
        swapped = transfer(inpainted, target, target_face)
        extras |= {"inpainted": inpainted, "target_face": target_face}
        if self.stage == "inpainting":
            real = target.masked_fill(~target_face, -1.0)
            return SwapOutput(swapped, extras | {"adv_fake": inpainted, "adv_real": real, "inpainting_target": real})
        swapped = swapped.detach()
        blended = self._run(generator, "blending", torch.cat([swapped, target, target_face.to(target.dtype)], dim=1),
                            global_only)
        return SwapOutput(blended, extras | {"transfer": swapped, "adv_fake": blended, "adv_real": target})

    # ---- losses ----------------------------------------------------------------------------------
    def perceptual(self, images: torch.Tensor, reference: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Per-sample FSGAN VGGLoss (level-weighted L1 of VGG maps) of the identity and the attribute VGG."""
        distances = []
        for expert in (self.experts.perceptual, self.experts.perceptual_attr):
            with torch.no_grad():
                wanted = expert(reference)
            found = expert(images)
            weights = VGG_LOSS_WEIGHTS[-len(found):]
            distances.append(sum(w * (f - r).abs().flatten(1).mean(1) for w, f, r in zip(weights, found, wanted, strict=True)))
        return distances[0], distances[1]

    def reconstruction_terms(self, prefix: str, images: torch.Tensor, reference: torch.Tensor,
                             where: torch.Tensor | None, repeats: int = 1) -> dict[str, torch.Tensor]:
        """pix / id / attr of `images` (repeats x B stacked) against `reference` (B), averaged over repeats."""
        reference_all = reference.repeat(repeats, 1, 1, 1)
        pix = (images - reference_all).abs().flatten(1).mean(1)
        identity, attribute = self.perceptual(images, reference_all)
        terms = {"pix": pix, "id": identity, "attr": attribute}
        out = {}
        for name, per_sample in terms.items():
            per_sample = per_sample.view(repeats, -1).mean(0)
            out[prefix + name] = per_sample.mean() if where is None else masked_mean(per_sample, where)
        return out

    def generator_losses(self, batch: Batch, out: SwapOutput) -> dict[str, torch.Tensor]:
        extras, target, same = out.extras, batch["target"], batch["same"]
        if self.stage == "segmentation":
            labels = (self.labels(batch["source"], self.parser_logits, batch),
                      self.labels(target, self.parser_logits, batch))
            return {"seg_ce": F.cross_entropy(extras["seg_logits"], torch.cat(labels))}
        prefix = STAGE_PREFIX[self.stage]
        adv = {prefix + "adv": self.adversarial.generator(self.discriminator(extras["adv_fake"]))}
        if self.stage == "reenactment":
            steps = extras["steps"]
            labels = self.labels(target, self.generator.segmentation, batch)
            seg = F.cross_entropy(extras["seg_logits"], labels, reduction="none").flatten(1).mean(1)
            return self.reconstruction_terms(prefix, torch.cat(steps), target, same, len(steps)) | adv | {
                "reenact_seg": masked_mean(seg, same)}
        if self.stage == "inpainting":
            return self.reconstruction_terms(prefix, extras["inpainted"], extras["inpainting_target"], same) | adv
        poisson = seamless_clone(extras["transfer"], target, extras["target_face"].to(target.dtype))
        return self.reconstruction_terms(prefix, out.swap, poisson, None) | adv

    def discriminator_losses(self, batch: Batch, out: SwapOutput) -> dict[str, torch.Tensor]:
        extras = out.extras
        return self.adversarial.discriminator(self.discriminator(extras["adv_real"]),
                                              self.discriminator(extras["adv_fake"]))

    def training_step(self, batch: Batch, batch_idx: int) -> None:
        if self.global_step < self.progressive_steps:  # progressive 128 -> 256: half resolution first
            batch = half_resolution(batch)
        super().training_step(batch, batch_idx)
