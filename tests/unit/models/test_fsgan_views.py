"""FSGAN face view interpolation: barycentric weights over the Delaunay triangulation of the source views'
(yaw, pitch), the nearest view outside their hull or without a triangle, and the blend of the reenactments."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from swaplab.models.fsgan import ViewMap, blend_views

# a frontal view, four turned ones and one in between: several triangles
ANGLES = np.array([[0.0, 0.0], [40.0, 0.0], [-40.0, 0.0], [0.0, 30.0], [0.0, -30.0], [20.0, 15.0]])


def test_weights_are_the_barycentric_coordinates_of_the_enclosing_triangle():
    views = ViewMap(ANGLES)
    rng = np.random.default_rng(0)
    for _ in range(50):
        a, b, c = ANGLES[rng.choice(len(ANGLES), 3, replace=False)]
        u = rng.dirichlet(np.ones(3))
        query = u @ np.stack([a, b, c])  # inside the hull of the views
        indices, weights = views.weights(query)
        assert 1 <= len(indices) <= 3 and len(set(indices.tolist())) == len(indices)
        assert (weights > 0).all() and weights.sum() == pytest.approx(1.0, abs=1e-12)
        np.testing.assert_allclose(weights @ ANGLES[indices], query, atol=1e-9)  # they reproduce the pose
        if len(indices) == 3:  # a triangle of the triangulation
            assert sorted(indices.tolist()) in [sorted(s.tolist()) for s in views.triangulation.simplices]


def test_a_target_at_a_view_reproduces_that_view_exactly():
    views = ViewMap(torch.tensor(ANGLES))
    reenactments = torch.randn(len(ANGLES), 3, 8, 8)
    for i, angles in enumerate(ANGLES):
        indices, weights = views.weights(torch.tensor(angles))
        assert indices.tolist() == [i] and weights.tolist() == [1.0]
        assert torch.equal(blend_views(reenactments[indices], weights), reenactments[i])


def test_the_nearest_view_outside_the_hull_or_without_a_triangle():
    views = ViewMap(ANGLES)
    for query, nearest in (((80.0, 5.0), 1), ((-70.0, -2.0), 2), ((3.0, 60.0), 3), ((50.0, 50.0), 5)):
        indices, weights = views.weights(query)
        assert indices.tolist() == [nearest] and weights.tolist() == [1.0], query
    for degenerate in (ANGLES[:1], ANGLES[:2], np.array([[0.0, 0.0], [10.0, 5.0], [20.0, 10.0]])):  # <3 / a line
        views = ViewMap(degenerate)
        assert views.triangulation is None
        distance = ((degenerate - np.array([12.0, 4.0])) ** 2).sum(1)
        assert views.weights([12.0, 4.0])[0].tolist() == [int(np.argmin(distance))]
    with pytest.raises(ValueError, match="N x 2"):
        ViewMap(np.zeros((0, 2)))


def test_the_blend_is_the_weighted_sum_of_the_reenactments():
    reenactments = torch.randn(3, 3, 4, 4)
    weights = np.array([0.2, 0.5, 0.3])
    expected = 0.2 * reenactments[0] + 0.5 * reenactments[1] + 0.3 * reenactments[2]
    torch.testing.assert_close(blend_views(reenactments, weights), expected)
    with pytest.raises(ValueError, match="one weight per reenactment"):
        blend_views(reenactments, weights[:2])
