"""3DMM expert (Deep3DFaceRecon R-Net + Basel Face Model) and the landmark PnP head-pose estimator."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy.io import savemat
from torch import nn
from torchvision.models import resnet50

from swaplab.data.synthetic_faces import SyntheticFaces
from swaplab.errors import MissingWeightsError
from swaplab.experts.bfm import BFM, FaceCoefficients, shape_distance
from swaplab.experts.face3d import FaceReconstructor, ReconNet
from swaplab.experts.pnp_pose import MEAN_FACE_68, LandmarkPose

HEADS = (80, 64, 80, 3, 27, 2, 1)


# ----------------------------------------------------------------------------------------- Deep3DFaceRecon

def _official_checkpoint(path) -> tuple[nn.Module, nn.ModuleList]:
    """An epoch_20.pth-like file: {'net_recon': ReconNetWrapper state dict, 'opt_00', 'sched_00'}, built from an
    independent torchvision ResNet-50 and 1x1 convs with random weights and BatchNorm statistics."""
    backbone, heads = resnet50(weights=None).eval(), nn.ModuleList(nn.Conv2d(2048, n, 1) for n in HEADS)
    for m in backbone.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.normal_(0, 0.1)
            m.running_var.uniform_(0.5, 2.0)
            m.weight.data.uniform_(0.5, 1.5)
            m.bias.data.normal_(0, 0.1)
    for head in heads:
        head.weight.data.normal_(0, 0.02)
        head.bias.data.normal_(0, 0.1)
    state = {f"backbone.{k}": v for k, v in backbone.state_dict().items() if not k.startswith("fc.")}
    state.update({f"final_layers.{k}": v for k, v in heads.state_dict().items()})
    optimizer = torch.optim.Adam(heads.parameters(), lr=1e-4)
    sum(h.weight.sum() for h in heads).backward()
    optimizer.step()
    scheduler = torch.optim.lr_scheduler.StepLR(optimizer, step_size=10, gamma=0.2)
    torch.save({"net_recon": state, "opt_00": optimizer.state_dict(), "sched_00": scheduler.state_dict()}, path)
    return backbone, heads


def _reference_coefficients(backbone: nn.Module, heads: nn.ModuleList, x: torch.Tensor) -> torch.Tensor:
    b = backbone
    with torch.no_grad():
        h = b.maxpool(b.relu(b.bn1(b.conv1(x))))
        h = b.avgpool(b.layer4(b.layer3(b.layer2(b.layer1(h)))))
        return torch.cat([head(h) for head in heads], 1).flatten(1)


def test_recon_net_state_dict_is_the_official_net_recon_layout():
    keys = ReconNet().state_dict()
    reference = {f"backbone.{k}": v.shape for k, v in resnet50(weights=None).state_dict().items()
                 if not k.startswith("fc.")}
    assert {k: v.shape for k, v in keys.items() if k.startswith("backbone.")} == reference
    heads = {k: tuple(v.shape) for k, v in keys.items() if k.startswith("final_layers.")}
    assert heads == {**{f"final_layers.{i}.weight": (n, 2048, 1, 1) for i, n in enumerate(HEADS)},
                     **{f"final_layers.{i}.bias": (n,) for i, n in enumerate(HEADS)}}


def test_face_reconstructor_loads_official_checkpoint_and_matches_reference(tmp_path):
    path = tmp_path / "epoch_20.pth"
    backbone, heads = _official_checkpoint(path)
    expert = FaceReconstructor.build(weights="pretrained", path=str(path), input_size=64)
    assert expert.weights == str(path)
    images = torch.rand(2, 3, 96, 96) * 2 - 1  # canonical crop in [-1, 1]; the whole crop is resized to 64
    x = F.interpolate((images + 1) / 2, size=(64, 64), mode="bilinear", align_corners=False, antialias=True)
    expected = _reference_coefficients(backbone, heads, x)
    coeffs = expert(images)
    assert torch.allclose(coeffs.to_vector(), expected, atol=1e-4, rtol=1e-4)
    sizes = {k: tuple(getattr(coeffs, k).shape) for k in ("id", "exp", "tex", "angle", "gamma", "trans")}
    assert sizes == {"id": (2, 80), "exp": (2, 64), "tex": (2, 80), "angle": (2, 3), "gamma": (2, 27),
                     "trans": (2, 3)}
    assert torch.allclose(coeffs.trans, expected[:, 254:], atol=1e-4, rtol=1e-4)  # (tx, ty) head, then tz
    assert torch.allclose(coeffs.angle, expected[:, 224:227], atol=1e-4, rtol=1e-4)


def test_checkpoint_without_net_recon_is_refused(tmp_path):
    path = tmp_path / "epoch_20.pth"
    torch.save({"backbone.conv1.weight": torch.zeros(1)}, path)
    with pytest.raises(KeyError, match="net_recon"):
        FaceReconstructor.build(weights="pretrained", path=str(path), layers=(1, 1, 1, 1))


def test_the_expert_is_not_checkpointed_and_the_shape_distance_counts_all_68_landmarks():
    expert = FaceReconstructor.build(layers=(1, 1, 1, 1), input_size=32, bfm="synthetic")
    assert not hasattr(expert, "shape_loss")  # one definition of HifiFace's shape term: the model's
    lm = torch.rand(2, 68, 2) * 224
    nose = lm.clone()
    nose[:, 30, 0] += 68.0  # a point off the jaw line moves: the paper's loss sees it (mean over 68 points)
    assert torch.allclose(shape_distance(nose, lm), torch.full((2,), 1.0))
    holder = nn.Sequential(nn.Linear(2, 2))
    holder.expert = expert
    assert all(k.startswith("0.") for k in holder.state_dict())  # neither the net nor the BFM is checkpointed


# --------------------------------------------------------------------------------------------------- BFM

@pytest.fixture
def tiny_bfm_mat(tmp_path):
    """BFM_model_front.mat with the official field names and layout, 90 vertices."""
    rng = np.random.default_rng(0)
    n = 90
    mean = rng.normal(0, 0.5, (n, 3)) + np.array([0.1, -0.2, 0.3])
    keypoints = rng.permutation(n)[:68] + 1  # 1-based, (68, 1) as in facemodel_info.mat
    fields = {"meanshape": mean.reshape(1, -1), "idBase": rng.normal(0, 0.01, (3 * n, 80)),
              "exBase": rng.normal(0, 0.01, (3 * n, 64)), "meantex": rng.uniform(0, 255, (1, 3 * n)),
              "texBase": rng.normal(0, 1, (3 * n, 80)), "tri": rng.integers(1, n + 1, (40, 3)),
              "point_buf": rng.integers(1, 41, (n, 8)), "keypoints": keypoints.reshape(68, 1).astype(np.float64),
              "frontmask2_idx": np.arange(1, 31).reshape(-1, 1), "skinmask": rng.integers(0, 2, (1, n)),
              "tri_mask2": rng.integers(1, n + 1, (20, 3))}
    path = tmp_path / "BFM_model_front.mat"
    savemat(path, fields)
    return path, fields


def _project(points: torch.Tensor, focal: float = 1015.0, center: float = 112.0, dist: float = 10.0):
    depth = dist - points[..., 2]
    return torch.stack([focal * points[..., 0] / depth + center,
                        2 * center - 1 - (focal * points[..., 1] / depth + center)], -1)


def test_bfm_loads_the_official_mat_and_zero_coefficients_give_the_recentred_mean(tiny_bfm_mat):
    path, fields = tiny_bfm_mat
    bfm = BFM.build(path=str(path))
    mean = torch.tensor(fields["meanshape"].reshape(-1, 3), dtype=torch.float32)
    mean = mean - mean.mean(0)
    assert torch.equal(bfm.keypoints, torch.tensor(fields["keypoints"].reshape(-1) - 1, dtype=torch.long))
    zero = FaceCoefficients.zeros(2)
    assert torch.allclose(bfm.vertices(zero), mean.expand(2, -1, -1), atol=1e-6)
    assert torch.allclose(bfm.landmarks(zero), _project(mean[bfm.keypoints]).expand(2, -1, -1), atol=1e-4)
    coeffs = FaceCoefficients.zeros(1)
    coeffs.id[0, 3], coeffs.exp[0, 5] = 2.0, -1.0
    expected = mean + 2.0 * torch.tensor(fields["idBase"][:, 3].reshape(-1, 3), dtype=torch.float32) \
        - torch.tensor(fields["exBase"][:, 5].reshape(-1, 3), dtype=torch.float32)
    assert torch.allclose(bfm.vertices(coeffs)[0], expected, atol=1e-5)
    assert bfm.state_dict() == {}  # buffers move with the owner but never enter its checkpoint


def test_bfm_rotation_follows_deep3dfacerecon_and_projection_is_known():
    angles = torch.randn(4, 3)
    x, y, z = angles.unbind(-1)
    one, zero = torch.ones(4), torch.zeros(4)
    rx = torch.stack([one, zero, zero, zero, x.cos(), -x.sin(), zero, x.sin(), x.cos()], -1).view(4, 3, 3)
    ry = torch.stack([y.cos(), zero, y.sin(), zero, one, zero, -y.sin(), zero, y.cos()], -1).view(4, 3, 3)
    rz = torch.stack([z.cos(), -z.sin(), zero, z.sin(), z.cos(), zero, zero, zero, one], -1).view(4, 3, 3)
    pts = torch.randn(4, 5, 3)
    official = pts @ (rz @ ry @ rx).permute(0, 2, 1)  # their compute_rotation + transform, row vectors
    bfm = BFM(torch.tensor([[0.0, 0, 0], [1, 0, 0]]), torch.zeros(6, 80), torch.zeros(6, 64),
              torch.tensor([0, 1] * 34), recenter=False)
    assert torch.allclose(bfm.transform(pts, angles, torch.zeros(4, 3)), official, atol=1e-5)
    theta = 0.3
    coeffs = FaceCoefficients.zeros(1)
    coeffs.angle[0, 1] = theta  # pure yaw: (1, 0, 0) -> (cos, 0, -sin)
    moved = bfm.keypoints_3d(coeffs)[0, 1]
    assert torch.allclose(moved, torch.tensor([math.cos(theta), 0.0, -math.sin(theta)]), atol=1e-6)
    lm = bfm.landmarks(coeffs)[0]
    assert torch.allclose(lm[0], torch.tensor([112.0, 111.0]))  # the origin lands on the optical axis
    u = 1015 * math.cos(theta) / (10 + math.sin(theta)) + 112
    assert torch.allclose(lm[1], torch.tensor([u, 111.0]), atol=1e-4)


def test_bfm_landmarks_are_differentiable_in_the_coefficients(tiny_bfm_mat):
    bfm = BFM.from_mat(tiny_bfm_mat[0])
    vector = (torch.randn(3, 257) * 0.1).requires_grad_(True)
    lm = bfm.landmarks(vector)
    assert lm.shape == (3, 68, 2)
    lm.square().sum().backward()
    grad = vector.grad.abs().sum(0)
    assert (grad[:80] > 0).all() and (grad[80:144] > 0).all() and (grad[224:227] > 0).all()
    assert (grad[254:] > 0).all() and (grad[144:224] == 0).all() and (grad[227:254] == 0).all()


def test_fuse_takes_identity_from_source_and_the_rest_from_target():
    source, target = (FaceCoefficients.from_vector(torch.randn(2, 257)) for _ in range(2))
    fused = FaceCoefficients.fuse(source, target)
    vector = fused.to_vector()
    assert torch.equal(vector[:, :80], source.id) and torch.equal(vector[:, 80:], target.to_vector()[:, 80:])
    bfm = BFM.synthetic()
    lm = bfm.landmarks(fused)
    assert torch.equal(shape_distance(lm, lm), torch.zeros(2))
    assert (shape_distance(lm, bfm.landmarks(target)) > 0).all()


def test_missing_bfm_names_the_file_and_how_to_build_it(tmp_path):
    with pytest.raises(MissingWeightsError, match="BFM_model_front.mat.*transferBFM09"):
        BFM.build(weights_dir=tmp_path)


# ----------------------------------------------------------------------------------------------- PnP pose

def _rotation(pose_deg: torch.Tensor) -> torch.Tensor:
    """Rz(roll) Rx(pitch) Ry(yaw), written out independently of the estimator."""
    out = []
    for yaw, pitch, roll in torch.deg2rad(pose_deg.double()).tolist():
        (cy, cp, cr), (sy, sp, sr) = (map(math.cos, (yaw, pitch, roll))), (map(math.sin, (yaw, pitch, roll)))
        ry = torch.tensor([[cy, 0, sy], [0, 1, 0], [-sy, 0, cy]])
        rx = torch.tensor([[1, 0, 0], [0, cp, sp], [0, -sp, cp]])
        rz = torch.tensor([[cr, -sr, 0], [sr, cr, 0], [0, 0, 1]])
        out.append(rz @ rx @ ry)
    return torch.stack(out).float()


@pytest.mark.parametrize("iterations", [0, 3])
def test_pnp_recovers_known_rotations_of_its_face_model(iterations):
    pose = (torch.rand(64, 3) * 2 - 1) * torch.tensor([70.0, 35.0, 40.0])
    world = MEAN_FACE_68 @ _rotation(pose).transpose(1, 2)
    scale, shift = torch.rand(64, 1, 1) * 2 + 0.5, torch.rand(64, 1, 2) * 200
    landmarks = torch.stack([world[..., 0], -world[..., 1]], -1) * scale + shift  # pixels, y down
    estimator = LandmarkPose.build(iterations=iterations)
    assert list(estimator.parameters()) == [] and estimator.weights == "none (geometric)"
    estimate = estimator(landmarks, image_size=256)
    assert estimate.shape == (64, 3)
    assert (estimate - pose).abs().max() < 1.0


def test_pnp_yaw_sign_is_the_synthetic_face_definition():
    pose = torch.tensor([[-30.0, 0, 0], [-5, 0, 0], [5, 0, 0], [30, 0, 0]])
    world = MEAN_FACE_68 @ _rotation(pose).transpose(1, 2)
    landmarks = torch.stack([world[..., 0], -world[..., 1]], -1) + 100
    nose_right = landmarks[:, 30, 0] > landmarks[:, [0, 16], 0].mean(1)  # nose tip right of the jaw midpoint
    assert nose_right.tolist() == [False, False, True, True]
    assert (LandmarkPose.build()(landmarks)[:, 0] > 0).tolist() == nose_right.tolist()


@pytest.fixture(scope="module")
def synthetic_faces():
    # Landmarks are continuous and scale with the resolution, so a small render has the geometry of a
    # 128-pixel one; supersampling only affects pixels.
    faces = SyntheticFaces(resolution=32, supersample=1)
    out = faces(torch.arange(96), torch.arange(96))
    return faces, out["landmarks"], out["pose"]


def test_pnp_on_synthetic_faces(synthetic_faces):
    _, landmarks, pose = synthetic_faces
    error = LandmarkPose.build()(landmarks, image_size=32) - pose
    mae = error.abs().mean(0)
    print(f"synthetic faces, default face model: MAE yaw/pitch/roll = {mae.tolist()} deg, "
          f"mean error = {error.mean(0).tolist()}")
    assert mae[0] < 4.0 and mae[2] < 5.0 and mae[1] < 12.0  # measured ~2.0 / ~7.5 / ~2.9 (pitch: flat heads)
    big = pose[:, 0].abs() > 5
    assert torch.equal(error[big, 0].add(pose[big, 0]).sign(), pose[big, 0].sign())
    for a, bound in enumerate((0.98, 0.85, 0.75)):  # measured 0.998 / 0.95 / 0.85 (roll: pitch-offset coupling)
        assert torch.corrcoef(torch.stack([error[:, a] + pose[:, a], pose[:, a]]))[0, 1] > bound
    calibrated = LandmarkPose.calibrate(landmarks[:48], pose[:48])  # fit the face on 48, test on 48 others
    held_out = (calibrated(landmarks[48:]) - pose[48:]).abs().mean(0)
    print(f"synthetic faces, calibrated face model (held out): MAE yaw/pitch/roll = {held_out.tolist()} deg")
    assert held_out[0] < 1.5 and held_out[1] < 4.5 and held_out[2] < 1.5  # measured ~0.3 / ~2.6 / ~0.5


def test_pnp_yaw_is_monotonic_on_a_synthetic_face(synthetic_faces):
    faces = synthetic_faces[0]
    params = faces.sample(torch.full((15,), 7), torch.zeros(15, dtype=torch.long))
    params["pose"] = torch.stack([torch.linspace(-35, 35, 15), torch.zeros(15), torch.zeros(15)], 1)
    yaw = LandmarkPose.build()(faces.render(params)["landmarks"], image_size=32)[:, 0]
    assert (yaw.diff() > 0).all()
    assert torch.equal(yaw[params["pose"][:, 0] != 0].sign(), params["pose"][params["pose"][:, 0] != 0, 0].sign())


def test_pnp_with_the_bfm_mean_face(tiny_bfm_mat):
    path, fields = tiny_bfm_mat
    estimator = LandmarkPose.build(use_bfm=True, bfm_path=str(path), jaw_weight=1.0)
    mean = torch.tensor(fields["meanshape"].reshape(-1, 3), dtype=torch.float32)
    points = mean[torch.tensor(fields["keypoints"].reshape(-1) - 1, dtype=torch.long)]
    points = points - points.mean(0)
    assert torch.allclose(estimator.model, points / points.pow(2).sum(-1).mean().sqrt(), atol=1e-5)
    pose = (torch.rand(16, 3) * 2 - 1) * torch.tensor([60.0, 30.0, 30.0])
    world = points @ _rotation(pose).transpose(1, 2)
    landmarks = torch.stack([world[..., 0], -world[..., 1]], -1) * 90 + 112
    assert (estimator(landmarks) - pose).abs().max() < 1.0
