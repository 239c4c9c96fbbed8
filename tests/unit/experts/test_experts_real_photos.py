"""Experts chained on a real photo (skimage's astronaut): detect -> align -> landmarks -> PnP head pose."""

from __future__ import annotations

import numpy as np
import pytest
import skimage.data
import torch

from swaplab.experts import CropLandmarkPose, DlibDetector, DlibLandmarks, LandmarkPose, MTCNNDetector
from swaplab.faces.templates import align_faces


@pytest.fixture(scope="module")
def astronaut():
    return skimage.data.astronaut()


def test_pnp_pose_of_the_astronaut_is_near_frontal(astronaut):
    boxes = DlibDetector.build(upsample=0)(astronaut).boxes
    points = DlibLandmarks.build()(astronaut, boxes[:1])
    pose = LandmarkPose.build()(torch.from_numpy(points))[0]
    assert pose.abs().max() < 30, pose

    mirrored = np.ascontiguousarray(astronaut[:, ::-1])
    flipped = DlibLandmarks.build()(mirrored, DlibDetector.build(upsample=0)(mirrored).boxes[:1])
    pose_mirrored = LandmarkPose.build()(torch.from_numpy(flipped))[0]
    # A mirror image turns the head the other way: yaw and roll change sign, pitch stays.
    assert torch.allclose(pose_mirrored * torch.tensor([-1.0, 1.0, -1.0]), pose, atol=3.0), (pose, pose_mirrored)


def test_crop_pose_expert_on_aligned_crops_agrees_with_the_full_frame(astronaut):
    detections = MTCNNDetector.build()(astronaut)
    crops = align_faces(astronaut, detections.landmarks[:1], size=256)
    expert = CropLandmarkPose.build()
    crop_pose = expert(crops)
    assert crop_pose.shape == (1, 3) and crop_pose.abs().max() < 30
    # Rolling the crop by a known angle shows up as roll (counter-clockwise positive), yaw/pitch unchanged.
    import cv2

    frame = ((crops[0].permute(1, 2, 0) + 1) * 127.5).round().byte().numpy()
    turned = cv2.warpAffine(frame, cv2.getRotationMatrix2D((128, 128), 10.0, 1.0), (256, 256),
                            borderMode=cv2.BORDER_REPLICATE)
    turned_pose = expert(torch.from_numpy(turned).permute(2, 0, 1)[None].float() / 127.5 - 1)
    assert abs((turned_pose - crop_pose)[0, 2].item() - 10.0) < 3.0, (crop_pose, turned_pose)
    assert (turned_pose - crop_pose)[0, :2].abs().max() < 3.0
