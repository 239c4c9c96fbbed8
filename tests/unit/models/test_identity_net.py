"""The synthetic identity networks: ArcFace's margin, the procedural people, verification, the shipped files."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F
from helpers import compose_config
from hydra.utils import instantiate

from swaplab.data.identities import SyntheticIdentities, SyntheticVerificationPairs
from swaplab.data.synthetic_faces import FACTORS, IDENTITY_FACTORS
from swaplab.losses.margin import AdditiveAngularMargin
from swaplab.models.identity.verification import verification_report

pytestmark = pytest.mark.usefixtures("single_thread")


def test_margin_adds_m_to_the_true_class_angle_only():
    head = AdditiveAngularMargin(4, 3, scale=10.0, margin=0.4)
    embeddings, labels = torch.randn(5, 4), torch.tensor([0, 1, 2, 0, 1])
    cos = F.normalize(embeddings, dim=1) @ F.normalize(head.centres, dim=1).T
    logits = head.logits(embeddings, labels)
    true = cos.gather(1, labels[:, None])[:, 0]
    expected_true = torch.where(true > math.cos(math.pi - 0.4), torch.cos(torch.acos(true) + 0.4),
                                true - math.sin(math.pi - 0.4) * 0.4)
    torch.testing.assert_close(logits.gather(1, labels[:, None])[:, 0], 10 * expected_true)
    others = torch.ones_like(cos, dtype=torch.bool).scatter(1, labels[:, None], False)
    torch.testing.assert_close(logits[others], 10 * cos[others])
    head.set_margin(0.0)  # no margin: a normalised softmax
    torch.testing.assert_close(head(embeddings, labels), F.cross_entropy(10 * cos, labels))


def test_images_of_one_person_share_exactly_the_identity_factors():
    people = SyntheticIdentities(resolution=32, num_identities=4, images_per_identity=3)
    batch = people.__getitems__(list(range(12)))
    assert batch["label"].tolist() == [0, 0, 0, 1, 1, 1, 2, 2, 2, 3, 3, 3]
    person = people.faces.sample(torch.tensor([0, 0]), torch.tensor([0, 1]))
    rendered = [people.render(torch.tensor([0]), torch.tensor([k])) for k in (0, 1)]
    for name in FACTORS:  # identity factors equal the person's; the scene differs from image to image
        for key, columns in FACTORS[name]:
            a, b = (r[key][0] if columns is None else r[key][0, list(columns)] for r in rendered)
            if name in IDENTITY_FACTORS:
                expected = person[key][0] if columns is None else person[key][0, list(columns)]
                assert torch.equal(a, b) and torch.equal(a, expected), name
            else:
                assert not torch.equal(a, b), name  # hair, clothing, light... never identify a person
    assert not torch.equal(batch["image"][0], batch["image"][1])


def test_verification_pairs_alternate_same_and_different_people():
    pairs = SyntheticVerificationPairs(resolution=32, num_identities=5, num_pairs=10)
    batch = pairs.__getitems__(list(range(10)))
    assert batch["same"].tolist() == [True, False] * 5
    assert not torch.equal(batch["image1"][0], batch["image2"][0])  # one person, two images


def test_verification_report_known_answers():
    same = torch.tensor([True, False] * 50)
    perfect = verification_report(same.float() * 0.5 + 0.2, same)
    assert perfect["accuracy"] == 1.0 and 0.2 < perfect["threshold"] <= 0.7
    inverted = verification_report(1 - same.float(), same)
    assert inverted["accuracy"] <= 0.5 + 1e-6
    yaw = torch.arange(100.0) % 40
    binned = verification_report(same.float(), same, yaw)
    assert binned["pairs_yaw_0_10"] == 30 and binned["accuracy_yaw_30_90"] == 1.0


@pytest.fixture(scope="module")
def shipped(tmp_path_factory):
    cfg = compose_config("train", tmp_path_factory.mktemp("synthetic"), ["experts=synthetic"])
    return {role: instantiate(cfg.experts[role]).eval() for role in ("identity", "identity_eval")}


@torch.inference_mode()
@pytest.mark.parametrize("role", ["identity", "identity_eval"])
def test_shipped_identity_networks_tell_held_out_people_apart(shipped, role):
    """Both files load (sha256 registered) and verify people no network saw (a random network scores ~0.5;
    the shipped ones 0.90 on 2000 pairs: experiments/benchmarks/results/identity_synthetic.json)."""
    encoder = shipped[role]
    pairs = SyntheticVerificationPairs(resolution=64, num_identities=50, num_pairs=200, identity_offset=5_000_000)
    batch = pairs.__getitems__(list(range(200)))
    scores = (encoder(batch["image1"]) * encoder(batch["image2"])).sum(1)
    assert scores[batch["same"]].mean() > scores[~batch["same"]].mean() + 0.1
    assert verification_report(scores, batch["same"])["accuracy"] > 0.8


def test_training_and_evaluation_networks_differ(shipped):
    a, b = (shipped[r].net.state_dict() for r in ("identity", "identity_eval"))
    assert a["conv1.weight"].shape != b["conv1.weight"].shape  # other width, trained apart
