"""Range models: what a spectrum that covers only part of the library's span costs.

On the bundled library with the default :class:`~engine.models.served.ModelConfig`, with
real FLOPP spectra (``../shared/data/flopp_frond2021``) cut to windows an
instrument produces and given without a declared unit (unit inference runs):

1. the first spectrum of a new window, end to end (``model.classify([s])``,
   which builds the range model): per window, median and max over windows and
   repeats, target <= 1 s. Each repeat builds a fresh model (not timed), so the
   cache is cold. Baselines in the same run: the same spectrum again (cache
   warm) and the same particle over its full range on the main model;
2. ms per spectrum with a warm range model, a batch of 64 LDIR spectra
   (975-1800 cm-1) and the same 64 one at a time, against the same particles
   over their full range on the main model;
3. what a cached range model costs in memory: RSS before and after building as
   many range models as the cache holds, per model; and the pickled size of
   one range model (which includes the measured references it shares with the
   main model in memory) against the main model's;
4. a sanity line on accuracy: known-and-correct share of all FLOPP spectra cut
   to 975-1800 cm-1 against the full-range labelled set, same model.

Timings include aging indices (``classify``'s default). The process's first
range model is timed apart (it warms the process up); the memory step runs next,
before anything else has allocated and freed.

    python -m benchmarks.bench_ranges --repeats 3 --out artifacts/bench
"""

from __future__ import annotations

import argparse
import gc
import json
import pickle
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from engine.core.conventions import measured_range
from engine.core.labels import scoring_label
from engine.core.library import DEFAULT_LIBRARY, ReferenceLibrary
from engine.core.spectrum import Spectrum
from engine.io import read_spectra
from engine.models.ranges import route
from engine.models.served import IdentificationModel, ModelConfig, Result

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
FLOPP = SHARED / "flopp_frond2021"

#: Target for the first spectrum of a new window, end to end (seconds).
FIRST_TARGET_S = 1.0
#: The LDIR / QCL window (cm-1).
LDIR = (975.0, 1800.0)
#: Cuts an instrument produces (cm-1), one per range model: as many as the cache holds by default, then
#: an instrument that samples every 16 cm-1 over the whole range (its references sampled alike).
CUTS: tuple[tuple[str, tuple[float, float], float | None], ...] = (
    ("LDIR / QCL", LDIR, None),
    ("fingerprint to 2000", (1000.0, 2000.0), None),
    ("fingerprint from 700", (700.0, 1800.0), None),
    ("FPA, cut", (900.0, 2500.0), None),
    ("ATR crystal cut", (1200.0, 3200.0), None),
    ("low end to 2000", (650.0, 2000.0), None),
    ("upper mid-IR", (1800.0, 3800.0), None),
    ("CH/OH region", (2500.0, 4000.0), None),
    ("16 cm-1 instrument", (650.0, 4000.0), 16.0),
)
#: A cut not among ``CUTS``: warms the process up (imports, first allocations) before anything is measured.
WARMUP_CUT = (1100.0, 2900.0)
BATCH = 64

Window = tuple[float, float]
#: A range model's key: (low, high, grid step), cm-1.
RangeKey = tuple[float, float, float]


@dataclass(frozen=True)
class Flopp:
    """The FLOPP labelled set as arrays: %T rows (0: not measured), the axis, the labels."""

    wavenumbers: npt.NDArray[np.float64]
    percent_t: npt.NDArray[np.float64]
    labels: list[str]

    @classmethod
    def load(cls, folder: Path) -> Flopp:
        x = np.load(folder / "wavenumbers.npy").astype(np.float64)
        y = np.load(folder / "spectra.npy").astype(np.float64)
        labels = (folder / "labels.txt").read_text().split("\n")
        labels = [label.strip() for label in labels if label.strip()]
        if y.shape != (len(labels), x.size):
            raise RuntimeError(f"{folder}: {y.shape} spectra, {len(labels)} labels, {x.size} wavenumbers")
        return cls(x, y, labels)

    def render(self, row: int, cut: Window | None, unit: str, sampling: float | None = None) -> Spectrum:
        """Spectrum ``row`` cut to ``cut`` (None: all it measured), as ``%T`` or ``absorbance``; with
        ``sampling``, the mean of each ``sampling`` cm-1 bin, as a coarse instrument writes it.

        The unit is not declared (``arbitrary``): the model infers it.
        """
        t = self.percent_t[row]
        keep = t != 0
        if cut is not None:
            keep &= (self.wavenumbers >= cut[0]) & (self.wavenumbers <= cut[1])
        x, t = self.wavenumbers[keep], t[keep]
        if sampling:
            bins = np.floor((x - x[0]) / sampling).astype(int)
            x, t = (np.bincount(bins, v) / np.bincount(bins) for v in (x, t))
        y = t if unit == "%T" else -np.log10(np.clip(t, 0.01, None) / 100.0)
        return Spectrum.create(x, y)  # y_unit "arbitrary": inferred


def rss_mb() -> float:
    """This process's resident set size in MB (psutil when installed, else /proc/self/status)."""
    try:
        import psutil
    except ImportError:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
        return float("nan")
    return float(psutil.Process().memory_info().rss) / 2**20


def timed(model: IdentificationModel, spectra: list[Spectrum]) -> tuple[float, list[Result]]:
    started = time.perf_counter()
    results = model.classify(spectra)
    return time.perf_counter() - started, results


def routed_window(result: Result) -> RangeKey | None:
    """The range model's key a result was identified by: (low, high, grid step), cm-1."""
    window = result.extra.get("range")
    return (float(window[0]), float(window[1]), float(result.extra["sampling_step"])) if window else None


def expect_window(results: list[Result], window: RangeKey | None, what: str) -> None:
    """Raise unless every result went to ``window`` (None: the main model)."""
    got = {routed_window(r) for r in results}
    if got != {window}:
        raise RuntimeError(f"{what}: expected to be routed to {window}, got {sorted(got, key=str)}")


def unit_of(rendering: str) -> str:
    return "transmittance" if rendering == "%T" else "absorbance"


def windows_of(flopp: Flopp, model: IdentificationModel) -> list[RangeKey]:
    """The range-model window each cut is routed to (as :func:`engine.models.ranges.route` does)."""
    grid = model.library.grid
    windows = []
    for name, cut, sampling in CUTS:
        s = flopp.render(0, cut, "%T", sampling)
        to = route(
            measured_range(s),
            span=model.span_,
            step=float(grid.step),
            grid=(float(grid.start), float(grid.stop)),
            spacing=s.spacing,
        )
        if to.kind != "range" or to.window is None:
            raise RuntimeError(f"cut {name} {cut} is routed {to.kind}, not to a range model")
        windows.append((float(to.window[0]), float(to.window[1]), float(to.step or grid.step)))
    if len(set(windows)) != len(windows):
        raise RuntimeError(f"cuts share range-model windows: {windows}")
    return windows


def cold_process(
    library: ReferenceLibrary, config: ModelConfig, flopp: Flopp
) -> tuple[float, IdentificationModel]:
    """The process's first range model, end to end, after one full-range spectrum: (seconds, that model).

    Not in the target: it warms the process up (first calls, first allocations) for what follows.
    """
    model = IdentificationModel(library, config)
    model.classify([flopp.render(1, None, "%T")])
    seconds, results = timed(model, [flopp.render(1, WARMUP_CUT, "%T")])
    window = routed_window(results[0])
    if window is None:
        raise RuntimeError(f"warm-up cut {WARMUP_CUT} was not routed to a range model")
    return seconds, model.ranges_.get(window)


def memory(library: ReferenceLibrary, config: ModelConfig, windows: list[RangeKey]) -> dict[str, Any]:
    """RSS per cached range model, and pickled sizes."""
    n = config.range_models
    if len(windows) < n:
        raise RuntimeError(f"{len(windows)} windows for a cache of {n}")
    model = IdentificationModel(library, config)
    gc.collect()
    before = rss_mb()
    for window in windows[:n]:
        model.ranges_.get(window)
    gc.collect()
    after = rss_mb()
    if len(model.ranges_) != n or model.ranges_.builds != n:
        raise RuntimeError(f"expected {n} cached range models, got {len(model.ranges_)}")
    ldir = model.ranges_.get(windows[0])
    range_pickle = len(pickle.dumps(ldir, protocol=pickle.HIGHEST_PROTOCOL))
    measured_pickle = len(pickle.dumps(ldir.library.measured, protocol=pickle.HIGHEST_PROTOCOL))
    main_pickle = len(pickle.dumps(model, protocol=pickle.HIGHEST_PROTOCOL))
    return {
        "n_range_models": n,
        "rss_before_mb": before,
        "rss_after_mb": after,
        "rss_per_range_model_mb": (after - before) / n,
        "rss_source": "psutil" if _has_psutil() else "/proc/self/status VmRSS",
        "pickled_range_model_mb": range_pickle / 1e6,
        "pickled_range_model_window": list(windows[0]),
        "pickled_range_model_references": len(ldir.library),
        "pickled_range_model_measured_spectra_mb": measured_pickle / 1e6,
        "pickled_main_model_mb": main_pickle / 1e6,
        "main_model_references": len(model.library),
    }


def _has_psutil() -> bool:
    try:
        import psutil  # noqa: F401
    except ImportError:
        return False
    return True


def first_of_range(
    library: ReferenceLibrary, config: ModelConfig, flopp: Flopp, windows: list[RangeKey], repeats: int
) -> dict[str, Any]:
    """Per cut: the first spectrum of its window (cold cache), the same again (warm) and full range."""
    rows: list[dict[str, Any]] = [
        {
            "cut": name,
            "cut_cm": list(cut),
            "sampling_cm": sampling,
            "window": list(window),
            "first_s": [],
            "build_s": [],
            "warm_s": [],
            "full_s": [],
            "spectra": [],
        }
        for (name, cut, sampling), window in zip(CUTS, windows, strict=True)
    ]
    n = len(flopp.labels)
    for r in range(repeats):
        model = IdentificationModel(library, config)  # fresh: every range model is built on first sight
        model.classify([flopp.render((r * 7) % n, None, "%T")])  # serving already, as the daemon's model is
        for j, row in enumerate(rows):
            index = (j * 37 + r * 101) % n
            rendering = "%T" if (j + r) % 2 == 0 else "absorbance"
            s = flopp.render(index, tuple(row["cut_cm"]), rendering, row["sampling_cm"])
            builds = model.ranges_.builds
            first, results = timed(model, [s])
            if model.ranges_.builds != builds + 1:
                raise RuntimeError(f"cut {row['cut']}: the first spectrum did not build a range model")
            expect_window(results, tuple(row["window"]), f"cut {row['cut']}")
            row["build_s"].append(model.ranges_.last_build_seconds)
            warm, again = timed(model, [s])
            expect_window(again, tuple(row["window"]), f"cut {row['cut']} again")
            full, whole = timed(model, [flopp.render(index, None, rendering)])
            expect_window(whole, None, "full-range spectrum")
            row["first_s"].append(first)
            row["warm_s"].append(warm)
            row["full_s"].append(full)
            row["spectra"].append(
                {
                    "index": index,
                    "label": flopp.labels[index],
                    "rendered_as": rendering,
                    "y_unit_inferred": results[0].extra.get("y_unit"),
                    "unit_inferred_right": results[0].extra.get("y_unit") == unit_of(rendering),
                    "status": results[0].status,
                    "result_label": results[0].label,
                }
            )
    first_all = [t for row in rows for t in row["first_s"]]
    warm_all = [t for row in rows for t in row["warm_s"]]
    full_all = [t for row in rows for t in row["full_s"]]
    for row in rows:
        row["first_median_s"] = float(np.median(row["first_s"]))
        row["first_max_s"] = float(np.max(row["first_s"]))
        row["build_median_s"] = float(np.median(row["build_s"]))
        row["warm_median_s"] = float(np.median(row["warm_s"]))
        row["full_median_s"] = float(np.median(row["full_s"]))
        row["ratio_first_to_warm"] = row["first_median_s"] / row["warm_median_s"]
    units = [s["unit_inferred_right"] for row in rows for s in row["spectra"]]
    return {
        "windows": rows,
        "first_median_s": float(np.median(first_all)),
        "first_max_s": float(np.max(first_all)),
        "warm_median_s": float(np.median(warm_all)),
        "full_median_s": float(np.median(full_all)),
        "ratio_first_to_warm": float(np.median(first_all) / np.median(warm_all)),
        "ratio_first_to_full": float(np.median(first_all) / np.median(full_all)),
        "units_inferred_right": f"{sum(units)}/{len(units)}",
        "target_s": FIRST_TARGET_S,
        "target_met": bool(np.max(first_all) <= FIRST_TARGET_S),
    }


def warm_latency(
    library: ReferenceLibrary, config: ModelConfig, flopp: Flopp, window: RangeKey, repeats: int
) -> dict[str, Any]:
    """ms per spectrum on a warm range model (LDIR) against the main model (full range), batch and single."""
    n = len(flopp.labels)
    picks = np.linspace(0, n - 1, BATCH).round().astype(int)
    renderings = ["%T" if i % 2 == 0 else "absorbance" for i in range(BATCH)]
    ldir = [flopp.render(int(i), LDIR, u) for i, u in zip(picks, renderings, strict=True)]
    full = [flopp.render(int(i), None, u) for i, u in zip(picks, renderings, strict=True)]
    model = IdentificationModel(library, config)
    expect_window(model.classify(ldir), window, "LDIR batch (warm-up)")
    expect_window(model.classify(full), None, "full-range batch (warm-up)")
    out: dict[str, list[float]] = {"range_batch": [], "full_batch": [], "range_single": [], "full_single": []}
    for _ in range(repeats):
        for key, spectra in (("range", ldir), ("full", full)):
            seconds, _ = timed(model, spectra)
            out[f"{key}_batch"].append(1e3 * seconds / len(spectra))
            singles = [timed(model, [s])[0] for s in spectra]
            out[f"{key}_single"].append(1e3 * float(np.mean(singles)))
    if model.ranges_.builds != 1:
        raise RuntimeError(f"the LDIR range model was built {model.ranges_.builds} times, not once")
    summary: dict[str, Any] = {f"{k}_ms_per_spectrum": float(np.median(v)) for k, v in out.items()}
    for kind in ("batch", "single"):
        ranged, full_ms = summary[f"range_{kind}_ms_per_spectrum"], summary[f"full_{kind}_ms_per_spectrum"]
        summary[f"ratio_range_to_full_{kind}"] = ranged / full_ms
    summary["batch"] = BATCH
    summary["window"] = list(window)
    summary["runs"] = out
    return summary


def accuracy(
    library: ReferenceLibrary, config: ModelConfig, flopp: Flopp, window: RangeKey
) -> dict[str, Any]:
    """Known-and-correct share: FLOPP cut to LDIR (arbitrary-unit %T) against the native full-range set."""
    model = IdentificationModel(library, config)
    classes = {scoring_label(label) for label in model.library.class_counts()}
    cut = [flopp.render(i, LDIR, "%T") for i in range(len(flopp.labels))]
    cut_results = model.classify(cut)
    expect_window(cut_results, window, "FLOPP cut to LDIR")
    natives = read_spectra(str(FLOPP))
    native_results = model.classify(natives)
    expect_window(native_results, None, "FLOPP full range")

    def score(results: list[Result], truths: list[str]) -> tuple[int, int, int]:
        scored = known = correct = 0
        for result, truth in zip(results, truths, strict=True):
            expected = scoring_label(truth)
            if expected not in classes:
                continue
            scored += 1
            if result.status == "known":
                known += 1
                if result.label is not None and scoring_label(result.label) == expected:
                    correct += 1
        return scored, known, correct

    n_cut, known_cut, right_cut = score(cut_results, flopp.labels)
    n_full, known_full, right_full = score(native_results, [str(s.metadata["label"]) for s in natives])
    return {
        "spectra": len(cut),
        "scored_cut": n_cut,
        "scored_full": n_full,
        "known_share_cut": known_cut / n_cut,
        "known_share_full": known_full / n_full,
        "known_and_correct_cut": right_cut / n_cut,
        "known_and_correct_full": right_full / n_full,
        "window": list(window),
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", default="artifacts/bench")
    args = parser.parse_args()
    started = time.perf_counter()
    library = ReferenceLibrary.load(DEFAULT_LIBRARY)
    config = ModelConfig()
    flopp = Flopp.load(FLOPP)
    cold_s, warmup_model = cold_process(library, config, flopp)
    windows = windows_of(flopp, IdentificationModel(library, config))
    mem = memory(library, config, windows)
    del warmup_model
    first = first_of_range(library, config, flopp, windows, args.repeats)
    latency = warm_latency(library, config, flopp, windows[0], args.repeats)
    acc = accuracy(library, config, flopp, windows[0])
    result = {
        "library_spectra": len(library),
        "library_span": list(IdentificationModel(library, config).span_),
        "repeats": args.repeats,
        "first_range_model_in_process_s": cold_s,
        "first_of_range": first,
        "warm_latency": latency,
        "memory": mem,
        "accuracy": acc,
        "wall_s": time.perf_counter() - started,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "ranges.json").write_text(json.dumps(result, indent=2))
    report(result)


def report(result: dict[str, Any]) -> None:
    first, latency, mem, acc = (result[k] for k in ("first_of_range", "warm_latency", "memory", "accuracy"))
    ms = 1e3
    print(
        f"range models, library of {result['library_spectra']} spectra, median of {result['repeats']} repeats"
    )
    print("1. first spectrum of a new window, end to end (s); warm: the same again; full: main model")
    head = ("cut", "cut cm-1", "window", "first", "max", "build", "warm", "full", "first/warm")
    print("  {:22s} {:>11s} {:>14s} {:>7s} {:>7s} {:>7s} {:>7s} {:>7s} {:>10s}".format(*head))
    for row in first["windows"]:
        cut = "{:g}-{:g}".format(*row["cut_cm"])
        window = "{:g}-{:g}".format(*row["window"][:2])
        window += f"/{row['window'][2]:g}" if row["sampling_cm"] else ""
        times = [row[k] for k in ("first_median_s", "first_max_s", "build_median_s")]
        base = [row["warm_median_s"], row["full_median_s"]]
        print(
            f"  {row['cut']:22s} {cut:>11s} {window:>14s} "
            + " ".join(f"{v:7.3f}" for v in times)
            + " "
            + " ".join(f"{v:7.4f}" for v in base)
            + f" {row['ratio_first_to_warm']:10.1f}"
        )
    print(
        f"  all windows x repeats: first median {first['first_median_s']:.3f} s,"
        f" max {first['first_max_s']:.3f} s; warm median {first['warm_median_s'] * ms:.1f} ms,"
        f" full-range median {first['full_median_s'] * ms:.1f} ms"
    )
    print(
        f"  ratio first/warm {first['ratio_first_to_warm']:.1f},"
        f" first/full {first['ratio_first_to_full']:.1f};"
        f" units inferred right {first['units_inferred_right']}"
    )
    cold = result["first_range_model_in_process_s"]
    print(f"  the process's first range model (after a full-range spectrum; not in the target): {cold:.3f} s")
    verdict = "target met" if first["target_met"] else "target missed"
    print(f"  {verdict}: max first spectrum {first['first_max_s']:.3f} s (target <= {first['target_s']:g} s)")
    window = "{:g}-{:g}".format(*latency["window"])
    print(f"2. warm range model {window} vs main model (full range), ms per spectrum")
    print(f"  {'':10s} {'range':>9s} {'full':>9s} {'range/full':>10s}")
    for kind in ("batch", "single"):
        label = f"batch {latency['batch']}" if kind == "batch" else "single"
        ranged, full = latency[f"range_{kind}_ms_per_spectrum"], latency[f"full_{kind}_ms_per_spectrum"]
        print(f"  {label:10s} {ranged:9.3f} {full:9.3f} {latency[f'ratio_range_to_full_{kind}']:10.2f}")
    print(f"3. memory ({mem['rss_source']})")
    print(
        f"  RSS {mem['rss_before_mb']:.1f} -> {mem['rss_after_mb']:.1f} MB"
        f" for {mem['n_range_models']} range models: {mem['rss_per_range_model_mb']:.2f} MB each"
    )
    print(
        f"  pickled range model {mem['pickled_range_model_mb']:.2f} MB"
        f" ({mem['pickled_range_model_references']} refs; their measured spectra,"
        f" shared with the main model in memory: {mem['pickled_range_model_measured_spectra_mb']:.2f} MB)"
    )
    print(
        f"  pickled main model  {mem['pickled_main_model_mb']:.2f} MB ({mem['main_model_references']} refs)"
    )
    print("4. accuracy sanity (no target): known and correct, FLOPP spectra of the library's classes")
    window = "{:g}-{:g}".format(*acc["window"])
    for name, key in (
        (f"cut to {window}, arbitrary-unit %T", "cut"),
        ("full range, native labelled set", "full"),
    ):
        print(
            f"  {name:36s} {acc[f'known_and_correct_{key}']:6.1%} of {acc[f'scored_{key}']}"
            f" (known {acc[f'known_share_{key}']:.1%})"
        )
    print(f"  wall {result['wall_s']:.1f} s")


if __name__ == "__main__":
    main()
