"""The study's synthetic-spectrum generator."""

from __future__ import annotations

import numpy as np
import pytest

from engine.core.augment import class_seed, draw_weights, synthesize, synthesize_class


class TestWeights:
    def test_weights_in_range_and_convex(self) -> None:
        w = draw_weights(5000, np.random.default_rng(1))
        assert w.shape == (5000, 2)
        assert w.min() >= 0.1 and w.max() <= 0.9
        assert (w.sum(axis=1) <= 1.0).all()
        # rejection sampling, not clipping: sums spread over (0.2, 1]
        assert np.quantile(w.sum(axis=1), 0.1) < 0.5

    def test_impossible_range(self) -> None:
        with pytest.raises(ValueError):
            draw_weights(3, np.random.default_rng(0), low=0.6, high=0.9)


class TestSynthesize:
    def test_children_are_mixtures_of_two_different_parents(self) -> None:
        parents = np.eye(5, dtype=np.float32)
        children = synthesize_class(parents, 200, seed=3)
        nonzero = (children > 0).sum(axis=1)
        assert (nonzero == 2).all()

    def test_single_parent_gives_scaled_copies(self) -> None:
        parent = np.array([[1.0, 2.0, 3.0]], dtype=np.float32)
        children = synthesize_class(parent, 10, seed=0)
        ratios = children / parent
        np.testing.assert_allclose(ratios, ratios[:, :1].repeat(3, axis=1), rtol=1e-6)

    def test_missing_points_stay_missing(self) -> None:
        parents = np.array([[1.0, np.nan, 1.0], [2.0, 2.0, 2.0]], dtype=np.float32)
        assert np.isnan(synthesize_class(parents, 20, seed=0)[:, 1]).all()

    def test_seeded_and_per_class_independent(self) -> None:
        X = np.random.default_rng(0).normal(size=(6, 8)).astype(np.float32)
        a, _ = synthesize(X, ["a", "a", "a", "b", "b", "b"], n_per_class=7, seed=5)
        b, _ = synthesize(X, ["a", "a", "a", "b", "b", "b"], n_per_class=7, seed=5)
        np.testing.assert_array_equal(a, b)
        only_b = synthesize_class(X[3:], 7, seed=class_seed(5, "b"))
        np.testing.assert_array_equal(a[7:], only_b)

    def test_counts_and_labels(self) -> None:
        X = np.ones((4, 3), dtype=np.float32)
        Xs, ys = synthesize(X, ["x", "y", "y", "z"], n_per_class=5, seed=0)
        assert Xs.shape == (15, 3)
        assert ys == ["x"] * 5 + ["y"] * 5 + ["z"] * 5

    def test_label_mismatch(self) -> None:
        with pytest.raises(ValueError):
            synthesize(np.ones((2, 3)), ["a"], n_per_class=2, seed=0)
