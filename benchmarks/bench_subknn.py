"""Speed and memory of :class:`engine.models.subknn.SubspaceKNN` against scikit-learn's subspace kNN.

The baseline is what the KWR study's method looks like in scikit-learn:
``BaggingClassifier(KNeighborsClassifier(1), n_estimators=30, max_features=0.5,
bootstrap=False)``. Both run in the same process on the same data, for
reference libraries of 10^3, 10^4 and 10^5 spectra.

Data: the Villegas-Camacho c8 and Open Specy FTIR labelled sets, resampled to
a 4 cm-1 grid (400-4000 cm-1, 901 points; %T converted to absorbance), a
Savitzky-Golay first derivative (window 11, order 3), NaN (not measured) set
to 0. A fifth of the real spectra of each class is held out as queries, and
one polymer (PA) is held out entirely: it is the "new class" an analyst adds.
Libraries are class-balanced random convex mixtures of two training spectra
of the same class (weights from U(0.1, 0.9), summing to at most 1).

Measured, as medians over ``--repeats`` (fewer where one metric would take
longer than ``--metric-budget`` seconds; the count used is reported):

- fit time;
- batch throughput: ``predict`` on as many queries as take about 2 s;
- single-spectrum latency: ``predict_proba_one`` (baseline: ``predict_proba``
  of one row);
- adding a new class: 10 real PA spectra -> 100 mixtures -> ``add`` (the
  baseline has no incremental add: it refits on the library plus the class);
- peak resident memory while the model is built and used (``VmHWM``, reset
  per model through ``/proc/self/clear_refs``), and its increase over the
  resident memory before;
- agreement of the shortlist mode with the exact mode, and accuracy of every
  model, on the held-out real spectra (and on PA after it is added).

Run ``python -m benchmarks.bench_subknn --help`` for the options.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import resource
import statistics
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import faiss
import numpy as np
import numpy.typing as npt
import sklearn
from scipy.signal import savgol_filter
from sklearn.ensemble import BaggingClassifier
from sklearn.neighbors import KNeighborsClassifier
from threadpoolctl import threadpool_limits

from engine.io.labelled_set import load_labelled_set
from engine.models.subknn import SubspaceKNN

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("MPWATCH_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
DATASETS = ("villegas_camacho2024_c8", "openspecy_ftir_2023")
GRID = np.arange(400.0, 4000.0 + 1e-9, 4.0)
NEW_CLASS = "PA"
NEW_CLASS_REAL = 10
NEW_CLASS_SYNTHETIC = 100
SINGLE_CALLS = 30
THROUGHPUT_SECONDS = 2.0

FloatMatrix = npt.NDArray[np.float32]
Labels = npt.NDArray[np.str_]


# ---------------------------------------------------------------------- data


def preprocess(name: str) -> tuple[FloatMatrix, Labels]:
    """A labelled set on the 4 cm-1 grid, as absorbance, first derivative, NaN -> 0."""
    data = load_labelled_set(SHARED_DATA / name)
    rows = np.full((len(data), GRID.size), np.nan)
    for row in range(len(data)):
        values = data.spectra[row].astype(np.float64)
        if data.y_unit(row) == "transmittance":
            values = 2.0 - np.log10(np.clip(values, 0.1, None))  # %T -> absorbance
        measured = np.isfinite(values)
        rows[row] = np.interp(GRID, data.wavenumbers[measured], values[measured], left=np.nan, right=np.nan)
    derivative = savgol_filter(rows, 11, 3, deriv=1, axis=1, mode="nearest")
    return np.nan_to_num(derivative, nan=0.0).astype(np.float32), np.array(data.labels)


def convex_mixtures(
    X: FloatMatrix, y: Labels, per_class: dict[str, int], rng: np.random.Generator
) -> tuple[FloatMatrix, Labels]:
    """``per_class[label]`` mixtures ``w1 a + w2 b`` of two spectra of a class (w ~ U(0.1, 0.9), sum <= 1)."""
    parts, labels = [], []
    for label, count in per_class.items():
        members = np.flatnonzero(y == label)
        if count <= 0 or members.size == 0:
            continue
        first, second = rng.choice(members, count), rng.choice(members, count)
        weights = rng.uniform(0.1, 0.9, size=(count, 2))
        while (redo := weights.sum(axis=1) > 1.0).any():
            weights[redo] = rng.uniform(0.1, 0.9, size=(int(redo.sum()), 2))
        parts.append(weights[:, :1] * X[first] + weights[:, 1:] * X[second])
        labels.append(np.full(count, label))
    return np.concatenate(parts).astype(np.float32), np.concatenate(labels)


def balanced_counts(classes: list[str], total: int) -> dict[str, int]:
    base, extra = divmod(total, len(classes))
    return {label: base + (1 if i < extra else 0) for i, label in enumerate(classes)}


@dataclass
class Data:
    train_X: FloatMatrix
    train_y: Labels
    test_X: FloatMatrix
    test_y: Labels
    new_X: FloatMatrix  # 100 mixtures of 10 real spectra of the held-out class
    new_test_X: FloatMatrix  # its other real spectra
    queries: FloatMatrix  # for throughput: held-out real spectra, then mixtures of them


def load_data(seed: int) -> Data:
    rng = np.random.default_rng(seed)
    parts = [preprocess(name) for name in DATASETS]
    X = np.concatenate([p[0] for p in parts])
    y = np.concatenate([p[1] for p in parts])
    keep = y != ""
    X, y = X[keep], y[keep]
    new = np.flatnonzero(y == NEW_CLASS)
    rng.shuffle(new)
    new_real = X[new[:NEW_CLASS_REAL]]
    new_X, _ = convex_mixtures(
        new_real, np.full(NEW_CLASS_REAL, NEW_CLASS), {NEW_CLASS: NEW_CLASS_SYNTHETIC}, rng
    )
    test = np.zeros(len(y), dtype=bool)
    for label in np.unique(y):
        members = np.flatnonzero(y == label)
        if label != NEW_CLASS and members.size >= 3:
            test[rng.choice(members, size=max(1, members.size // 5), replace=False)] = True
    train = ~test & (y != NEW_CLASS)
    test_X, test_y = X[test], y[test]
    extra, _ = convex_mixtures(test_X, test_y, balanced_counts(sorted(set(test_y)), 4096), rng)
    queries = np.concatenate([test_X, extra])[:4096]
    return Data(X[train], y[train], test_X, test_y, new_X, X[new[NEW_CLASS_REAL:]], queries)


# ---------------------------------------------------------------------- measuring


def rss_mb(field_name: str) -> float:
    """A ``VmRSS`` / ``VmHWM`` line of /proc/self/status in MiB (ru_maxrss where there is none)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith(field_name + ":"):
                return int(line.split()[1]) / 1024.0
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


def reset_peak_rss() -> bool:
    """Reset the process's peak RSS to its current RSS (Linux); False where that is not possible."""
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def repeat(func: Callable[[], float | None], repeats: int, budget_s: float) -> list[float]:
    """Seconds of ``func`` (or the value it returns) per call: ``repeats`` calls, fewer past ``budget_s``."""
    samples: list[float] = []
    started = time.perf_counter()
    for _ in range(repeats):
        begin = time.perf_counter()
        value = func()
        samples.append(time.perf_counter() - begin if value is None else value)
        if time.perf_counter() - started > budget_s:
            break
    return samples


@dataclass
class Result:
    size: int
    model: str
    fit_s: list[float] = field(default_factory=list)
    throughput: list[float] = field(default_factory=list)
    throughput_cpu: list[float] = field(default_factory=list)  # spectra per CPU-second, all threads
    batch_rows: int = 0
    single_ms: list[float] = field(default_factory=list)
    add_class_ms: list[float] = field(default_factory=list)
    remove_ms: list[float] = field(default_factory=list)
    peak_rss_mb: float = 0.0
    model_rss_mb: float = 0.0
    accuracy: float = float("nan")
    new_class_recall: float = float("nan")
    predictions: npt.NDArray[Any] | None = None
    new_predictions: npt.NDArray[Any] | None = None
    proba: npt.NDArray[np.float64] | None = None
    note: str = ""

    def summary(self) -> dict[str, Any]:
        def median(values: list[float]) -> float | None:
            return float(statistics.median(values)) if values else None

        return {
            "size": self.size,
            "model": self.model,
            "fit_s": median(self.fit_s),
            "batch_spectra_per_s": median(self.throughput),
            "batch_spectra_per_cpu_s": median(self.throughput_cpu),
            "batch_rows": self.batch_rows,
            "single_ms": median(self.single_ms),
            "add_class_ms": median(self.add_class_ms),
            "remove_class_ms": median(self.remove_ms),
            "peak_rss_mb": round(self.peak_rss_mb, 1),
            "model_rss_mb": round(self.model_rss_mb, 1),
            "accuracy_held_out": round(self.accuracy, 4),
            "new_class_recall": round(self.new_class_recall, 4),
            "repeats": {
                "fit": len(self.fit_s),
                "batch": len(self.throughput),
                "single": len(self.single_ms),
                "add": len(self.add_class_ms),
            },
            "samples": {
                "fit_s": self.fit_s,
                "batch_spectra_per_s": self.throughput,
                "single_ms": self.single_ms,
                "add_class_ms": self.add_class_ms,
            },
            "note": self.note,
        }


class Subject:
    """One model under test: how to build it, predict, predict one, add a class."""

    def __init__(self, name: str, make: Callable[[], Any], *, incremental: bool) -> None:
        self.name = name
        self.make = make
        #: Has add/remove and predict_proba_one (SubspaceKNN); otherwise "add" is a refit.
        self.incremental = incremental


def measure(
    subject: Subject, library: tuple[FloatMatrix, Labels], data: Data, args: argparse.Namespace
) -> Result:
    X, y = library
    result = Result(size=len(y), model=subject.name)
    gc.collect()
    can_reset = reset_peak_rss()
    before = rss_mb("VmRSS")

    model: Any = None

    def fit_once() -> None:
        nonlocal model
        model = None
        gc.collect()
        model = subject.make().fit(X, y)

    result.fit_s = repeat(fit_once, args.repeats, args.metric_budget)

    probe = data.queries[:32]
    begin = time.perf_counter()
    model.predict(probe)
    rate = len(probe) / max(time.perf_counter() - begin, 1e-6)
    rows = int(min(len(data.queries), max(32, rate * THROUGHPUT_SECONDS)))
    result.batch_rows = rows
    batch = data.queries[:rows]

    def throughput_once() -> float:
        begin, cpu = time.perf_counter(), time.process_time()
        model.predict(batch)
        result.throughput_cpu.append(rows / max(time.process_time() - cpu, 1e-9))
        return rows / (time.perf_counter() - begin)

    result.throughput = repeat(throughput_once, args.repeats, args.metric_budget)

    def single_once() -> float:
        calls = []
        for i in range(SINGLE_CALLS):
            row = data.queries[i]
            begin = time.perf_counter()
            if subject.incremental:
                model.predict_proba_one(row)
            else:
                model.predict_proba(row[np.newaxis])
            calls.append(time.perf_counter() - begin)
        return 1e3 * statistics.median(calls)

    result.single_ms = repeat(single_once, args.repeats, args.metric_budget)

    result.proba = model.predict_proba(data.test_X)
    classes = np.asarray(list(model.classes_), dtype=object)
    result.predictions = classes[result.proba.argmax(axis=1)]
    result.accuracy = float((result.predictions == data.test_y).mean())

    new_y = np.full(len(data.new_X), NEW_CLASS)
    if subject.incremental:

        def add_once() -> float:
            begin = time.perf_counter()
            ids = model.add(data.new_X, new_y)
            added = time.perf_counter() - begin
            begin = time.perf_counter()
            model.remove(ids)
            result.remove_ms.append(1e3 * (time.perf_counter() - begin))
            return 1e3 * added

        result.add_class_ms = repeat(add_once, args.repeats, args.metric_budget)
        model.add(data.new_X, new_y)
    else:
        grown_X, grown_y = np.concatenate([X, data.new_X]), np.concatenate([y, new_y])

        def refit_once() -> float:
            nonlocal model
            model = None
            gc.collect()
            begin = time.perf_counter()
            model = subject.make().fit(grown_X, grown_y)
            return 1e3 * (time.perf_counter() - begin)

        result.add_class_ms = repeat(refit_once, args.repeats, args.metric_budget)
        result.note = "add = refit on library + new class (no incremental add)"
    result.new_predictions = np.asarray(model.predict(data.new_test_X), dtype=object)
    result.new_class_recall = float((result.new_predictions == NEW_CLASS).mean())

    result.peak_rss_mb = rss_mb("VmHWM")
    result.model_rss_mb = result.peak_rss_mb - before
    if not can_reset:
        result.note = (result.note + "; " if result.note else "") + "peak RSS is the process's, not reset"
    model = None
    gc.collect()
    return result


# ---------------------------------------------------------------------- report


def fmt(value: float | None, spec: str) -> str:
    return "-" if value is None or (isinstance(value, float) and np.isnan(value)) else format(value, spec)


def ratio(mine: float | None, base: float | None, *, higher_is_better: bool) -> str:
    if mine is None or base is None or mine == 0 or base == 0:
        return "-"
    return f"{(mine / base if higher_is_better else base / mine):.1f}x"


def print_table(rows: list[dict[str, Any]], agreements: list[dict[str, Any]], skipped: list[str]) -> None:
    header = (
        f"{'refs':>7} {'model':<22} {'fit s':>8} {'x':>7} {'batch/s':>9} {'x':>7} {'/cpu-s':>8} "
        f"{'one ms':>8} {'x':>7} "
        f"{'add ms':>9} {'x':>7} {'peak MiB':>9} {'+MiB':>8} {'acc':>6} {'PA rec':>6}"
    )
    print(header)
    print("-" * len(header))
    base = {row["size"]: row for row in rows if row["model"] == "sklearn-bagging-knn"}
    for row in rows:
        b = base.get(row["size"], {})
        print(
            f"{row['size']:>7} {row['model']:<22} {fmt(row['fit_s'], '.3f'):>8} "
            f"{ratio(row['fit_s'], b.get('fit_s'), higher_is_better=False):>7} "
            f"{fmt(row['batch_spectra_per_s'], '.0f'):>9} "
            f"{ratio(row['batch_spectra_per_s'], b.get('batch_spectra_per_s'), higher_is_better=True):>7} "
            f"{fmt(row['batch_spectra_per_cpu_s'], '.0f'):>8} "
            f"{fmt(row['single_ms'], '.2f'):>8} "
            f"{ratio(row['single_ms'], b.get('single_ms'), higher_is_better=False):>7} "
            f"{fmt(row['add_class_ms'], '.1f'):>9} "
            f"{ratio(row['add_class_ms'], b.get('add_class_ms'), higher_is_better=False):>7} "
            f"{fmt(row['peak_rss_mb'], '.0f'):>9} {fmt(row['model_rss_mb'], '.0f'):>8} "
            f"{fmt(row['accuracy_held_out'], '.3f'):>6} {fmt(row['new_class_recall'], '.2f'):>6}"
        )
    print(
        "x: ratio to the scikit-learn baseline at the same size (higher is better for SubspaceKNN); "
        "/cpu-s: batch spectra per CPU-second of all threads (robust to other load on the machine); "
        "+MiB: peak resident memory over the resident memory before the model was built."
    )
    for item in agreements:
        print(
            f"shortlist vs exact at {item['size']} refs: labels agree on {item['label_agreement']:.4f} of "
            f"{item['queries']} held-out real spectra "
            f"(max |vote share difference| {item['max_abs_proba_diff']:.3f}); "
            f"on the new class: {item['new_class_agreement']:.4f} of {item['new_class_queries']}"
        )
    for line in skipped:
        print(line)


# ---------------------------------------------------------------------- main


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog="python -m benchmarks.bench_subknn", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--sizes", default="1000,10000,100000", help="library sizes, comma-separated")
    parser.add_argument("--repeats", type=int, default=5, help="repeats per metric (medians are reported)")
    parser.add_argument(
        "--out", type=Path, default=REPO_ROOT / "artifacts" / "bench_subknn", help="JSON folder"
    )
    parser.add_argument("--threads", type=int, default=2, help="threads for FAISS, BLAS and SubspaceKNN")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--metric-budget", type=float, default=20.0, help="stop repeating a metric after this many seconds"
    )
    parser.add_argument(
        "--baseline-budget",
        type=float,
        default=150.0,
        help="skip the scikit-learn baseline at a size where it is projected to take longer (seconds)",
    )
    parser.add_argument(
        "--models", default="exact,shortlist,sklearn", help="which of exact,shortlist,sklearn"
    )
    return parser.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    sizes = [int(s) for s in args.sizes.split(",") if s]
    wanted = set(args.models.split(","))
    faiss.omp_set_num_threads(args.threads)
    started = time.perf_counter()
    load_start = os.getloadavg()
    data = load_data(args.seed)
    classes = sorted(set(data.train_y.tolist()))
    print(
        f"data: {len(data.train_y)} training spectra of {len(classes)} classes, {len(data.test_y)} held out, "
        f"{GRID.size} points; new class {NEW_CLASS}: {NEW_CLASS_REAL} real -> {len(data.new_X)} mixtures, "
        f"{len(data.new_test_X)} held out",
        flush=True,
    )
    subjects = []
    if "exact" in wanted:
        subjects.append(
            Subject(
                "SubspaceKNN exact",
                lambda: SubspaceKNN(seed=args.seed, n_threads=args.threads),
                incremental=True,
            )
        )
    if "shortlist" in wanted:
        subjects.append(
            Subject(
                "SubspaceKNN shortlist",
                lambda: SubspaceKNN(search="shortlist", seed=args.seed, n_threads=args.threads),
                incremental=True,
            )
        )
    baseline = Subject(
        "sklearn-bagging-knn",
        lambda: BaggingClassifier(
            KNeighborsClassifier(1),
            n_estimators=30,
            max_features=0.5,
            bootstrap=False,
            random_state=args.seed,
        ),
        incremental=False,
    )

    rows: list[dict[str, Any]] = []
    agreements: list[dict[str, Any]] = []
    skipped: list[str] = []
    last_baseline: dict[str, Any] | None = None
    with threadpool_limits(limits=args.threads):
        for size in sizes:
            rng = np.random.default_rng([args.seed, size])
            library = convex_mixtures(data.train_X, data.train_y, balanced_counts(classes, size), rng)
            results: dict[str, Result] = {}
            for subject in subjects:
                print(f"[{time.perf_counter() - started:6.0f} s] {size} refs: {subject.name}", flush=True)
                results[subject.name] = measure(subject, library, data, args)
            if "sklearn" in wanted:
                projected = None
                if last_baseline is not None:  # one repeat of everything, timings scaled with the library
                    scale = size / last_baseline["size"]
                    per_spectrum = scale / last_baseline["batch_spectra_per_s"]
                    projected = (
                        scale * 2 * last_baseline["fit_s"]  # fit, and refit with the new class
                        + scale * SINGLE_CALLS * last_baseline["single_ms"] / 1e3
                        + per_spectrum * (32 + len(data.test_y) + len(data.new_test_X))
                        + THROUGHPUT_SECONDS
                    )
                if projected is not None and projected > args.baseline_budget:
                    skipped.append(
                        f"scikit-learn baseline skipped at {size} refs: one repeat projected to take "
                        f"{projected:.0f} s (> --baseline-budget {args.baseline_budget:.0f} s), from its "
                        f"{last_baseline['size'] if last_baseline else '-'} refs timings scaled linearly"
                    )
                    print(skipped[-1], flush=True)
                else:
                    print(
                        f"[{time.perf_counter() - started:6.0f} s] {size} refs: {baseline.name}", flush=True
                    )
                    results[baseline.name] = measure(baseline, library, data, args)
                    last_baseline = results[baseline.name].summary()
            for result in results.values():
                rows.append(result.summary())
            exact, shortlist = results.get("SubspaceKNN exact"), results.get("SubspaceKNN shortlist")
            if exact is not None and shortlist is not None:
                assert exact.proba is not None and shortlist.proba is not None
                assert exact.predictions is not None and shortlist.predictions is not None
                assert exact.new_predictions is not None and shortlist.new_predictions is not None
                agreements.append(
                    {
                        "size": size,
                        "queries": len(data.test_y),
                        "label_agreement": float(np.mean(np.equal(exact.predictions, shortlist.predictions))),
                        "max_abs_proba_diff": float(np.abs(exact.proba - shortlist.proba).max()),
                        "new_class_queries": len(data.new_test_X),
                        "new_class_agreement": float(
                            np.mean(np.equal(exact.new_predictions, shortlist.new_predictions))
                        ),
                    }
                )
            del library
            gc.collect()

    elapsed = time.perf_counter() - started
    print()
    print_table(rows, agreements, skipped)
    report = {
        "benchmark": "subknn",
        "command": " ".join(
            ["python -m benchmarks.bench_subknn", *(argv if argv is not None else sys.argv[1:])]
        ),
        "date": datetime.now(UTC).isoformat(timespec="seconds"),
        "elapsed_s": round(elapsed, 1),
        "environment": {
            "python": platform.python_version(),
            "machine": platform.machine(),
            "processor": _cpu_name(),
            "cpus": os.cpu_count(),
            "threads": args.threads,
            "load_average_start": load_start,
            "load_average_end": os.getloadavg(),
            "numpy": np.__version__,
            "faiss": faiss.__version__,
            "scikit-learn": sklearn.__version__,
        },
        "data": {
            "datasets": DATASETS,
            "points": int(GRID.size),
            "training_spectra": len(data.train_y),
            "classes": len(classes),
            "held_out": len(data.test_y),
            "new_class": NEW_CLASS,
        },
        "results": rows,
        "shortlist_agreement": agreements,
        "skipped": skipped,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / f"bench_subknn_{datetime.now(UTC):%Y%m%dT%H%M%SZ}.json"
    path.write_text(json.dumps(report, indent=2))
    print(
        f"\nwrote {path} ({elapsed:.0f} s in all; "
        f"load average {load_start} at start, {os.getloadavg()} at end)"
    )
    return 0


def _cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor()


if __name__ == "__main__":
    raise SystemExit(main())
