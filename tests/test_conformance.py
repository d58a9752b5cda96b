"""One conformance suite for every estimator of the engine (STYLE.md item 2).

Each entry of :data:`ESTIMATORS` is ``(name, factory)``; ``factory(seed)``
returns a fresh, unfitted estimator with river's per-sample API
(``learn_one(x, y) -> None``, ``predict_proba_one(x) -> dict``) and the batch
API (``fit(X, y)``, ``predict_proba(X)``). Append new estimators to the list;
every check below then runs on them too.
"""

from __future__ import annotations

import copy
import math
import pickle
from collections.abc import Callable, Hashable
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
from sklearn.base import clone

from engine.models.cnn import PolarCNN
from engine.models.subknn import SubspaceKNN

Factory = Callable[[int], Any]


def subknn_exact(seed: int) -> SubspaceKNN:
    return SubspaceKNN(n_learners=12, seed=seed)


def subknn_shortlist(seed: int) -> SubspaceKNN:
    return SubspaceKNN(n_learners=12, search="shortlist", shortlist_size=8, seed=seed)


def polar_cnn_tiny(seed: int) -> PolarCNN:
    return PolarCNN(image_size=16, width=4, depth=2, max_epochs=1, batch_size=8, n_threads=1, seed=seed)


#: ``(name, factory)`` of every estimator the suite checks; append new ones here.
ESTIMATORS: list[tuple[str, Factory]] = [
    ("subknn-exact", subknn_exact),
    ("subknn-shortlist", subknn_shortlist),
    ("polar-cnn", polar_cnn_tiny),
]

POINTS = 200
_AXIS = np.linspace(400.0, 4000.0, POINTS)
_CENTRES = {"PE": (2915.0, 1470.0), "PP": (2950.0, 1375.0, 1160.0), "PET": (1720.0, 1240.0, 1100.0)}


def _spectra(per_class: int, seed: int) -> tuple[npt.NDArray[np.float64], list[Hashable]]:
    """Made-up absorbance spectra of three polymers, shuffled."""
    rng = np.random.default_rng(seed)
    rows, labels = [], []
    for label, centres in _CENTRES.items():
        for _ in range(per_class):
            values = 0.02 + 0.01 * rng.standard_normal(POINTS)
            for centre in centres:
                values += rng.uniform(0.5, 1.0) * np.exp(-0.5 * ((_AXIS - centre) / rng.uniform(15, 35)) ** 2)
            rows.append(values)
            labels.append(label)
    order = rng.permutation(len(rows))
    return np.array(rows)[order], [labels[i] for i in order]


def _stream(X: npt.NDArray[np.float64]) -> list[dict[int, float]]:
    return [{i: float(v) for i, v in enumerate(row)} for row in X]


X_TRAIN, Y_TRAIN = _spectra(per_class=8, seed=0)
X_PROBE, _ = _spectra(per_class=2, seed=1)


def _learn_stream(model: Any, X: npt.NDArray[np.float64] = X_TRAIN, y: list[Hashable] = Y_TRAIN) -> None:
    for x, label in zip(_stream(X), y, strict=True):
        assert model.learn_one(x, label) is None


def _probe(model: Any) -> list[dict[Hashable, float]]:
    return [model.predict_proba_one(x) for x in _stream(X_PROBE)]


def _bad_rows() -> list[npt.NDArray[np.float64]]:
    bad = []
    for value in (math.nan, math.inf, -math.inf):
        row = X_PROBE[0].copy()
        row[POINTS // 3] = value
        bad.append(row)
    return bad


parametrize = pytest.mark.parametrize(("name", "factory"), ESTIMATORS, ids=[name for name, _ in ESTIMATORS])


@parametrize
class TestConformance:
    def test_constructor_only_stores_parameters(self, name: str, factory: Factory) -> None:
        model = factory(0)
        learned = [a for a in vars(model) if a.endswith("_") and not a.startswith("_")]
        assert learned == []
        twin = clone(model)
        assert twin.get_params() == model.get_params()

    def test_pickle_before_learning(self, name: str, factory: Factory) -> None:
        model = factory(3)
        twin = pickle.loads(pickle.dumps(model))
        assert type(twin) is type(model)
        _learn_stream(model)
        _learn_stream(twin)
        assert _probe(twin) == _probe(model)

    def test_pickle_after_learning(self, name: str, factory: Factory) -> None:
        model = factory(3)
        _learn_stream(model, X_TRAIN[:12], Y_TRAIN[:12])
        twin = pickle.loads(pickle.dumps(model))
        assert _probe(twin) == _probe(model)
        _learn_stream(model, X_TRAIN[12:], Y_TRAIN[12:])
        _learn_stream(twin, X_TRAIN[12:], Y_TRAIN[12:])
        assert _probe(twin) == _probe(model)
        np.testing.assert_array_equal(twin.predict_proba(X_PROBE), model.predict_proba(X_PROBE))

    def test_learn_one_leaves_its_inputs_unchanged(self, name: str, factory: Factory) -> None:
        model = factory(0)
        for x, label in zip(_stream(X_TRAIN), Y_TRAIN, strict=True):
            x_before, label_before = copy.deepcopy(x), copy.deepcopy(label)
            model.learn_one(x, label)
            assert x == x_before
            assert label == label_before
        array = X_PROBE[0].copy()
        model.learn_one(array, "PE")
        np.testing.assert_array_equal(array, X_PROBE[0])
        batch = X_PROBE.copy()
        model.predict_proba(batch)
        np.testing.assert_array_equal(batch, X_PROBE)

    def test_same_seed_same_predictions(self, name: str, factory: Factory) -> None:
        first, second = factory(42), factory(42)
        for x, label in zip(_stream(X_TRAIN), Y_TRAIN, strict=True):
            assert first.predict_proba_one(x) == second.predict_proba_one(x)
            first.learn_one(x, label)
            second.learn_one(x, label)
        assert _probe(first) == _probe(second)

    def test_nan_or_inf_raises_value_error(self, name: str, factory: Factory) -> None:
        unfitted = factory(0)
        fitted = factory(0)
        fitted.fit(X_TRAIN, Y_TRAIN)
        before = _probe(fitted)
        for row in _bad_rows():
            for model in (unfitted, fitted):
                with pytest.raises(ValueError):
                    model.learn_one({i: float(v) for i, v in enumerate(row)}, "PE")
                with pytest.raises(ValueError):
                    model.learn_one(row, "PE")
                with pytest.raises(ValueError):
                    model.predict_proba_one({i: float(v) for i, v in enumerate(row)})
            with pytest.raises(ValueError):
                factory(0).fit(np.vstack([X_TRAIN, row]), [*Y_TRAIN, "PE"])
            with pytest.raises(ValueError):
                fitted.predict_proba(np.vstack([X_PROBE, row]))
        assert _probe(fitted) == before  # a rejected spectrum changes nothing
        assert unfitted.predict_proba_one(_stream(X_PROBE)[0]) == {}

    def test_fitting_twice_equals_fitting_once(self, name: str, factory: Factory) -> None:
        once = factory(5)
        once.fit(X_TRAIN, Y_TRAIN)
        twice = factory(5)
        twice.fit(X_TRAIN[::-1], Y_TRAIN[::-1])
        twice.fit(X_TRAIN, Y_TRAIN)
        np.testing.assert_array_equal(twice.predict_proba(X_PROBE), once.predict_proba(X_PROBE))
        assert _probe(twice) == _probe(once)

    def test_predict_proba_one_sums_to_one(self, name: str, factory: Factory) -> None:
        model = factory(0)
        assert model.predict_proba_one(_stream(X_PROBE)[0]) == {}
        _learn_stream(model)
        for proba in _probe(model):
            assert set(proba) <= set(Y_TRAIN)
            assert all(p >= 0 for p in proba.values())
            assert math.isclose(sum(proba.values()), 1.0, rel_tol=1e-9)
            assert model.predict_one(_stream(X_PROBE)[0]) in set(Y_TRAIN)
