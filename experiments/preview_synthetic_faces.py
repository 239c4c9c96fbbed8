"""Preview grid of SyntheticFaces: rows = identities, columns = image indices, landmarks as dots; masks below.

Usage: python experiments/preview_synthetic_faces.py [out.png] [--res 128] [--ids 6] [--cols 8] [--seed 0]
"""

from __future__ import annotations

import argparse

import numpy as np
import torch
from PIL import Image

from swaplab.data.synthetic_faces import SyntheticFaces


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("out", nargs="?", default="synthetic_faces_preview.png")
    ap.add_argument("--res", type=int, default=128)
    ap.add_argument("--ids", type=int, default=6)
    ap.add_argument("--cols", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-landmarks", action="store_true")
    a = ap.parse_args()
    gen = SyntheticFaces(resolution=a.res, seed=a.seed)
    ident = torch.arange(a.ids).repeat_interleave(a.cols)
    index = torch.arange(a.cols).repeat(a.ids)
    with torch.no_grad():
        out = gen(ident, index)
    img = ((out["image"].permute(0, 2, 3, 1) + 1) * 127.5).round().clamp(0, 255).byte().numpy().copy()
    masks = (out["mask"].numpy() * 120).astype(np.uint8)
    if not a.no_landmarks:
        lm = out["landmarks"].round().long().numpy()
        # jaw yellow, brows green, nose blue, eyes magenta, lips red
        groups = [((255, 255, 0), 17), ((0, 255, 0), 10), ((0, 160, 255), 9), ((255, 0, 255), 12),
                  ((255, 60, 60), 20)]
        colours = np.array([c for c, k in groups for _ in range(k)], dtype=np.uint8)
        rad = max(0, a.res // 160)
        for b in range(len(img)):
            for k, (x, y) in enumerate(lm[b]):
                if 0 <= x < a.res and 0 <= y < a.res:
                    img[b, max(0, y - rad):y + rad + 1, max(0, x - rad):x + rad + 1] = colours[k]
    r = a.res

    def tile(arr: np.ndarray) -> np.ndarray:
        grid = arr.reshape(a.ids, a.cols, r, r, *arr.shape[3:]).swapaxes(1, 2)
        return grid.reshape(a.ids * r, a.cols * r, *arr.shape[3:])

    faces, mgrid = tile(img), np.repeat(tile(masks)[..., None], 3, axis=2)
    sep = np.full((8, faces.shape[1], 3), 255, np.uint8)
    Image.fromarray(np.concatenate([faces, sep, mgrid], 0)).save(a.out)
    print(f"wrote {a.out} ({faces.shape[1]}x{2 * faces.shape[0] + 8})")


if __name__ == "__main__":
    main()
