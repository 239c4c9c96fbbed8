"""Fast Face-swap style sets from raw photos of one person: detected, aligned by 68 points, faceless photos
skipped and counted (`python -m swaplab.data.style_sets` and `FolderStyleSet`)."""

from __future__ import annotations

import json

import cv2
import numpy as np
import pytest
from skimage.data import astronaut, camera, coffee

from swaplab.data.style_sets import FolderStyleSet, face_experts, main
from swaplab.faces.templates import FRONTAL, get_template

pytestmark = pytest.mark.usefixtures("single_thread")


def write(path, rgb: np.ndarray) -> None:
    cv2.imwrite(str(path), cv2.cvtColor(rgb, cv2.COLOR_RGB2BGR))


def test_raw_photos_become_an_aligned_style_folder(tmp_path, caplog):
    photos = tmp_path / "photos"
    (photos / "trip").mkdir(parents=True)
    write(photos / "astronaut.png", astronaut())
    corner = np.full((700, 900, 3), 40, np.uint8)
    corner[380:636, 620:876] = cv2.resize(astronaut()[:400, 60:460], (256, 256), interpolation=cv2.INTER_AREA)
    write(photos / "trip" / "far_corner.jpg", corner)  # a small face far from the centre of a wide photo
    write(photos / "cameraman.png", np.repeat(camera()[..., None], 3, -1))
    write(photos / "cup.png", coffee())
    (photos / "broken.jpg").write_bytes(b"\xff\xd8\xff not a jpeg")

    summary = main([str(photos), str(tmp_path / "style"), "--size", "128"])
    assert summary["photos"] == 5 and summary["written"] == 3
    assert summary["skipped"] == {"no face": 1, "unreadable image (UnidentifiedImageError)": 1}
    assert json.loads((tmp_path / "style" / "summary.json").read_text()) == summary
    written = sorted(p.relative_to(tmp_path / "style").as_posix() for p in (tmp_path / "style").rglob("*.png"))
    assert written == ["astronaut.png", "cameraman.png", "trip/far_corner.png"]

    detector, landmarks = face_experts()
    reference = get_template(FRONTAL, 128).reference
    for name in written:  # each crop's own 68 points sit near the frontal reference (misframed: 20+ px off)
        crop = cv2.cvtColor(cv2.imread(str(tmp_path / "style" / name)), cv2.COLOR_BGR2RGB)
        found = detector(crop)
        points = landmarks(crop, found.boxes[:1])[0]
        assert np.abs(points - reference).mean() < 0.05 * 128, name  # the 3/4 cameraman: 3.3 px

    style = FolderStyleSet(photos, 32, detector=detector, landmarks=landmarks).load()
    assert style.shape == (3, 3, 32, 32) and "3 of 5 photos used" in caplog.text
