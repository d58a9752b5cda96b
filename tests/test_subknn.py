"""Tests of the random-subspace kNN ensemble (engine.models.subknn)."""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest
from scipy.signal import savgol_filter
from sklearn.exceptions import NotFittedError

from engine.io.labelled_set import load_labelled_set
from engine.models.subknn import SubspaceKNN, _top_k

POINTS = 240
AXIS = np.linspace(400.0, 4000.0, POINTS)
#: Band centres (cm-1) of three made-up polymers, and of a fourth confirmed later.
BANDS = {"PE": (2915.0, 1470.0), "PS": (3025.0, 1600.0, 700.0), "PET": (1720.0, 1240.0, 1100.0)}
NEW_BANDS = (1640.0, 1540.0, 3300.0)  # "PA"


def spectrum(
    centres: tuple[float, ...], rng: np.random.Generator, noise: float = 0.02
) -> npt.NDArray[np.float64]:
    """Gaussian bands of random heights on a small sloped baseline, plus noise."""
    values = 0.05 + 1e-5 * AXIS
    for centre in centres:
        values = values + rng.uniform(0.6, 1.0) * np.exp(-0.5 * ((AXIS - centre) / 25.0) ** 2)
    return values + noise * rng.standard_normal(POINTS)


def dataset(per_class: int, seed: int) -> tuple[npt.NDArray[np.float64], list[str]]:
    rng = np.random.default_rng(seed)
    X = [spectrum(centres, rng) for label, centres in BANDS.items() for _ in range(per_class)]
    y = [label for label in BANDS for _ in range(per_class)]
    return np.array(X), y


def pearson(a: npt.NDArray[np.floating], b: npt.NDArray[np.floating]) -> float:
    return float(np.corrcoef(a.astype(np.float64), b.astype(np.float64))[0, 1])


@pytest.fixture(scope="module")
def villegas(shared_data: Path) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.str_]]:
    """Villegas-Camacho c8 on a 4 cm-1 grid, %T to absorbance, Savitzky-Golay first derivative."""
    data = load_labelled_set(shared_data / "villegas_camacho2024_c8")
    grid = np.arange(400.0, 4000.0 + 1e-9, 4.0)
    absorbance = 2.0 - np.log10(np.clip(data.spectra.astype(np.float64), 0.1, None))  # %T -> A
    resampled = np.array([np.interp(grid, data.wavenumbers, row) for row in absorbance])
    derivative = savgol_filter(resampled, 11, 3, deriv=1, axis=1, mode="nearest")
    return derivative.astype(np.float32), np.array(data.labels)


class TestSubspaceKNN:
    def test_learns_separable_classes(self) -> None:
        X, y = dataset(per_class=10, seed=0)
        X_test, y_test = dataset(per_class=10, seed=1)
        model = SubspaceKNN(seed=0).fit(X, y)
        assert model.classes_ == ["PE", "PS", "PET"]
        assert model.n_features_in_ == POINTS
        assert model.subspaces_.shape == (30, POINTS // 2)
        assert list(model.predict(X_test)) == y_test

    def test_any_hashable_label(self) -> None:
        X, _ = dataset(per_class=5, seed=0)
        labels: list[object] = [("PE", "film")] * 5 + [7] * 5 + [None] * 5
        model = SubspaceKNN(seed=0).fit(X, labels)
        assert model.classes_ == [("PE", "film"), 7, None]
        assert model.predict(X[[0, 5, 10]]).tolist() == [("PE", "film"), 7, None]
        assert set(model.predict_proba_one(X[0])) == {("PE", "film"), 7, None}

    def test_init_only_stores_parameters(self) -> None:
        model = SubspaceKNN(n_learners=-3, weights="nonsense")
        assert model.get_params()["n_learners"] == -3
        assert not hasattr(model, "indexes_")
        with pytest.raises(ValueError, match="n_learners"):
            model.fit(*dataset(per_class=2, seed=0))
        with pytest.raises(ValueError, match="weights"):
            SubspaceKNN(weights="nonsense").fit(*dataset(per_class=2, seed=0))

    def test_unfitted_model(self) -> None:
        model = SubspaceKNN()
        assert model.predict_proba_one(np.ones(POINTS)) == {}
        assert model.predict_one(np.ones(POINTS)) is None
        with pytest.raises(NotFittedError):
            model.predict_proba(np.ones((2, POINTS)))

    def test_add_brand_new_class_without_rebuilding(self) -> None:
        X, y = dataset(per_class=10, seed=0)
        model = SubspaceKNN(seed=0).fit(X, y)
        learner_index, reference_index = model.indexes_[0], model.reference_index_
        rng = np.random.default_rng(5)
        new = np.array([spectrum(NEW_BANDS, rng) for _ in range(6)])
        ids = model.add(new, ["PA"] * 6, ids=np.arange(100, 106))
        assert ids.tolist() == list(range(100, 106))
        assert model.classes_ == ["PE", "PS", "PET", "PA"]
        assert model.indexes_[0] is learner_index and model.reference_index_ is reference_index
        assert learner_index.ntotal == reference_index.ntotal == 36
        assert model.predict_one(spectrum(NEW_BANDS, rng)) == "PA"
        assert model.add(new[:1], ["PA"]).tolist() == [106]  # automatic ids continue after the largest
        with pytest.raises(ValueError, match="already"):
            model.add(new[:1], ["PA"], ids=[100])

    def test_remove_by_id_drops_an_emptied_class(self) -> None:
        X, y = dataset(per_class=10, seed=0)
        model = SubspaceKNN(seed=0).fit(X, y, ids=np.arange(1000, 1030))
        assert model.remove([1000, 1001, 999]) == 2  # unknown ids are ignored
        assert model.reference_labels([1002, 1010]) == ["PE", "PS"]
        assert model.remove(np.arange(1002, 1010)) == 8
        assert model.classes_ == ["PS", "PET"]
        assert model.predict_proba(X[:3]).shape == (3, 2)
        assert set(model.predict(X)) <= {"PS", "PET"}
        assert model.reference_index_.ntotal == model.indexes_[5].ntotal == 20
        assert model.remove([1000]) == 0
        with pytest.raises(KeyError):
            model.reference_labels([1000])

    def test_remove_everything_then_learn_again(self) -> None:
        X, y = dataset(per_class=3, seed=0)
        model = SubspaceKNN(seed=0).fit(X, y)
        assert model.remove(model.reference_ids_) == 9
        assert model.classes_ == []
        assert model.predict_proba_one(X[0]) == {}
        with pytest.raises(NotFittedError):
            model.predict(X[:1])
        model.learn_one(X[0], "PE")
        assert model.predict_one(X[1]) == "PE"

    def test_kneighbors_r_is_pearson_r(self) -> None:
        X, y = dataset(per_class=8, seed=0)
        model = SubspaceKNN(seed=0).fit(X, y, ids=np.arange(50, 74))
        queries = dataset(per_class=1, seed=3)[0]
        r, ids = model.kneighbors(queries, k=5)
        assert r.shape == ids.shape == (3, 5)
        for row, query in enumerate(queries):
            expected = np.array([pearson(query, reference) for reference in X])
            order = np.argsort(-expected)[:5]
            assert ids[row].tolist() == (order + 50).tolist()
            np.testing.assert_allclose(r[row], expected[order], atol=1e-5)
        assert model.kneighbors(queries, k=100)[0].shape == (3, 24)

    def test_learner_similarity_is_pearson_r_on_its_points(self) -> None:
        X, y = dataset(per_class=8, seed=0)
        model = SubspaceKNN(n_neighbors=2, seed=0).fit(X, y)
        query = dataset(per_class=1, seed=4)[0][:1]
        sims, positions = model._search_exact(model._as_matrix(query), 2, workers=1)
        for learner, points in enumerate(model.subspaces_):
            expected = [pearson(query[0, points], reference[points]) for reference in X]
            best = np.argsort(expected)[::-1][:2]
            assert sorted(positions[0, learner].tolist()) == sorted(best.tolist())
            np.testing.assert_allclose(
                np.sort(sims[0, learner]), np.sort(np.array(expected)[best]), atol=1e-5
            )

    @pytest.mark.parametrize("search", ["exact", "shortlist"])
    def test_batch_equals_one_by_one(self, search: str) -> None:
        X, y = dataset(per_class=30, seed=0)
        queries = dataset(per_class=4, seed=2)[0]
        model = SubspaceKNN(search=search, shortlist_size=16, seed=0).fit(X, y)
        batch = model.predict_proba(queries)
        one_by_one = [model.predict_proba_one(query) for query in queries]
        np.testing.assert_allclose(
            batch, [[p[label] for label in model.classes_] for p in one_by_one], atol=1e-9
        )

    def test_shortlist_scores_exactly_and_agrees(self) -> None:
        X, y = dataset(per_class=40, seed=0)
        queries = dataset(per_class=10, seed=2)[0]
        exact = SubspaceKNN(seed=4).fit(X, y)
        everything = SubspaceKNN(search="shortlist", shortlist_size=119, seed=4).fit(X, y)
        np.testing.assert_allclose(everything.predict_proba(queries), exact.predict_proba(queries), atol=1e-9)
        shortlist = SubspaceKNN(search="shortlist", seed=4).fit(X, y)
        assert shortlist.indexes_ == []
        assert (shortlist.predict(queries) == exact.predict(queries)).all()

    @pytest.mark.parametrize(("dims", "width"), [(8, 8), (32, 42)])
    def test_shortlist_basis_follows_a_new_class(self, dims: int, width: int) -> None:
        """A polymer outside the basis widens it by its own directions, or (past twice the size) renews it."""
        X, y = dataset(per_class=40, seed=0)
        model = SubspaceKNN(search="shortlist", shortlist_dims=dims, seed=0).fit(X, y)
        basis = model.shortlist_basis_
        assert basis is not None and basis.shape == (POINTS, dims)
        rng = np.random.default_rng(9)
        model.add(np.array([spectrum(NEW_BANDS, rng) for _ in range(10)]), ["PA"] * 10)
        assert model.shortlist_basis_ is not None and model.shortlist_basis_.shape == (POINTS, width)
        np.testing.assert_allclose(
            model.shortlist_basis_.T @ model.shortlist_basis_, np.eye(width), atol=1e-4
        )
        assert model.shortlist_projections_ is not None and model.shortlist_projections_.shape == (130, width)
        vectors = model.reference_index_.index.reconstruct_n(0, 130)
        np.testing.assert_allclose(model.shortlist_projections_, vectors @ model.shortlist_basis_, atol=1e-4)
        assert model.predict_one(spectrum(NEW_BANDS, rng)) == "PA"
        model.add(np.array([spectrum(NEW_BANDS, rng) for _ in range(3)]), ["PA"] * 3)
        assert model.shortlist_basis_.shape == (POINTS, width)  # now it fits: projected, not widened

    def test_learn_one_from_empty(self) -> None:
        X, y = dataset(per_class=4, seed=0)
        model = SubspaceKNN(n_learners=8, seed=0)
        names = [f"{w:.1f}" for w in AXIS]
        for row, label in zip(X, y, strict=True):
            model.learn_one(dict(zip(names, row, strict=True)), label)
        assert model.n_features_in_ == POINTS
        assert model.feature_names_in_ == tuple(names)
        assert model.reference_ids_.tolist() == list(range(12))
        query = dataset(per_class=1, seed=6)[0]
        shuffled = dict(reversed(list(zip(names, query[2], strict=True))))
        assert model.predict_one(shuffled) == "PET"
        np.testing.assert_allclose(
            model.predict_proba(query)[2], list(model.predict_proba_one(shuffled).values())
        )
        with pytest.raises(ValueError, match="keys"):
            model.predict_one({i: v for i, v in enumerate(query[0])})

    def test_learn_one_with_integer_keys_equals_fit(self) -> None:
        X, y = dataset(per_class=4, seed=0)
        streamed = SubspaceKNN(seed=2)
        for row, label in zip(X, y, strict=True):
            streamed.learn_one({i: float(v) for i, v in enumerate(row)}, label)
        assert streamed.feature_names_in_ is None
        fitted = SubspaceKNN(seed=2).fit(X, y)
        np.testing.assert_array_equal(streamed.subspaces_, fitted.subspaces_)
        queries = dataset(per_class=2, seed=7)[0]
        np.testing.assert_allclose(streamed.predict_proba(queries), fitted.predict_proba(queries))

    @pytest.mark.parametrize("weights", ["uniform", "distance"])
    def test_predict_proba_rows_sum_to_one(self, weights: str) -> None:
        X, y = dataset(per_class=6, seed=0)
        model = SubspaceKNN(weights=weights, n_neighbors=5, seed=0).fit(X, y)
        proba = model.predict_proba(dataset(per_class=5, seed=8)[0] + 0.3)
        assert proba.shape == (15, 3)
        assert (proba >= 0).all()
        np.testing.assert_allclose(proba.sum(axis=1), 1.0)

    def test_distance_weights_favour_an_identical_reference(self) -> None:
        X, y = dataset(per_class=6, seed=0)
        model = SubspaceKNN(weights="distance", n_neighbors=3, seed=0).fit(X, y)
        rng = np.random.default_rng(3)
        odd = spectrum(NEW_BANDS, rng)
        model.learn_one(odd, "PA")
        assert model.predict_proba_one(odd)["PA"] > 0.99
        uniform = SubspaceKNN(n_neighbors=3, seed=0).fit(X, y)
        uniform.learn_one(odd, "PA")
        assert uniform.predict_proba_one(odd)["PA"] == pytest.approx(1 / 3)

    def test_seed_fixes_the_subspaces(self) -> None:
        X, y = dataset(per_class=3, seed=0)
        first, again, other = (SubspaceKNN(seed=s).fit(X, y) for s in (11, 11, 12))
        np.testing.assert_array_equal(first.subspaces_, again.subspaces_)
        assert not np.array_equal(first.subspaces_, other.subspaces_)
        assert (np.diff(first.subspaces_, axis=1) > 0).all()  # sorted, no repeats

    def test_rejects_bad_input(self) -> None:
        X, y = dataset(per_class=3, seed=0)
        model = SubspaceKNN(seed=0).fit(X, y)
        with pytest.raises(ValueError, match="points"):
            model.predict(X[:, :-1])
        with pytest.raises(ValueError, match="labels"):
            SubspaceKNN().fit(X, y[:-1])
        with pytest.raises(ValueError, match="unique"):
            SubspaceKNN().fit(X, y, ids=np.zeros(9, dtype=int))
        with pytest.raises(ValueError, match="2-D"):
            model.predict(X[0])
        with pytest.raises(ValueError, match="NaN"):
            model.add(np.full((1, POINTS), np.inf), ["PE"])
        assert model.reference_ids_.size == 9

    def test_pickle_keeps_learning(self) -> None:
        X, y = dataset(per_class=5, seed=0)
        model = SubspaceKNN(search="shortlist", shortlist_size=8, seed=0).fit(X, y)
        copy = pickle.loads(pickle.dumps(model))
        rng = np.random.default_rng(1)
        new = np.array([spectrum(NEW_BANDS, rng) for _ in range(3)])
        for estimator in (model, copy):
            estimator.add(new, ["PA"] * 3)
            estimator.remove([0, 1])
        queries = dataset(per_class=2, seed=9)[0]
        np.testing.assert_array_equal(model.predict_proba(queries), copy.predict_proba(queries))

    @pytest.mark.parametrize(("width", "k"), [(5, 3), (40, 3), (1000, 1), (1001, 3), (10007, 32)])
    def test_block_top_k_equals_a_full_sort(self, width: int, k: int) -> None:
        scores = np.random.default_rng(width).standard_normal((width, 7)).astype(np.float32)
        values, rows = _top_k(scores, k)
        assert values.shape == rows.shape == (min(k, width), 7)
        np.testing.assert_array_equal(np.take_along_axis(scores, rows, axis=0), values)
        np.testing.assert_array_equal(np.sort(values, axis=0), np.sort(scores, axis=0)[-min(k, width) :])

    def test_accuracy_on_real_spectra(
        self, villegas: tuple[npt.NDArray[np.float32], npt.NDArray[np.str_]]
    ) -> None:
        X, y = villegas
        train = np.arange(len(y)) % 4 == 0  # every fourth spectrum is a reference
        model = SubspaceKNN(seed=0).fit(X[train], y[train])
        test = np.flatnonzero(~train)[::2]
        accuracy = float((model.predict(X[test]) == y[test]).mean())
        assert accuracy > 0.9
        shortlist = SubspaceKNN(search="shortlist", seed=0).fit(X[train], y[train])
        agreement = float((shortlist.predict(X[test]) == model.predict(X[test])).mean())
        assert agreement > 0.99
