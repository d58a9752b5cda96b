"""Speed of ``mpwatch reclassify`` on a LocalCluster of 1 and 2 workers, against local ``classify``.

The archive is synthetic, rendered from visible data: spectra of the FLOPP and Open
Specy FTIR labelled sets with seeded noise (1% of each spectrum's range), in sample
folders of ``--per-sample`` spectra each: one labelled set per folder, plus
``--files-per-sample`` of them as single-spectrum CSV files (an instrument's export).
The model is the served one on the bundled libraries.

Measured in the same run, ``--repeats`` times each, medians reported:

- ``classify``: what ``mpwatch classify ARCHIVE`` does (the same walk, one batch per
  input, aging indices included), in this process, held to one thread;
- ``reclassify`` on a LocalCluster of 1 and of 2 one-thread workers: survey, plan,
  classification and the Parquet partitions, timed from submission to the last file
  (the cluster's start is reported apart).

Ratios: 2 workers over 1 worker (the target is 1.7 on 2 cores), and reclassify's
throughput per worker over classify's on one core (the target is 0.8).

    python -m benchmarks.bench_reclassify --spectra 100000 --repeats 3
    python -m benchmarks.bench_reclassify --quick          # 2 x 10^4 spectra, one repeat
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

import faiss
import numpy as np
from threadpoolctl import threadpool_limits

from engine.cli.classify import served_model, spectrum_inputs
from engine.io import read_spectra
from engine.io.labelled_set import load_labelled_set
from engine.models.served import IdentificationModel
from engine.reclassify import cluster_client, reclassify

REPO_ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("MPWATCH_SHARED_DATA", REPO_ROOT.parent / "shared" / "data"))
SOURCES = ("flopp_frond2021", "openspecy_ftir_2023")


def render_archive(root: Path, *, spectra: int, per_sample: int, files_per_sample: int, seed: int) -> int:
    """Sample folders of a labelled set and CSV files each, ``spectra`` spectra in all; return the count."""
    rng = np.random.default_rng(seed)
    sets = [load_labelled_set(SHARED_DATA / name) for name in SOURCES]
    written = 0
    sample = 0
    while written < spectra:
        data = sets[sample % len(sets)]
        n = min(per_sample, spectra - written)
        rows = rng.integers(0, len(data), size=n)
        values = data.spectra[rows].astype(np.float64)
        span = np.nanmax(values, axis=1, keepdims=True) - np.nanmin(values, axis=1, keepdims=True)
        values = values + rng.normal(0.0, 0.01, values.shape) * span
        folder = root / f"site-{sample // 20:03d}" / f"sample-{sample:05d}"
        n_files = min(files_per_sample, n)
        csv_header = f"wavenumber,{data.y_unit(0) if data.meta else 'absorbance'}\n"
        for i in range(n_files):
            measured = np.isfinite(values[i])
            lines = "".join(
                f"{x:.3f},{y:.6g}\n"
                for x, y in zip(data.wavenumbers[measured], values[i][measured], strict=True)
            )
            (folder / f"particle-{i:04d}.csv").parent.mkdir(parents=True, exist_ok=True)
            (folder / f"particle-{i:04d}.csv").write_text(csv_header + lines, encoding="utf-8")
        labelled = folder / "set"
        labelled.mkdir(parents=True, exist_ok=True)
        np.save(labelled / "spectra.npy", values[n_files:].astype(np.float32))
        np.save(labelled / "wavenumbers.npy", data.wavenumbers)
        (labelled / "labels.txt").write_text(
            "".join(f"{data.labels[r]}\n" for r in rows[n_files:]), encoding="utf-8"
        )
        if data.meta:
            fields = list(data.meta[0])
            table = [",".join(fields)] + [",".join(data.meta[r][f] for f in fields) for r in rows[n_files:]]
            (labelled / "meta.csv").write_text("\n".join(table) + "\n", encoding="utf-8")
        written += n
        sample += 1
    return written


def local_classify(model: IdentificationModel, archive: Path) -> tuple[float, int]:
    """Seconds and spectra of ``mpwatch classify archive``'s work: its walk, one batch per input."""
    started = time.perf_counter()
    count = 0
    with threadpool_limits(1):
        threads = faiss.omp_get_max_threads()
        faiss.omp_set_num_threads(1)
        try:
            for path in spectrum_inputs([archive]):
                spectra = read_spectra(path)
                count += len(model.classify(spectra))
        finally:
            faiss.omp_set_num_threads(threads)
    return time.perf_counter() - started, count


def on_cluster(model: IdentificationModel, archive: Path, workers: int, scratch: Path) -> dict[str, float]:
    """Start a LocalCluster of ``workers``, re-classify the archive into a fresh folder; the timings."""
    out = scratch / f"out-{workers}"
    shutil.rmtree(out, ignore_errors=True)
    started = time.perf_counter()
    with cluster_client(workers=workers) as client:
        ready = time.perf_counter() - started
        summary = reclassify(client, model, [archive], out)
    if summary.failed:
        raise RuntimeError(f"tasks failed: {summary.failed}")
    return {"seconds": summary.seconds, "cluster_start_s": ready, "spectra": float(summary.spectra)}


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--spectra", type=int, default=100_000)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--quick", action="store_true", help="2 x 10^4 spectra, one repeat")
    parser.add_argument("--per-sample", type=int, default=500)
    parser.add_argument("--files-per-sample", type=int, default=10)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", default="artifacts/bench")
    args = parser.parse_args()
    if args.quick:
        args.spectra, args.repeats = 20_000, 1
    model = served_model(None)
    timings: dict[str, list[float]] = {"classify": [], "workers_1": [], "workers_2": []}
    starts: list[float] = []
    with tempfile.TemporaryDirectory(prefix="mpwatch-bench-") as tmp:
        scratch = Path(tmp)
        archive = scratch / "archive"
        n = render_archive(
            archive,
            spectra=args.spectra,
            per_sample=args.per_sample,
            files_per_sample=args.files_per_sample,
            seed=args.seed,
        )
        for _ in range(args.repeats):
            seconds, counted = local_classify(model, archive)
            assert counted == n, (counted, n)
            timings["classify"].append(seconds)
            for workers in (1, 2):
                run = on_cluster(model, archive, workers, scratch)
                assert int(run["spectra"]) == n, (run, n)
                timings[f"workers_{workers}"].append(run["seconds"])
                starts.append(run["cluster_start_s"])
    median = {name: statistics.median(values) for name, values in timings.items()}
    per_second = {name: n / seconds for name, seconds in median.items()}
    result: dict[str, Any] = {
        "spectra": n,
        "repeats": args.repeats,
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "median_seconds": median,
        "spectra_per_second": per_second,
        "cluster_start_median_s": statistics.median(starts),
        "ratio_2_workers_over_1": median["workers_1"] / median["workers_2"],
        "ratio_per_core_over_classify": per_second["workers_1"] / per_second["classify"],
        "ratio_per_core_2_workers_over_classify": per_second["workers_2"] / 2 / per_second["classify"],
        "all_seconds": timings,
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "reclassify.json").write_text(json.dumps(result, indent=2))
    print(f"{n} spectra, median of {args.repeats}, {result['cores']} cores")
    for name in timings:
        print(f"  {name:12s} {median[name]:9.2f} s {per_second[name]:9.1f} spectra/s")
    for key in (
        "ratio_2_workers_over_1",
        "ratio_per_core_over_classify",
        "ratio_per_core_2_workers_over_classify",
    ):
        print(f"  {key:40s} {result[key]:6.2f}")


if __name__ == "__main__":
    main()
