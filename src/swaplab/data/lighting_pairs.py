"""Same-/different-illumination image pairs for the Fast Face-swap lighting network.

Both datasets serve dicts `image1`, `image2` (1 x R x R grayscale in [-1, 1]), `same` (bool: equal
lighting) and `index`, plus what they know of each side; served through `SwapDataModule` as any dataset.

Pairs always share the pose (as in the paper). A same-light pair of one subject in one pose would be the
very same Extended Yale B image (one image per subject, pose and illumination), and a network fed such
pairs learns "identical pixels" instead of lighting; so Yale pairs take two different subjects, and
synthetic pairs re-draw the non-lighting, non-pose factors (expression, gaze, and the identity unless
`same_identity_rate`), whatever the label, so that neither the label nor a shortcut is tied to identity.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import cv2
import numpy as np
import torch
from torch.utils.data import Dataset

from swaplab.data.synthetic import RenderedPairs
from swaplab.data.synthetic_faces import hash_uniform
from swaplab.nets.lighting import to_grayscale
from swaplab.runtime import get_logger

log = get_logger(__name__)

_PAIR_STREAM, _LIGHT_STREAM = 0x716E, 1 << 40  # hash stream of pair choices; image indices of spare lights


class SyntheticLightingPairs(RenderedPairs):
    """Pair i: face = image (i % images_per_identity) of identity (i // images_per_identity), rendered once
    as is and once as a second face (the same identity with probability `same_identity_rate`, else another
    one; new expression and gaze) with the first's pose, placement and background, under the same light
    (probability `same_light_rate`) or under another light (direction, ambient level and tint of the
    renderer's distribution, at least `min_light_angle` degrees away). Exact labels; deterministic by (seed, i).
    """

    def __init__(
        self,
        resolution: int = 64,
        num_identities: int = 1000,
        images_per_identity: int = 10,
        identity_offset: int = 0,  # first identity id (disjoint ranges give disjoint train/val people)
        same_light_rate: float = 0.5,
        same_identity_rate: float = 0.5,
        min_light_angle: float = 20.0,  # degrees between the two light directions of a different-light pair
        light_candidates: int = 8,  # spare lights drawn per pair; the first far enough is used
        seed: int = 0,
        **renderer_kwargs,  # SyntheticFaces options: supersample, max_yaw, ...
    ) -> None:
        super().__init__(resolution, num_identities, images_per_identity, identity_offset, seed,
                         {"same_light_rate": same_light_rate, "same_identity_rate": same_identity_rate},
                         **renderer_kwargs)
        self.same_light_rate, self.same_identity_rate = same_light_rate, same_identity_rate
        self.min_cos = float(np.cos(np.deg2rad(min_light_angle)))
        self.light_candidates = max(1, int(light_candidates))

    def pairs(self, index: torch.Tensor) -> dict[str, torch.Tensor]:
        """Identities, image indices and labels of pairs `index` (B,)."""
        n, per = self.num_identities, self.images_per_identity
        u = hash_uniform(self.seed, [index, _PAIR_STREAM], 4, index)
        id1, img1 = index // per, index % per
        same_id = u[:, 1] < self.same_identity_rate
        id2 = torch.where(same_id, id1, (id1 + 1 + (u[:, 2] * (n - 1)).long()) % n)
        img2 = (img1 + 1 + (u[:, 3] * max(per - 1, 1)).long()) % max(per, 2)  # never the first's image
        return {"identity1": id1 + self.identity_offset, "image_index1": img1,
                "identity2": id2 + self.identity_offset, "image_index2": img2,
                "same": u[:, 0] < self.same_light_rate, "same_identity": same_id}

    def _other_lights(self, index: torch.Tensor, identity: torch.Tensor, light: torch.Tensor) -> dict:
        """Per pair, a light from the renderer's distribution at least min_light_angle from `light`."""
        k = self.light_candidates
        spare = self.faces.sample(identity.repeat_interleave(k), _LIGHT_STREAM + index.repeat_interleave(k) * k
                                  + torch.arange(k).repeat(len(index)))
        cos = (spare["light"].view(-1, k, 3) * light[:, None]).sum(-1)
        far = cos <= self.min_cos
        pick = torch.where(far.any(1), far.float().argmax(1), cos.argmin(1))  # first far one, else the farthest
        rows = torch.arange(len(index)) * k + pick
        return {key: spare[key][rows] for key in ("light", "light_ambient", "light_tint")}

    def __getitems__(self, indices: list[int]) -> dict[str, torch.Tensor]:
        """A whole batch rendered in one vectorized call."""
        index = self.batch_index(indices)
        p, b = self.pairs(index), len(index)
        first = self.faces.sample(p["identity1"], p["image_index1"])
        second = self.faces.sample(p["identity2"], p["image_index2"])
        for key in ("pose", "translation", "scale", "background"):
            second[key] = first[key]
        other = self._other_lights(index, p["identity1"], first["light"])
        for key, value in other.items():
            keep = p["same"].view((-1,) + (1,) * (value.dim() - 1))
            second[key] = torch.where(keep, first[key], value)
        images = to_grayscale(self.faces.render({k: torch.cat([first[k], second[k]]) for k in first})["image"])
        batch = {"index": index, "image1": images[:b], "image2": images[b:], **p}
        for key in ("light", "light_ambient", "pose"):
            batch[f"{key}1"], batch[f"{key}2"] = first[key], second[key]
        return batch

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        return {k: v[0] for k, v in self.__getitems__([i]).items()}


_YALE_NAME = re.compile(r"^yaleB(\d+)_P(\d+)A([+-]\d+)E([+-]\d+)\.pgm$", re.IGNORECASE)


def lighting_pairs(faces: RenderedPairs, same_light_rate: float = 0.5, min_light_angle: float = 20.0,
                   light_candidates: int = 8) -> SyntheticLightingPairs:
    """Same / different illumination pairs of the procedural faces that `faces` (data=synthetic's dataset) draws
    from: its resolution, identities, images per identity, identity offset, seed, renderer options and
    `same_identity_rate`. A swap set's `same_image_rate` does not apply (a lighting pair's second face is always
    re-drawn). The lighting experiment's `data.wrap` (conf/experiment/lighting_net.yaml)."""
    if not isinstance(faces, RenderedPairs):
        raise TypeError(f"lighting pairs are drawn from procedural faces (data=synthetic), not from "
                        f"{type(faces).__name__}; Extended Yale B: experiment=lighting_net_paper")
    return SyntheticLightingPairs(faces.resolution, faces.num_identities, faces.images_per_identity,
                                  faces.identity_offset, same_light_rate, getattr(faces, "same_identity_rate", 0.5),
                                  min_light_angle, light_candidates, faces.seed, **faces.renderer_kwargs)


class ExtendedYaleBPairs(Dataset):
    """Pairs of Extended Yale B images with the same pose and two different subjects, under the same
    illumination (probability `same_light_rate`) or different ones (azimuth A / elevation E differ).

    Reads the CroppedYale / ExtendedYaleB layout: `<root>/**/yaleBNN_PppA+aaaE+ee.pgm` (subject NN, pose pp,
    light azimuth and elevation in degrees from the file name). `*_Ambient.pgm` images (no directed light),
    other names and unreadable files are skipped and counted in `skipped`. Images are centre-cropped to a
    square and resized to `resolution` once, at construction. Deterministic by (seed, i).
    """

    def __init__(
        self,
        root: str | Path,
        resolution: int = 128,
        num_pairs: int = 20000,  # dataset length (pairs are drawn, by index, from all valid combinations)
        same_light_rate: float = 0.5,
        subjects: Sequence[int] | None = None,  # keep only these subject numbers (e.g. a validation split)
        exclude_subjects: Sequence[int] = (),
        seed: int = 0,
    ) -> None:
        root = Path(root)
        if not root.is_dir():
            raise FileNotFoundError(f"Extended Yale B folder {root} does not exist (expected CroppedYale/yaleBNN/*.pgm)")
        self.resolution, self.num_pairs, self.same_light_rate, self.seed = resolution, num_pairs, same_light_rate, seed
        self.skipped = {"ambient": 0, "unreadable": 0, "other_name": 0}
        keep = None if subjects is None else {int(s) for s in subjects}
        drop = {int(s) for s in exclude_subjects}
        images, meta, self.files = [], [], []
        for path in sorted(root.rglob("*.pgm")):
            if path.stem.lower().endswith("_ambient"):
                self.skipped["ambient"] += 1
                continue
            match = _YALE_NAME.match(path.name)
            if match is None:
                self.skipped["other_name"] += 1
                continue
            subject, pose, azimuth, elevation = (int(g) for g in match.groups())
            if (keep is not None and subject not in keep) or subject in drop:
                continue
            image = cv2.imread(str(path), cv2.IMREAD_GRAYSCALE)
            if image is None or image.size == 0:
                self.skipped["unreadable"] += 1
                continue
            images.append(self._square(image, resolution))
            meta.append((subject, pose, azimuth, elevation))
            self.files.append(path)
        if any(self.skipped.values()):
            log.warning("Extended Yale B at %s: skipped %s", root, self.skipped)
        if not images:
            raise ValueError(f"no usable Extended Yale B images under {root} (skipped {self.skipped})")
        self.images = torch.from_numpy(np.stack(images))
        self.subject, self.pose, self.azimuth, self.elevation = np.asarray(meta, dtype=np.int64).T
        self.light = self.azimuth * 1000 + self.elevation  # one id per illumination condition
        self._same_anchors = np.flatnonzero([self._partners(i, True).size > 0 for i in range(len(images))])
        self._diff_anchors = np.flatnonzero([self._partners(i, False).size > 0 for i in range(len(images))])
        for name, anchors, rate in (("same", self._same_anchors, same_light_rate),
                                    ("different", self._diff_anchors, 1 - same_light_rate)):
            if rate > 0 and anchors.size == 0:
                raise ValueError(f"no {name}-illumination pairs of two subjects in one pose under {root}")

    @staticmethod
    def _square(image: np.ndarray, size: int) -> np.ndarray:
        h, w = image.shape
        s = min(h, w)
        top, left = (h - s) // 2, (w - s) // 2
        return cv2.resize(image[top:top + s, left:left + s], (size, size), interpolation=cv2.INTER_AREA)

    def _partners(self, i: int, same: bool) -> np.ndarray:
        ok = (self.pose == self.pose[i]) & (self.subject != self.subject[i])
        return np.flatnonzero(ok & ((self.light == self.light[i]) == same))

    def __len__(self) -> int:
        return self.num_pairs

    def pair(self, i: int) -> tuple[int, int, bool]:
        """Image indices (first, second) and the label of pair i."""
        if not 0 <= i < self.num_pairs:
            raise IndexError(f"pair index {i} out of range [0, {self.num_pairs})")
        rng = np.random.default_rng([self.seed, i])
        same = bool(rng.random() < self.same_light_rate)
        anchors = self._same_anchors if same else self._diff_anchors
        first = int(anchors[rng.integers(anchors.size)])
        partners = self._partners(first, same)
        return first, int(partners[rng.integers(partners.size)]), same

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        a, b, same = self.pair(int(i))
        image = self.images[[a, b]].float().div_(127.5).sub_(1).unsqueeze(1)
        out = {"index": torch.tensor(int(i)), "image1": image[0], "image2": image[1], "same": torch.tensor(same),
               "pose": torch.tensor(int(self.pose[a]))}
        for k, j in (("1", a), ("2", b)):
            out[f"subject{k}"] = torch.tensor(int(self.subject[j]))
            out[f"light{k}"] = torch.tensor([float(self.azimuth[j]), float(self.elevation[j])])
        return out
