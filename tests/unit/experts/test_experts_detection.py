"""Face detection (MTCNN, dlib), dlib landmarks and the dlib face descriptor on real photos shipped with
scikit-image (astronaut; LFW subset: 100 faces then 100 non-faces, 25 x 25 grey), weights from pip packages."""

from __future__ import annotations

import copy
import pickle

import cv2
import numpy as np
import pytest
import skimage.data
import torch

from swaplab.errors import MissingWeightsError
from swaplab.experts import Experts, load_tensors, resolve_weights
from swaplab.experts.detection import DlibDetector, MTCNNDetector
from swaplab.experts.dlib_models import DlibFaceDescriptor, DlibLandmarks
from swaplab.faces.landmarks import dlib5_to_arcface, landmarks68_to_arcface
from swaplab.faces.templates import align_faces, arcface_template, similarity_transform

SHIPPED = {"mtcnn_pnet": "pnet.pt", "mtcnn_rnet": "rnet.pt", "mtcnn_onet": "onet.pt",
           "dlib_mmod_face_detector": "mmod_human_face_detector.dat",
           "dlib_shape_predictor_68": "shape_predictor_68_face_landmarks.dat",
           "dlib_shape_predictor_5": "shape_predictor_5_face_landmarks.dat",
           "dlib_face_recognition_resnet_v1": "dlib_face_recognition_resnet_model_v1.dat"}
# LFW subset faces of clearly different people (a woman, a man), checked by eye; no index repeats.
DIFFERENT_PEOPLE = [(18, 3), (46, 10), (52, 44), (91, 70)]


def lfw_photo(gray: np.ndarray, size: int = 120, pad: int = 40) -> np.ndarray:
    """A 25 x 25 LFW crop upscaled and padded with its border, so detectors see some context."""
    img = cv2.resize((gray * 255).round().astype(np.uint8), (size, size), interpolation=cv2.INTER_CUBIC)
    img = cv2.copyMakeBorder(img, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
    return np.repeat(img[..., None], 3, axis=2)


def inside(points: np.ndarray, box: np.ndarray, margin: float = 0.0) -> bool:
    w, h = box[2] - box[0], box[3] - box[1]
    lo, hi = box[:2] - margin * np.array([w, h]), box[2:] + margin * np.array([w, h])
    return bool(np.all((points >= lo) & (points <= hi)))


def iou(a: np.ndarray, b: np.ndarray) -> float:
    inter = np.prod(np.clip(np.minimum(a[2:], b[2:]) - np.maximum(a[:2], b[:2]), 0, None))
    return float(inter / (np.prod(a[2:] - a[:2]) + np.prod(b[2:] - b[:2]) - inter))


@pytest.fixture(scope="module")
def astronaut() -> np.ndarray:
    return skimage.data.astronaut()


@pytest.fixture(scope="module")
def lfw() -> np.ndarray:
    return skimage.data.lfw_subset()


@pytest.fixture(scope="module")
def head(astronaut) -> np.ndarray:
    return np.ascontiguousarray(astronaut[:320, 96:416])  # 320 x 320 around the face: cheaper to scan


@pytest.fixture(scope="module")
def mtcnn() -> MTCNNDetector:
    return MTCNNDetector.build(min_face_size=40)


@pytest.fixture(scope="module")
def head_dets(head, mtcnn):
    return mtcnn(head)


@pytest.fixture(scope="module")
def hog() -> DlibDetector:
    return DlibDetector.build(upsample=0)  # with the 68-point predictor for the 5 ArcFace points


@pytest.fixture(scope="module")
def descriptor() -> DlibFaceDescriptor:
    return DlibFaceDescriptor.build()


def test_registry_resolves_the_shipped_files_and_mtcnn_keys_match_facenet(tmp_path):
    from facenet_pytorch.models.mtcnn import ONet, PNet, RNet

    for key, filename in SHIPPED.items():
        path = resolve_weights(key, weights_dir=tmp_path)  # empty weights dir: falls back to the package
        assert path.is_file() and path.name == filename
    for key, cls in (("mtcnn_pnet", PNet), ("mtcnn_rnet", RNet), ("mtcnn_onet", ONet)):
        state = load_tensors(resolve_weights(key))  # weights_only=True: plain tensors
        reference = cls(pretrained=False).state_dict()
        assert {k: v.shape for k, v in state.items()} == {k: v.shape for k, v in reference.items()}


def test_a_missing_explicit_path_fails_with_one_line_naming_the_file(tmp_path):
    missing = str(tmp_path / "nowhere.dat")
    for build in (lambda: DlibFaceDescriptor.build(path=missing), lambda: DlibLandmarks.build(5, path=missing),
                  lambda: DlibDetector.build(cnn=True, path=missing, landmarks=None),
                  lambda: MTCNNDetector.build(path=[missing] * 3)):
        with pytest.raises(MissingWeightsError) as err:
            build()
        assert "nowhere.dat" in str(err.value) and "\n" not in str(err.value)
    with pytest.raises(ValueError, match="pretrained"):
        DlibFaceDescriptor.build(weights="random")


def test_mtcnn_loads_official_state_dicts_and_matches_facenet_pytorch(tmp_path, head, head_dets):
    from facenet_pytorch import MTCNN
    from facenet_pytorch.models.mtcnn import ONet, PNet, RNet

    paths = []
    for name, cls in (("pnet", PNet), ("rnet", RNet), ("onet", ONet)):
        state = {k: v + 0.01 * torch.randn_like(v) for k, v in cls(pretrained=False).state_dict().items()}
        torch.save(state, tmp_path / f"{name}.pt")
        paths.append(str(tmp_path / f"{name}.pt"))
    loaded = MTCNNDetector.build(path=paths)
    assert loaded.weights == " + ".join(paths)
    saved = torch.load(paths[2], weights_only=True)
    assert all(torch.equal(saved[k], v) for k, v in loaded.net.onet.state_dict().items())

    # Pretrained (registry -> facenet-pytorch's files) equals facenet-pytorch's own MTCNN.
    boxes, probs, points = MTCNN(min_face_size=40, keep_all=True, select_largest=False).detect(
        head, landmarks=True)
    ours = head_dets
    np.testing.assert_allclose(ours.boxes, np.asarray(boxes, np.float32), atol=1e-3)
    np.testing.assert_allclose(ours.scores, np.asarray(probs, np.float32), atol=1e-5)
    np.testing.assert_allclose(ours.landmarks, np.asarray(points, np.float32), atol=1e-3)


def check_astronaut_face(dets, face_box: np.ndarray) -> None:
    assert len(dets) >= 1 and iou(dets.boxes[0], face_box) > 0.5
    pts = dets.landmarks[0]
    assert inside(pts, dets.boxes[0], margin=0.05)
    assert pts[0, 0] < pts[1, 0] and pts[3, 0] < pts[4, 0]  # viewer's left before right
    assert max(pts[0, 1], pts[1, 1]) < pts[2, 1] < min(pts[3, 1], pts[4, 1])  # eyes, nose, mouth downwards


def test_detectors_find_the_astronaut_with_arcface_ordered_landmarks(astronaut, head, head_dets, mtcnn, hog):
    face_box = np.array([175, 65, 265, 170], np.float32)  # by eye: forehead to chin, ear to ear
    check_astronaut_face(mtcnn(astronaut), face_box)
    check_astronaut_face(hog(astronaut), face_box)
    as_tensor = torch.from_numpy(head).permute(2, 0, 1)[None].float() / 127.5 - 1  # B x 3 x H x W, [-1, 1]
    batched = mtcnn(torch.cat([as_tensor, as_tensor.flip(-1)]))
    assert len(batched) == 2 and iou(batched[0].boxes[0], head_dets.boxes[0]) > 0.99
    box = face_box - [96, 0, 96, 0]
    check_astronaut_face(batched[0], box)
    mirrored = batched[1].boxes[0]
    assert iou(np.array([320 - mirrored[2], mirrored[1], 320 - mirrored[0], mirrored[3]]), box) > 0.5


def test_mmod_cnn_detector_finds_the_astronaut(head):
    cnn = DlibDetector.build(cnn=True, upsample=0, landmarks=None)
    dets = cnn([head, head])  # equal sizes: one batched CNN call
    assert len(dets) == 2 and len(dets[0]) == 1 and dets[0].landmarks is None
    assert iou(dets[0].boxes[0] + [96, 0, 96, 0], np.array([175, 65, 265, 170])) > 0.5


def test_68_and_5_point_landmarks(astronaut, hog):
    box = hog(astronaut).boxes[:1]
    p68 = hog.landmarks(astronaut, box)
    p5 = DlibLandmarks.build(5)(astronaut, box)
    assert p68.shape == (1, 68, 2) and p5.shape == (1, 5, 2) and p68.dtype == np.float32
    assert inside(p68[0, 17:], box[0], margin=0.05) and inside(p68[0], box[0], margin=0.25)  # jaw may pass
    assert inside(p5[0], box[0])
    assert p68[0, 36:48, 1].max() < p68[0, 48:68, 1].min()  # eyes above the mouth
    assert p68[0, 36:42, 0].max() < p68[0, 42:48, 0].min()  # iBUG: 36-41 is the viewer's left eye
    # dlib 5: right eye (outer, inner), left eye (outer, inner), nose base; eye centres agree with the 68's.
    assert p5[0, 2, 0] < p5[0, 3, 0] < p5[0, 1, 0] < p5[0, 0, 0]
    eyes_nose5, arc68 = dlib5_to_arcface(p5), landmarks68_to_arcface(p68)
    assert np.abs(eyes_nose5[0, :2] - arc68[0, :2]).max() < 4
    assert np.abs(eyes_nose5[0, 2] - p68[0, 33]).max() < 4


def test_detection_rates_on_lfw_faces_and_non_faces(lfw, hog):
    mtcnn = MTCNNDetector.build(min_face_size=50)
    faces = [lfw_photo(g) for g in lfw[0:100:5]]  # 20 faces, 200 x 200 with the face about 120 px
    non_faces = [lfw_photo(g) for g in lfw[100:200:5]]
    # Measured on all 100 faces: MTCNN 99 %, dlib HOG (no upsampling) 94 %; 0 / 100 non-faces for both.
    for detector in (mtcnn, hog):
        found = detector(faces)
        assert sum(len(d) > 0 for d in found) >= 16
        assert all(inside(d.landmarks[0], d.boxes[0], margin=0.1) for d in found if len(d))
        detector.reset_counts()
        assert sum(len(d) > 0 for d in detector(non_faces)) <= 2
        assert detector.images_seen == 20 and detector.images_without_face >= 18


def test_images_without_faces_give_empty_results_and_are_counted(mtcnn, hog):
    grey, tiny = np.full((240, 320, 3), 128, np.uint8), np.full((30, 30, 3), 90, np.uint8)
    for detector in (mtcnn, hog):
        detector.reset_counts()
        found = detector([grey, tiny, grey])  # mixed sizes: one batch per size
        assert [len(d) for d in found] == [0, 0, 0]
        assert found[0].boxes.shape == (0, 4) and found[0].landmarks.shape == (0, 5, 2)
        assert detector.images_seen == 3 and detector.images_without_face == 3
        assert len(detector(np.stack([grey, grey]))) == 2 and detector.images_without_face == 5


def test_descriptor_of_a_mirrored_face_is_closer_than_another_person(lfw, hog, descriptor):
    def describe(img: np.ndarray) -> np.ndarray:
        dets = hog(img)
        assert len(dets) > 0
        return descriptor.from_image(img, hog.landmarks(img, dets.boxes[:1]))[0]

    for i, j in DIFFERENT_PEOPLE:
        face, other = lfw_photo(lfw[i]), lfw_photo(lfw[j])
        d_face, d_mirror, d_other = describe(face), describe(np.ascontiguousarray(face[:, ::-1])), describe(other)
        assert np.linalg.norm(d_face - d_mirror) < 0.45 < np.linalg.norm(d_face - d_other)  # measured 0.21 / 0.79


def test_canonical_crops_give_descriptors_close_to_dlibs_own_alignment(astronaut, head, head_dets, hog,
                                                                      descriptor):
    box = hog(astronaut).boxes[:1]
    exact = descriptor.from_image(astronaut, hog.landmarks(astronaut, box))
    assert exact.shape == (1, 128) and np.isfinite(exact).all()
    arc68 = landmarks68_to_arcface(hog.landmarks(astronaut, box))
    crops = torch.cat([align_faces(head, head_dets.landmarks[:1]), align_faces(astronaut, arc68)])
    assert crops.shape == (2, 3, 256, 256) and crops.min() >= -1 and crops.max() <= 1
    ours = descriptor(crops)
    assert ours.shape == (2, 128) and ours.dtype == torch.float32 and ours.device == crops.device
    dist = np.linalg.norm(ours.numpy() - exact, axis=1)
    assert dist.max() < 0.4, dist  # measured 0.11 (MTCNN-aligned) and 0.15 (68-point-aligned)
    # The fixed crop -> chip map sends the canonical template's eyes where dlib's mean face has them.
    matrix = descriptor.chip_to_crop(256)
    eyes_chip = np.array([[47.55, 46.60], [100.48, 46.60]])  # (0.25 + mean-face eye centre) / 1.5 * 150
    np.testing.assert_allclose(eyes_chip @ matrix[:, :2].T + matrix[:, 2], arcface_template(256)[:2], atol=1.5)
    # Larger crops take dlib's halving path and give nearly the same descriptor.
    big = torch.nn.functional.interpolate(crops[:1], size=512, mode="bilinear", align_corners=False)
    assert np.linalg.norm(descriptor(big).numpy() - ours[:1].numpy()) < 0.1


def test_experts_are_parameter_free_eval_modules_shared_by_deepcopy(hog, descriptor, mtcnn):
    experts = Experts(detector=hog, identity_eval=descriptor, mtcnn=mtcnn)
    info = experts.describe()
    assert info["identity_eval"]["params"] == 0 and info["detector"]["params"] == 0
    assert info["mtcnn"]["params"] > 0 and info["identity_eval"]["weights"].endswith(SHIPPED[
        "dlib_face_recognition_resnet_v1"])
    experts.train()
    assert not descriptor.training and not hog.training and not mtcnn.training
    assert copy.deepcopy(descriptor) is descriptor and copy.deepcopy(hog) is hog
    small = DlibLandmarks.build(5)
    blob = pickle.dumps(small)
    assert len(blob) < 10_000  # pickles its path, reloads the file
    assert pickle.loads(blob).weights == small.weights
    hog_copy = pickle.loads(pickle.dumps(DlibDetector.build(landmarks=None)))
    assert len(hog_copy(np.full((64, 64, 3), 128, np.uint8))) == 0  # its dlib detector was rebuilt


def test_similarity_transform_recovers_a_known_transform():
    src = arcface_template(112)
    angle, scale, shift = 0.3, 1.7, np.array([5.0, -3.0])
    rot = scale * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    np.testing.assert_allclose(similarity_transform(src, src @ rot.T + shift), np.c_[rot, shift], atol=1e-9)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a GPU")
def test_tensor_inputs_on_the_gpu(head, head_dets, mtcnn, descriptor):
    x = (torch.from_numpy(head).permute(2, 0, 1)[None].float() / 127.5 - 1).cuda()
    try:
        found = mtcnn.to("cuda")(x)[0]
        assert iou(found.boxes[0], head_dets.boxes[0]) > 0.95
    finally:
        mtcnn.to("cpu")
    crop = align_faces(head, head_dets.landmarks[:1])
    on_gpu = descriptor(crop.cuda())
    assert on_gpu.device.type == "cuda" and torch.allclose(on_gpu.cpu(), descriptor(crop), atol=1e-3)
