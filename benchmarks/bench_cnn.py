"""Training time, single-spectrum latency and accuracy of :class:`engine.models.cnn.PolarCNN`.

The KWR study's CNN on polar images took 5 minutes to train and scored below
the subspace kNN. This measures ours on the same kind of task:

- Data: the Open Specy FTIR library and FLOPP/FLOPP-e (all real spectra),
  preprocessed with the ``default`` pipeline (the model features), labels
  through :func:`engine.core.labels.canonical_label`. The ``--classes`` largest
  classes with at least three spectra are kept (two to mix, one to test).
- Split: per class a ``--test-fraction`` of the originals (at least one) is
  held out; ``--per-class`` synthetic spectra per class are mixed from the
  rest (:func:`engine.core.augment.synthesize`) and are all the CNN trains on, as
  in the study.
- Measured: ``fit`` wall time with the default configuration on
  ``--threads`` torch threads; the median latency of ``predict_proba_one``
  (polar encoding included) over ``--repeats`` calls; batch throughput;
  accuracy and macro-F1 on the held-out originals. The subspace kNN trained
  on the same synthetic spectra is measured beside it.
- Served: the same network exported to ONNX and run by ONNX Runtime on one
  thread (:class:`~engine.models.cnn.ServedCNN`, what the daemon serves), one
  spectrum and batches of 64; and the served model of the bundled FTIR
  library with its shipped CNN against the same model without it (the
  baseline), per spectrum alone and in batches of 64 (FLOPP-e particles),
  everything that ``classify`` does included.

Timings depend on what else the machine runs: the load average before and
after is recorded with them.

Run ``python -m benchmarks.bench_cnn --help`` for the options.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from sklearn.metrics import f1_score

from engine.analysis.evaluate import load_source
from engine.core.augment import synthesize
from engine.core.labels import canonical_label
from engine.core.library import DEFAULT_LIBRARY, ReferenceLibrary
from engine.core.preprocess import build_pipeline, transform
from engine.io import read_spectra
from engine.models.cnn import PolarCNN, ServedCNN, cnn_for, export_onnx, polar_images
from engine.models.cnn.runtime import BESIDE_LIBRARY
from engine.models.served import IdentificationModel
from engine.models.subknn import SubspaceKNN

REPO_ROOT = Path(__file__).resolve().parents[1]
DATA = REPO_ROOT.parent / "shared" / "data"
SOURCES = ("openspecy_ftir_2023", "flopp_frond2021")


def load_data(data: Path, classes: int) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.str_], list[str]]:
    """Model features and canonical labels of the ``classes`` largest classes (at least 3 spectra each)."""
    spectra = [s for source in SOURCES for s in read_spectra(data / source)]
    labels = np.array([canonical_label(str(s.metadata["label"])) for s in spectra])
    counts = Counter(labels.tolist())
    by_size = sorted(counts.items(), key=lambda kv: (-kv[1], kv[0]))
    chosen = [label for label, n in by_size if n >= 3][:classes]
    keep = np.flatnonzero(np.isin(labels, chosen))
    features = transform(build_pipeline("default"), [spectra[i] for i in keep])
    return features, labels[keep], chosen


def split(
    labels: npt.NDArray[np.str_], fraction: float, seed: int
) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """Per class: a ``fraction`` of the rows (at least one, never all) held out."""
    rng = np.random.default_rng(seed)
    train, test = [], []
    for label in dict.fromkeys(labels.tolist()):
        rows = rng.permutation(np.flatnonzero(labels == label))
        n_test = min(rows.size - 2, max(1, round(fraction * rows.size)))
        test.append(rows[:n_test])
        train.append(rows[n_test:])
    return np.sort(np.concatenate(train)), np.sort(np.concatenate(test))


def median_ms(func: Any, repeats: int) -> float:
    times = []
    for i in range(repeats):
        started = time.perf_counter()
        func(i)
        times.append(time.perf_counter() - started)
    return 1000.0 * statistics.median(times)


def scores(truth: npt.NDArray[np.str_], predicted: npt.NDArray[Any]) -> dict[str, float]:
    predicted = np.asarray(predicted).astype(str)
    return {
        "accuracy": float(np.mean(predicted == truth)),
        "macro_f1": float(f1_score(truth, predicted, average="macro", zero_division=0)),
    }


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--classes", type=int, default=20, help="number of classes (the largest ones)")
    parser.add_argument("--per-class", type=int, default=100, help="synthetic training spectra per class")
    parser.add_argument("--test-fraction", type=float, default=0.25, help="originals held out per class")
    parser.add_argument("--threads", type=int, default=2, help="torch threads for training and prediction")
    parser.add_argument("--repeats", type=int, default=200, help="single-spectrum predictions timed")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--data", type=Path, default=DATA, help="folder holding the labelled sets")
    parser.add_argument("--out", type=Path, default=REPO_ROOT / "artifacts" / "bench_cnn", help="JSON folder")
    parser.add_argument("--no-subknn", action="store_true", help="skip the subspace-kNN comparison")
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    load_before = os.getloadavg()
    X, y, classes = load_data(args.data, args.classes)
    train, test = split(y, args.test_fraction, args.seed)
    X_syn, y_syn = synthesize(X[train], y[train].tolist(), n_per_class=args.per_class, seed=args.seed)
    X_test, y_test = X[test], y[test]

    model = PolarCNN(n_threads=args.threads, seed=args.seed)
    started = time.perf_counter()
    model.fit(X_syn, y_syn)
    train_s = time.perf_counter() - started

    started = time.perf_counter()
    predicted = model.predict(X_test)
    batch_s = time.perf_counter() - started
    model.predict_proba_one(X_test[0])  # warm-up
    latency_ms = median_ms(lambda i: model.predict_proba_one(X_test[i % len(X_test)]), args.repeats)
    encode_ms = median_ms(
        lambda i: polar_images(X_test[i % len(X_test)][np.newaxis], size=model.image_size), args.repeats
    )
    cnn = {
        "train_seconds": train_s,
        "epochs": model.n_epochs_,
        "best_epoch": model.best_epoch_,
        "seconds_per_epoch": train_s / max(model.n_epochs_, 1),
        "latency_ms_median": latency_ms,
        "encode_ms_median": encode_ms,
        "batch_ms_per_spectrum": 1000.0 * batch_s / len(X_test),
        **scores(y_test, predicted),
        "params": model.get_params(),
        "n_weights": sum(p.numel() for p in model.network_.parameters()) if model.network_ else 0,
        "history": model.history_,
    }

    served = served_costs(model, X_test, args)

    subknn: dict[str, Any] | None = None
    if not args.no_subknn:
        knn = SubspaceKNN(seed=args.seed, n_threads=args.threads)
        started = time.perf_counter()
        knn.fit(X_syn, y_syn)
        knn_train_s = time.perf_counter() - started
        knn_pred = knn.predict(X_test)
        knn.predict_proba_one(X_test[0])
        knn_latency = median_ms(lambda i: knn.predict_proba_one(X_test[i % len(X_test)]), args.repeats)
        subknn = {"train_seconds": knn_train_s, "latency_ms_median": knn_latency, **scores(y_test, knn_pred)}

    report = {
        "benchmark": "bench_cnn",
        "when": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": {
            "cpu": platform.processor() or platform.machine(),
            "cpus": os.cpu_count(),
            "torch": torch.__version__,
            "load_average_before": load_before,
            "load_average_after": os.getloadavg(),
        },
        "data": {
            "sources": list(SOURCES),
            "classes": classes,
            "train_originals": len(train),
            "test_originals": len(test),
            "synthetic_per_class": args.per_class,
            "training_spectra": len(y_syn),
            "points": X.shape[1],
        },
        "threads": args.threads,
        "polar_cnn": cnn,
        "served": served,
        "subknn": subknn,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"bench_cnn_{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    path.write_text(json.dumps(report, indent=2, default=str))

    print(
        f"{len(classes)} classes, {len(y_syn)} synthetic training spectra, {len(test)} held-out originals, "
        f"{args.threads} threads, load average {load_before[0]:.1f} -> {os.getloadavg()[0]:.1f}"
    )
    print(f"{'model':<12}{'train s':>10}{'epochs':>8}{'1-spectrum ms':>15}{'accuracy':>10}{'macro-F1':>10}")
    print(
        f"{'PolarCNN':<12}{train_s:>10.1f}{model.n_epochs_:>8d}{latency_ms:>15.2f}"
        f"{cnn['accuracy']:>10.3f}{cnn['macro_f1']:>10.3f}"
    )
    if subknn is not None:
        print(
            f"{'SubspaceKNN':<12}{subknn['train_seconds']:>10.1f}{'':>8}{subknn['latency_ms_median']:>15.2f}"
            f"{subknn['accuracy']:>10.3f}{subknn['macro_f1']:>10.3f}"
        )
    print(
        f"polar encoding alone: {encode_ms:.2f} ms per spectrum; batch prediction "
        f"{cnn['batch_ms_per_spectrum']:.2f} ms per spectrum"
    )
    print(
        f"served by ONNX Runtime: {served['onnx_latency_ms_median']:.2f} ms for one spectrum, "
        f"{served['onnx_batch64_ms_per_spectrum']:.3f} ms per spectrum in batches of 64 (encoding included)"
    )
    print(
        "bundled library, classify per spectrum (alone / in batches of 64), without -> with the shipped CNN: "
        f"{served['model_ms_alone_without_cnn']:.2f} -> {served['model_ms_alone_with_cnn']:.2f} ms, "
        f"{served['model_ms_batch64_without_cnn']:.2f} -> {served['model_ms_batch64_with_cnn']:.2f} ms"
    )
    print(f"wrote {path}")
    return 0


def served_costs(
    model: PolarCNN, X_test: npt.NDArray[np.float32], args: argparse.Namespace
) -> dict[str, float]:
    """What serving costs: the network under ONNX Runtime, and the bundled model with and without its CNN."""
    with tempfile.TemporaryDirectory() as tmp:
        export_onnx(model, Path(tmp) / "cnn.onnx")
        onnx = ServedCNN.load(Path(tmp) / "cnn.onnx")
    onnx.predict_proba(X_test[:1])
    batch = np.resize(X_test, (64, X_test.shape[1]))
    out = {
        "onnx_latency_ms_median": median_ms(
            lambda i: onnx.predict_proba(X_test[i % len(X_test)][None]), args.repeats
        ),
        "onnx_batch64_ms_per_spectrum": median_ms(lambda i: onnx.predict_proba(batch), 20) / 64,
    }
    particles = load_source(f"{args.data / 'flopp_frond2021'}@library=FLOPP-e")[:64]
    library = ReferenceLibrary.load(DEFAULT_LIBRARY)
    served = IdentificationModel(library)
    shipped = cnn_for(library, [DEFAULT_LIBRARY / BESIDE_LIBRARY])
    for name, cnn in (("without_cnn", None), ("with_cnn", shipped)):
        served.set_cnn(cnn)
        served.classify(particles[:1], aging=False)
        out[f"model_ms_alone_{name}"] = median_ms(
            lambda i: served.classify([particles[i % len(particles)]], aging=False), args.repeats
        )
        out[f"model_ms_batch64_{name}"] = (
            median_ms(lambda i: served.classify(particles, aging=False), 20) / 64
        )
    out["cnn_shipped"] = float(shipped is not None)
    return out


if __name__ == "__main__":
    raise SystemExit(main())
