"""Files made by `python -m swaplab.experts fetch --offline-set` (`make test` runs it first): where they are, and
real photos aligned to the canonical crop. Without them the tests that need them skip, or fail when
SWAPLAB_REQUIRE_FETCHED=1 (set by `make test`, so CI never silently skips them)."""

from __future__ import annotations

import os
from functools import cache
from pathlib import Path

import numpy as np
import pytest
import torch

ROOT = Path(__file__).resolve().parents[3]
WEIGHTS_DIR = Path(os.environ.get("SWAPLAB_WEIGHTS", ROOT / "weights"))
# full, unoccluded faces by person (face_recognition's test photos, skimage's astronaut, matplotlib's Grace Hopper)
PEOPLE = {"obama": ["obama", "obama2", "obama3"], "biden": ["biden"], "astronaut": ["astronaut"],
          "grace_hopper": ["grace_hopper"]}
PARTIAL = {"obama": ["obama_partial_face", "obama_partial_face2"]}  # cut-off faces of the same photos' person


def need(*relative: str) -> Path:
    """WEIGHTS_DIR when every file `relative` to it exists; otherwise skip (or fail under make test)."""
    missing = [r for r in relative if not (WEIGHTS_DIR / r).is_file()]
    if missing:
        message = (f"{missing} not in {WEIGHTS_DIR}: run `python -m swaplab.experts fetch --offline-set "
                   f"--weights-dir {WEIGHTS_DIR}` (make test does)")
        if os.environ.get("SWAPLAB_REQUIRE_FETCHED") == "1":
            pytest.fail(message)
        pytest.skip(message)
    return WEIGHTS_DIR


@cache
def aligned_photos() -> dict[str, torch.Tensor]:
    """Canonical 256 crops (1 x 3 x 256 x 256, [-1, 1]) of face_recognition's test photos and skimage's
    astronaut, aligned on MTCNN's five points (the detector that ships with facenet-pytorch)."""
    import matplotlib
    import skimage.data
    import skimage.io

    from swaplab.experts import MTCNNDetector
    from swaplab.faces.templates import align_faces

    shipped = {"astronaut": skimage.data.astronaut,
               "grace_hopper": lambda: skimage.io.imread(Path(matplotlib.get_data_path()) / "sample_data" /
                                                         "grace_hopper.jpg")}
    names = [n for group in (PEOPLE, PARTIAL) for ns in group.values() for n in ns]
    need(*(f"photos/{n}.jpg" for n in names if n not in shipped))
    detector = MTCNNDetector.build()
    out = {}
    for name in names:
        image = shipped[name]() if name in shipped else skimage.io.imread(WEIGHTS_DIR / "photos" / f"{name}.jpg")
        image = np.ascontiguousarray(image[..., :3])
        out[name] = align_faces(image, detector(image).landmarks[:1], size=256)
    return out
