"""Tests of the polar-image CNN member (engine.models.cnn): encodings, training, determinism, persistence;
the study protocol with the CNN beside the subspace kNN (engine.analysis.evaluate.study, evaluate --study);
and the cross-source evaluation with the CNN member deciding (mpwatch evaluate --members subknn,cnn).
"""

from __future__ import annotations

import json
import pickle
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import pytest
import torch
from sklearn.exceptions import NotFittedError

from daemon.cli import main as mpwatch
from engine.analysis import evaluate
from engine.analysis.evaluate import Study, check_members, library_from_sources, study_plan
from engine.cli.evaluate import run_study
from engine.core.labels import canonical_label
from engine.core.preprocess import build_pipeline, transform
from engine.io import read_spectra
from engine.models.cnn import PolarCNN, ServedCNN, export_onnx, gramian_field, polar_images
from engine.models.cnn import encoding as cnn_encoding
from engine.models.cnn import estimator as cnn_estimator
from engine.models.served import IdentificationModel, ModelConfig

POINTS = 180
AXIS = np.linspace(400.0, 4000.0, POINTS)
#: Band centres (cm-1) of three made-up polymers.
BANDS = {"PE": (2915.0, 1470.0), "PS": (3025.0, 1600.0, 700.0), "PET": (1720.0, 1240.0, 1100.0)}


def spectrum(centres: tuple[float, ...], rng: np.random.Generator) -> npt.NDArray[np.float64]:
    """Gaussian bands of random heights and small shifts, plus noise."""
    values = 0.01 * rng.standard_normal(POINTS)
    for centre in centres:
        shift = rng.normal(0.0, 15.0)
        values = values + rng.uniform(0.6, 1.0) * np.exp(-0.5 * ((AXIS - centre - shift) / 40.0) ** 2)
    return values


def dataset(per_class: int, seed: int) -> tuple[npt.NDArray[np.float64], list[str]]:
    rng = np.random.default_rng(seed)
    X = [spectrum(centres, rng) for centres in BANDS.values() for _ in range(per_class)]
    y = [label for label in BANDS for _ in range(per_class)]
    return np.array(X), y


#: A network small enough to train in a fraction of a second.
TINY: dict[str, object] = {
    "image_size": 24,
    "width": 6,
    "depth": 3,
    "max_epochs": 8,
    "batch_size": 16,
    "n_threads": 1,
    "seed": 0,
}


def tiny(**params: object) -> PolarCNN:
    """A :data:`TINY` network, ``params`` overriding."""
    return PolarCNN(**{**TINY, **params})  # type: ignore[arg-type]


X_TRAIN, Y_TRAIN = dataset(per_class=12, seed=0)
X_TEST, Y_TEST = dataset(per_class=5, seed=1)


@pytest.fixture(scope="module")
def villegas(shared_data: Path) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.str_]]:
    """Villegas-Camacho c8 (FTIR, 6 reference polymers) as model features, every fifth spectrum.

    Labels are canonical: HDPE and LDPE are both PE, as the library names them.
    """
    spectra = read_spectra(shared_data / "villegas_camacho2024_c8")[::5]
    features = transform(build_pipeline("default"), spectra)
    labels = np.array([canonical_label(str(s.metadata["label"])) for s in spectra])
    return features, labels


class TestPolarImages:
    def test_shape_type_and_range(self) -> None:
        images = polar_images(X_TRAIN, size=32)
        assert images.shape == (X_TRAIN.shape[0], 32, 32)
        assert images.dtype == np.float32
        assert images.min() >= 0.0
        assert images.max() < 1.0
        assert (images.max(axis=(1, 2)) > 0.5).all()  # every curve leaves ink

    def test_deterministic_and_independent_of_the_batch(self) -> None:
        first = polar_images(X_TRAIN, size=32)
        np.testing.assert_array_equal(polar_images(X_TRAIN, size=32), first)
        alone = np.stack([polar_images(row[np.newaxis], size=32)[0] for row in X_TRAIN[:5]])
        np.testing.assert_allclose(alone, first[:5], rtol=0, atol=1e-6)

    def test_chunking_does_not_change_the_images(self, monkeypatch: pytest.MonkeyPatch) -> None:
        whole = polar_images(X_TRAIN, size=32)
        monkeypatch.setattr(cnn_encoding, "RASTER_CHUNK_SAMPLES", 10)  # one row per chunk
        np.testing.assert_allclose(polar_images(X_TRAIN, size=32), whole, rtol=0, atol=1e-6)

    def test_different_spectra_give_different_images(self) -> None:
        images = polar_images(X_TRAIN[[0, 12, 24]], size=32)  # one of each polymer
        for i in range(3):
            for j in range(i + 1, 3):
                assert np.abs(images[i] - images[j]).sum() > 10.0

    def test_invariant_to_offset_and_positive_scale(self) -> None:
        row = X_TRAIN[0][np.newaxis]
        shifted = polar_images(3.0 * row + 7.0, size=32)
        np.testing.assert_allclose(shifted, polar_images(row, size=32), atol=1e-5)

    def test_constant_spectrum_is_the_inner_circle(self) -> None:
        image = polar_images(np.ones((1, 400)), size=33, inner_radius=0.5)[0]
        rows, cols = np.nonzero(image > 0.05)
        radius = np.hypot(rows - 16.0, cols - 16.0) / 16.0
        assert np.all(np.abs(radius - 0.5) < 0.1)

    def test_angle_follows_the_wavenumber_axis(self) -> None:
        """A single band a quarter of the way along the axis points straight up (90 degrees)."""
        row = np.zeros(400)
        row[100] = 1.0
        image = polar_images(row[np.newaxis], size=33, inner_radius=0.2)[0]
        assert image[0:3, 15:18].max() > 0.3  # the tip of the spike at radius 1, top centre
        assert image[30:, :].max() < 0.05  # nothing at the bottom edge

    def test_rejects_bad_input(self) -> None:
        with pytest.raises(ValueError, match="NaN"):
            polar_images(np.array([[0.0, np.nan, 1.0]]))
        with pytest.raises(ValueError, match="2-D"):
            polar_images(np.zeros(5))
        with pytest.raises(ValueError, match="size"):
            polar_images(np.zeros((1, 5)), size=1)


class TestGramianField:
    def test_shape_symmetry_and_range(self) -> None:
        fields = gramian_field(X_TRAIN, 20)
        assert fields.shape == (X_TRAIN.shape[0], 20, 20)
        assert fields.dtype == np.float32
        np.testing.assert_allclose(fields, fields.transpose(0, 2, 1), atol=1e-6)
        assert fields.min() >= -1.0 - 1e-6
        assert fields.max() <= 1.0 + 1e-6

    def test_diagonal_is_cos_of_twice_the_angle(self) -> None:
        row = np.arange(8.0)  # averages to 0.5, 2.5, 4.5, 6.5, scaled to -1 .. 1
        x = np.linspace(-1.0, 1.0, 4)
        np.testing.assert_allclose(np.diag(gramian_field(row[np.newaxis], 4)[0]), 2 * x**2 - 1, atol=1e-6)

    def test_different_spectra_give_different_fields(self) -> None:
        fields = gramian_field(X_TRAIN[[0, 12]], 32)
        assert np.abs(fields[0] - fields[1]).mean() > 0.05


class TestParameters:
    def test_init_only_stores_parameters(self) -> None:
        model = PolarCNN(width=-1, encoding="nonsense")
        assert model.get_params()["width"] == -1
        assert [name for name in vars(model) if name.endswith("_")] == []
        with pytest.raises(ValueError, match="encoding"):
            model.fit(X_TRAIN, Y_TRAIN)
        with pytest.raises(ValueError, match="width"):
            PolarCNN(width=-1).fit(X_TRAIN, Y_TRAIN)
        with pytest.raises(ValueError, match="image_size"):
            PolarCNN(image_size=8, depth=4).fit(X_TRAIN, Y_TRAIN)

    def test_clone_and_repr(self) -> None:
        model = tiny(seed=3)
        twin = model.clone()
        assert twin.get_params() == model.get_params()
        assert "seed=3" in repr(model)

    def test_device_auto_falls_back_to_the_cpu(self) -> None:
        model = tiny(device="auto", max_epochs=1).fit(X_TRAIN, Y_TRAIN)
        assert model.network_ is not None
        expected = "cuda" if torch.cuda.is_available() else "cpu"
        assert next(model.network_.parameters()).device.type == expected
        with pytest.raises(ValueError, match="device"):
            tiny(device="tpu").fit(X_TRAIN, Y_TRAIN)

    def test_unfitted(self) -> None:
        model = tiny()
        assert model.predict_proba_one(X_TEST[0]) == {}
        assert model.predict_one(X_TEST[0]) is None
        with pytest.raises(NotFittedError):
            model.predict_proba(X_TEST)


class TestTraining:
    def test_learns_separable_classes(self) -> None:
        model = tiny().fit(X_TRAIN, Y_TRAIN)
        assert model.classes_ == ["PE", "PS", "PET"]
        assert model.n_features_in_ == POINTS
        proba = model.predict_proba(X_TEST)
        assert proba.shape == (len(Y_TEST), 3)
        np.testing.assert_allclose(proba.sum(axis=1), 1.0, atol=1e-9)
        assert np.mean(model.predict(X_TEST) == np.array(Y_TEST)) >= 0.9

    def test_real_polymers_above_chance(
        self, villegas: tuple[npt.NDArray[np.float32], npt.NDArray[np.str_]]
    ) -> None:
        X, y = villegas
        rng = np.random.default_rng(0)
        train, test = [], []
        for label in np.unique(y):
            rows = rng.permutation(np.flatnonzero(y == label))
            train.append(rows[:20])
            test.append(rows[20:40])
        train_rows, test_rows = np.concatenate(train), np.concatenate(test)
        model = tiny(image_size=32, width=8, max_epochs=12).fit(X[train_rows], y[train_rows].tolist())
        accuracy = float(np.mean(model.predict(X[test_rows]) == y[test_rows]))
        chance = 1.0 / len(np.unique(y))
        assert accuracy >= 0.8, f"accuracy {accuracy:.3f} (chance {chance:.2f})"

    def test_early_stopping_stops_and_keeps_the_best_epoch(self) -> None:
        model = tiny(max_epochs=60, patience=2, learning_rate=0.01).fit(X_TRAIN, Y_TRAIN)
        assert model.n_epochs_ < 60
        assert len(model.history_) == model.n_epochs_
        assert model.n_epochs_ - model.best_epoch_ == 2
        losses = [record["valid_loss"] for record in model.history_]
        best = losses[model.best_epoch_ - 1]
        assert all(loss >= best * (1 - cnn_estimator.MIN_IMPROVEMENT) for loss in losses)

    def test_without_validation_rows_runs_every_epoch(self) -> None:
        model = tiny(max_epochs=3, validation_fraction=0.0).fit(X_TRAIN, Y_TRAIN)
        assert model.n_epochs_ == 3
        assert model.best_epoch_ == 3
        assert np.isnan(model.history_[0]["valid_loss"])

    def test_synthetic_spectra_inside_fit(self) -> None:
        model = tiny(n_synthetic=10).fit(X_TRAIN[::4], Y_TRAIN[::4])
        assert model.training_spectra_.shape[0] == len(Y_TRAIN[::4])  # mixtures are regenerated, not kept
        assert np.mean(model.predict(X_TEST) == np.array(Y_TEST)) >= 0.8

    def test_single_class_and_single_spectrum(self) -> None:
        model = tiny()
        model.learn_one(X_TRAIN[0], "PE")
        assert model.predict_proba_one(X_TEST[0]) == {"PE": 1.0}

    def test_torch_settings_are_restored(self) -> None:
        threads = torch.get_num_threads()
        deterministic = torch.are_deterministic_algorithms_enabled()
        model = tiny(n_threads=1).fit(X_TRAIN, Y_TRAIN)
        model.predict_proba(X_TEST)
        assert torch.get_num_threads() == threads
        assert torch.are_deterministic_algorithms_enabled() == deterministic

    def test_training_leaves_the_global_random_state_alone(self) -> None:
        torch.manual_seed(123)
        expected = torch.rand(3)
        torch.manual_seed(123)
        tiny(max_epochs=1).fit(X_TRAIN, Y_TRAIN)
        torch.testing.assert_close(torch.rand(3), expected)


class TestDeterminism:
    def test_same_seed_same_predictions(self) -> None:
        first = tiny(seed=7).fit(X_TRAIN, Y_TRAIN).predict_proba(X_TEST)
        second = tiny(seed=7).fit(X_TRAIN, Y_TRAIN).predict_proba(X_TEST)
        np.testing.assert_array_equal(first, second)

    def test_another_seed_another_network(self) -> None:
        first = tiny(seed=7).fit(X_TRAIN, Y_TRAIN).predict_proba(X_TEST)
        second = tiny(seed=8).fit(X_TRAIN, Y_TRAIN).predict_proba(X_TEST)
        assert not np.array_equal(first, second)

    def test_fitting_twice_equals_fitting_once(self) -> None:
        once = tiny().fit(X_TRAIN, Y_TRAIN)
        twice = tiny().fit(X_TEST, Y_TEST).fit(X_TRAIN, Y_TRAIN)
        np.testing.assert_array_equal(twice.predict_proba(X_TEST), once.predict_proba(X_TEST))

    def test_learn_one_stream_equals_fit(self) -> None:
        streamed = tiny()
        for row, label in zip(X_TRAIN, Y_TRAIN, strict=True):
            streamed.learn_one(row, label)
        assert streamed.stale_
        fitted = tiny().fit(X_TRAIN, Y_TRAIN)
        np.testing.assert_array_equal(streamed.predict_proba(X_TEST), fitted.predict_proba(X_TEST))
        assert not streamed.stale_

    def test_learn_one_after_fit_adds_a_class(self) -> None:
        model = tiny().fit(X_TRAIN, Y_TRAIN)
        new = X_TRAIN[0] * 0.0 + np.exp(-0.5 * ((AXIS - 3300.0) / 40.0) ** 2)
        for shift in (0.0, 0.01, 0.02):
            model.learn_one(new + shift * AXIS / AXIS.max(), "PA")
        assert model.classes_ == ["PE", "PS", "PET", "PA"]
        assert model.predict_proba(X_TEST).shape == (len(Y_TEST), 4)


class TestInputs:
    def test_nan_or_inf_raises_value_error(self) -> None:
        model = tiny().fit(X_TRAIN, Y_TRAIN)
        before = model.predict_proba(X_TEST)
        for value in (np.nan, np.inf, -np.inf):
            bad = X_TEST[0].copy()
            bad[10] = value
            with pytest.raises(ValueError, match="NaN"):
                tiny().fit(np.vstack([X_TRAIN, bad]), [*Y_TRAIN, "PE"])
            with pytest.raises(ValueError, match="NaN"):
                model.predict_proba(bad[np.newaxis])
            with pytest.raises(ValueError, match="NaN"):
                model.learn_one(bad, "PE")
            with pytest.raises(ValueError, match="NaN"):
                model.predict_proba_one({i: float(v) for i, v in enumerate(bad)})
        assert not model.stale_
        np.testing.assert_array_equal(model.predict_proba(X_TEST), before)

    def test_wrong_width_and_label_count(self) -> None:
        model = tiny().fit(X_TRAIN, Y_TRAIN)
        with pytest.raises(ValueError, match="points"):
            model.predict_proba(X_TEST[:, :-1])
        with pytest.raises(ValueError, match="labels"):
            tiny().fit(X_TRAIN, Y_TRAIN[:-1])

    def test_dict_with_named_points(self) -> None:
        model = tiny()
        for row, label in zip(X_TRAIN, Y_TRAIN, strict=True):
            model.learn_one({f"w{i}": float(v) for i, v in enumerate(row)}, label)
        assert model.feature_names_in_ is not None
        assert model.predict_one({f"w{i}": float(v) for i, v in enumerate(X_TEST[0])}) == Y_TEST[0]
        with pytest.raises(ValueError, match="keys"):
            model.predict_one({i: float(v) for i, v in enumerate(X_TEST[0])})


class TestPersistence:
    def test_pickle_round_trip(self) -> None:
        model = tiny().fit(X_TRAIN, Y_TRAIN)
        twin = pickle.loads(pickle.dumps(model))
        np.testing.assert_array_equal(twin.predict_proba(X_TEST), model.predict_proba(X_TEST))
        assert twin.history_ == model.history_

    def test_pickle_with_rows_waiting(self) -> None:
        model = tiny().fit(X_TRAIN[:-3], Y_TRAIN[:-3])
        for row, label in zip(X_TRAIN[-3:], Y_TRAIN[-3:], strict=True):
            model.learn_one(row, label)
        twin = pickle.loads(pickle.dumps(model))
        assert twin.stale_
        np.testing.assert_array_equal(twin.predict_proba(X_TEST), model.predict_proba(X_TEST))

    def test_save_load_round_trip(self, tmp_path: Path) -> None:
        model = tiny().fit(X_TRAIN, Y_TRAIN)
        path = tmp_path / "models" / "cnn.pt"
        model.save(path)
        assert [p.name for p in path.parent.iterdir()] == ["cnn.pt"]  # no temporary file left
        loaded = PolarCNN.load(path)
        assert loaded.get_params() == model.get_params()
        assert loaded.classes_ == model.classes_
        np.testing.assert_array_equal(loaded.predict_proba(X_TEST), model.predict_proba(X_TEST))
        # It can go on learning: the training rows came with it.
        for model_or_loaded in (model, loaded):
            model_or_loaded.learn_one(X_TEST[0], Y_TEST[0])
        np.testing.assert_array_equal(loaded.predict_proba(X_TEST), model.predict_proba(X_TEST))

    def test_save_with_rows_waiting(self, tmp_path: Path) -> None:
        model = tiny().fit(X_TRAIN[:-3], Y_TRAIN[:-3])
        for row, label in zip(X_TRAIN[-3:], Y_TRAIN[-3:], strict=True):
            model.learn_one(row, label)
        model.save(tmp_path / "cnn.pt")
        assert model.stale_  # saving trains nothing
        loaded = PolarCNN.load(tmp_path / "cnn.pt")
        assert loaded.stale_
        np.testing.assert_array_equal(loaded.predict_proba(X_TEST), model.predict_proba(X_TEST))

    def test_save_unfitted_and_reject_foreign_files(self, tmp_path: Path) -> None:
        tiny(seed=4).save(tmp_path / "empty.pt")
        assert PolarCNN.load(tmp_path / "empty.pt").get_params() == tiny(seed=4).get_params()
        torch.save({"something": 1}, tmp_path / "other.pt")
        with pytest.raises(ValueError, match="not a PolarCNN checkpoint"):
            PolarCNN.load(tmp_path / "other.pt")

    def test_labels_a_checkpoint_cannot_hold(self, tmp_path: Path) -> None:
        model = tiny().fit(X_TRAIN, [frozenset([label]) for label in Y_TRAIN])
        with pytest.raises(ValueError, match="cannot be saved"):
            model.save(tmp_path / "cnn.pt")
        assert not (tmp_path / "cnn.pt").exists()


class TestServedCNN:
    """The network as the daemon serves it: an ONNX file run by ONNX Runtime, with no torch."""

    def test_onnx_answers_as_the_torch_network(self, tmp_path: Path) -> None:
        model = tiny().fit(X_TRAIN, Y_TRAIN)
        export_onnx(model, tmp_path / "m" / "cnn.onnx", metadata={"weight": 0.3, "note": "test"})
        assert [p.name for p in (tmp_path / "m").iterdir()] == ["cnn.onnx"]  # no temporary file left
        served = ServedCNN.load(tmp_path / "m" / "cnn.onnx")
        assert served.classes_ == model.classes_ and served.n_features_in_ == POINTS
        assert served.weight == 0.3 and served.metadata["note"] == "test"
        np.testing.assert_allclose(served.predict_proba(X_TEST), model.predict_proba(X_TEST), atol=1e-5)
        np.testing.assert_allclose(
            served.predict_proba(X_TEST[:1]), model.predict_proba(X_TEST[:1]), atol=1e-5
        )
        twin = pickle.loads(pickle.dumps(served))  # a map's snapshot of the served model pickles it
        np.testing.assert_array_equal(twin.predict_proba(X_TEST), served.predict_proba(X_TEST))

    def test_other_widths_and_foreign_files_are_refused(self, tmp_path: Path) -> None:
        export_onnx(tiny().fit(X_TRAIN, Y_TRAIN), tmp_path / "cnn.onnx")
        served = ServedCNN.load(tmp_path / "cnn.onnx")
        assert served.weight == 0.0  # a file without a weight earns none
        with pytest.raises(ValueError, match="points"):
            served.predict_proba(X_TEST[:, :-1])
        import onnx

        bare = onnx.load(tmp_path / "cnn.onnx")
        del bare.metadata_props[:]
        onnx.save(bare, tmp_path / "bare.onnx")
        with pytest.raises(ValueError, match="no mpwatch metadata"):
            ServedCNN.load(tmp_path / "bare.onnx")
        with pytest.raises(ValueError, match="no trained network"):
            export_onnx(PolarCNN(), tmp_path / "none.onnx")

    def test_serving_imports_no_torch(self) -> None:
        shipped = Path(evaluate.__file__).parents[1] / "data" / "default_library" / "cnn.onnx"
        code = (
            "import sys, numpy as np; from engine.models.cnn import ServedCNN; "
            f"m = ServedCNN.load({str(shipped)!r}); m.predict_proba(np.zeros((2, m.n_features_in_))); "
            "print('torch' in sys.modules)"
        )
        done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
        assert done.stdout.strip() == "False"


#: The study's Ns in the tests: two per member keep the CNN part to seconds.
STUDY_NS = {"subknn": (5, 20), "cnn": (5, 20)}
PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def flopp_study(shared_data: Path, tmp_path_factory: pytest.TempPathFactory) -> tuple[Study, list[Path]]:
    """The study on FLOPP pristine (185 spectra, 14 classes), both members, the CNN tiny."""
    return run_study(
        f"{shared_data / 'flopp_frond2021'}@library=FLOPP",
        tmp_path_factory.mktemp("study"),
        members=("subknn", "cnn"),
        config=ModelConfig(),
        ns=STUDY_NS,
        cnn_params=TINY,
    )


class TestStudy:
    def test_json_holds_every_point_of_both_members(self, flopp_study: tuple[Study, list[Path]]) -> None:
        _, (json_path, _, _) = flopp_study
        data: dict[str, Any] = json.loads(json_path.read_text())
        for member, ns in STUDY_NS.items():
            points = [p for p in data["points"] if p["member"] == member]
            assert [p["n"] for p in points] == list(ns)
            assert [p["n_train"] for p in points] == [n * data["n_classes"] for n in ns]
            assert all(p["seconds_train"] > 0 for p in points)
            (reference,) = [p for p in data["references"] if p["member"] == member]
            assert reference["n"] == 0
            assert reference["n_train"] == data["n_originals"] == 185
        assert data["cv_folds"] == 5
        assert data["cnn_params"]["image_size"] == 24
        assert data["cnn_params"]["device"] == "cpu"
        assert data["cnn_params"]["n_threads"] == 1

    def test_figures_are_pngs(self, flopp_study: tuple[Study, list[Path]]) -> None:
        import matplotlib.image

        _, (_, scores, times) = flopp_study
        assert scores.name == "study_flopp_frond2021.png"
        assert times.name == "study_flopp_frond2021_time.png"
        for path in (scores, times):
            assert path.read_bytes().startswith(PNG_SIGNATURE)
            height, width, _ = matplotlib.image.imread(path).shape
            assert width > 600 and height > 400
        assert matplotlib.image.imread(scores).shape[1] > matplotlib.image.imread(times).shape[1]  # 3 panels

    def test_both_members_learn_the_real_polymers(self, flopp_study: tuple[Study, list[Path]]) -> None:
        study, _ = flopp_study
        knn, net = study.curve("subknn")[-1], study.curve("cnn")[-1]
        assert knn.n == net.n == 20
        # Measured 0.995 and 0.897; chance is 1/14.
        assert knn.accuracy >= 0.95 and knn.macro_recall >= 0.95
        assert net.accuracy >= 0.75 and net.macro_recall >= 0.75
        assert study.reference("cnn").accuracy >= 0.6  # the tiny CNN on 4/5 of the originals: 0.80
        # The CNN trains far more slowly than the kNN, whatever the machine.
        assert net.seconds_train > knn.seconds_train

    def test_members_are_checked(self) -> None:
        assert list(study_plan(["cnn"])) == ["cnn"]
        assert study_plan(["subknn"], {"subknn": [3]}) == {"subknn": (3,)}
        with pytest.raises(ValueError, match="members must be among"):
            study_plan(["subknn", "svm"])
        with pytest.raises(ValueError, match="members must be among"):
            study_plan([])
        with pytest.raises(SystemExit):
            mpwatch(["evaluate", "--study", "x", "--study-members", "knn"])

    def test_evaluate_study_without_the_cnn(self, shared_data: Path, tmp_path: Path) -> None:
        source = f"{shared_data / 'flopp_frond2021'}@library=FLOPP"
        assert (
            mpwatch(["evaluate", "--study", source, "--study-members", "subknn", "--out", str(tmp_path)]) == 0
        )
        data = json.loads((tmp_path / "study_flopp_frond2021.json").read_text())
        assert {p["member"] for p in [*data["points"], *data["references"]]} == {"subknn"}
        assert [p["n"] for p in data["points"]] == [10, 20, 30, 40, 50, 75, 100]
        assert data["cnn_params"] == {}
        assert (tmp_path / "study_flopp_frond2021_time.png").read_bytes().startswith(PNG_SIGNATURE)


@pytest.fixture(scope="module")
def flopp_cross_source(
    shared_data: Path, tmp_path_factory: pytest.TempPathFactory
) -> tuple[dict[str, Any], Path]:
    """``mpwatch evaluate --members subknn,cnn,served``: FLOPP pristine (185) -> FLOPP-e (195), the CNN tiny.

    Returns the JSON report and the output folder.
    """
    out = tmp_path_factory.mktemp("cross_source")
    flopp = shared_data / "flopp_frond2021"
    argv = ["evaluate", "--library", f"{flopp}@library=FLOPP", "--test", f"{flopp}@library=FLOPP-e"]
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(evaluate, "SERVED_CNN", {**evaluate.SERVED_CNN, **TINY})
        assert mpwatch([*argv, "--members", "subknn,cnn,served", "--out", str(out)]) == 0
    return json.loads((out / "cross_source.json").read_text()), out


SCORES = ("accuracy", "macro_precision", "macro_recall", "macro_f1", "false_reject_rate")


class TestServedMember:
    """``served``: the kNN decides with the CNN beside it; at weight 0 the CNN can only veto."""

    def test_the_veto_only_turns_known_into_unknown(
        self, flopp_cross_source: tuple[dict[str, Any], Path]
    ) -> None:
        members = flopp_cross_source[0]["members"]
        served, knn = members["served"], members["subknn"]
        assert served["accuracy"] == knn["accuracy"]  # the same closed-set answers
        assert served["false_reject_rate"] >= knn["false_reject_rate"]
        assert served["cnn_params"]["image_size"] == 24

    def test_whole_families_held_out_with_the_cnn_beside_the_knn(self, shared_data: Path) -> None:
        flopp = shared_data / "flopp_frond2021"
        library = library_from_sources([f"{flopp}@library=FLOPP"])
        test = evaluate.load_source(f"{flopp}@library=FLOPP-e")
        config = ModelConfig(disagreement_r=1.0)  # every disagreement vetoes: the effect is visible
        held = {
            member: evaluate.leave_one_out(
                library, test, grouping="family", config=config, member=member, cnn_params=TINY, min_test=10
            )
            for member in ("subknn", "served")
        }
        assert held["served"].member == "served" and list(held["served"].unknown_rate) == list(
            held["subknn"].unknown_rate
        )
        for family, rate in held["subknn"].unknown_rate.items():
            assert held["served"].unknown_rate[family] >= rate
            assert held["served"].known_reject_rate[family] >= held["subknn"].known_reject_rate[family]
        # A tiny CNN disagrees with some accepted particles, and each of those is vetoed.
        assert sum(held["served"].known_reject_rate.values()) > sum(held["subknn"].known_reject_rate.values())


class TestCrossSourceMembers:
    def test_json_holds_both_members_scores(self, flopp_cross_source: tuple[dict[str, Any], Path]) -> None:
        data, out = flopp_cross_source
        members = data["members"]
        assert list(members) == ["subknn", "cnn", "served", "openspecy"]  # the recipe scored beside them
        for name, report in members.items():
            assert report["member"] == name
            assert report["n_test"] == 195 and report["n_in_library"] == 189
            assert all(0.0 <= report[key] <= 1.0 for key in SCORES)
            confusion = np.asarray(report["confusion"])
            n = len(report["classes"])
            accepted = round((1.0 - report["false_reject_rate"]) * report["n_in_library"])
            assert int(np.trace(confusion[:n, :n])) == round(report["accepted_accuracy"] * accepted)
            assert int(confusion.sum()) == report["n_test"]  # every spectrum counted once
        # The first member's report stays at the top level, as before --members existed.
        assert data["member"] == "subknn" and data["accuracy"] == members["subknn"]["accuracy"]
        assert members["subknn"]["cnn_params"] == {}
        assert members["cnn"]["cnn_params"]["image_size"] == 24
        assert members["cnn"]["cnn_params"]["device"] == "cpu"
        assert members["cnn"]["cnn_params"]["n_threads"] == 1
        # The CNN decides in its report: its predictions are not the kNN's.
        assert members["cnn"]["confusion"] != members["subknn"]["confusion"]
        for png in ("confusion.png", "confusion_cnn.png"):
            assert (out / png).read_bytes().startswith(PNG_SIGNATURE)

    def test_both_members_identify_environmental_particles(
        self, flopp_cross_source: tuple[dict[str, Any], Path]
    ) -> None:
        knn, net = (flopp_cross_source[0]["members"][m] for m in ("subknn", "cnn"))
        # Measured 0.968 / 0.950 and, over seeds 0 to 4, the tiny CNN 0.926 to 0.947 / 0.83 to 0.94.
        assert knn["accuracy"] >= 0.95 and knn["macro_f1"] >= 0.9
        assert net["accuracy"] >= 0.85 and net["macro_f1"] >= 0.7
        assert net["seconds_build"] > knn["seconds_build"]  # the CNN's training is in its build

    def test_cnn_trains_on_the_knn_rows(self, shared_data: Path) -> None:
        library = library_from_sources([f"{shared_data / 'flopp_frond2021'}@library=FLOPP"])
        model = IdentificationModel(library, ModelConfig(n_synthetic=7))
        X, y = model.training_set()
        counts = library.class_counts()
        synthetic = 7 * sum(n >= 2 for n in counts.values())
        assert X.shape == (len(library.labels) + synthetic, library.preprocessed.shape[1])
        assert y[: len(library.labels)] == library.labels
        np.testing.assert_array_equal(X[: len(library.labels)], library.preprocessed)
        assert sum(len(ids) for ids in model.synthetic_ids_.values()) == synthetic
        again, _ = model.training_set()
        np.testing.assert_array_equal(X, again)  # the same seeds draw the same synthetic spectra

    def test_members_default_to_the_knn(self, shared_data: Path, tmp_path: Path) -> None:
        flopp = shared_data / "flopp_frond2021"
        argv = ["evaluate", "--library", f"{flopp}@library=FLOPP", "--test", f"{flopp}@library=FLOPP-e"]
        assert mpwatch([*argv, "--out", str(tmp_path)]) == 0
        data = json.loads((tmp_path / "cross_source.json").read_text())
        assert list(data["members"]) == ["subknn", "openspecy"]
        assert not (tmp_path / "confusion_cnn.png").exists()
        assert check_members(["cnn", "subknn", "cnn"]) == ("cnn", "subknn")
        with pytest.raises(ValueError, match="members must be among"):
            evaluate.cross_source(library_from_sources([]), [], member="svm")
        with pytest.raises(SystemExit):
            mpwatch([*argv, "--members", "knn"])
