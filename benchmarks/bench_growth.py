"""Time from confirmation to serving: a new class of 10 real spectra on the bundled library.

Measures :meth:`engine.models.served.IdentificationModel.add_references` (the
incremental path: library add, 100 synthetic spectra regenerated for that
class, FAISS incremental add, reject
recalibration), then the atomic library version write. The baseline in the
same run is the study's way, a full rebuild of the model on the grown library.

    python -m benchmarks.bench_growth --repeats 7 --out artifacts/bench
"""

from __future__ import annotations

import argparse
import copy
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from engine.analysis.evaluate import load_source
from engine.core.library import DEFAULT_LIBRARY, ReferenceLibrary
from engine.models.served import IdentificationModel, ModelConfig

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--n-synthetic", type=int, default=100, help="synthetic spectra for the new class")
    parser.add_argument("--out", default="artifacts/bench")
    args = parser.parse_args()
    library = ReferenceLibrary.load(DEFAULT_LIBRARY)
    new = [s for s in load_source(f"{SHARED / 'villegas_camacho2024_c8'}") if s.metadata["label"] == "PVC"][
        :10
    ]
    config = ModelConfig(n_synthetic=args.n_synthetic)
    base = IdentificationModel(library, config)
    serve, persist, rebuild = [], [], []
    for i in range(args.repeats):
        model = copy.deepcopy(base)
        label = f"test-polymer-{i}"
        started = time.perf_counter()
        model.add_references(new, label, confirmed_by="bench")
        serve.append(time.perf_counter() - started)
        with tempfile.TemporaryDirectory() as tmp:
            started = time.perf_counter()
            model.library.save(tmp, message="bench")
            persist.append(time.perf_counter() - started)
        started = time.perf_counter()
        IdentificationModel(model.library, config)
        rebuild.append(time.perf_counter() - started)
    result = {
        "library_spectra": len(library),
        "new_class_spectra": len(new),
        "synthetic_per_class": args.n_synthetic,
        "add_to_serving_median_s": float(np.median(serve)),
        "library_version_write_median_s": float(np.median(persist)),
        "full_rebuild_median_s": float(np.median(rebuild)),
        "ratio_rebuild_to_incremental": float(np.median(rebuild) / np.median(serve)),
    }
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    (out / "growth.json").write_text(json.dumps(result, indent=2))
    print(f"new class of {len(new)} spectra on a library of {len(library)}, median of {args.repeats}")
    for key, value in result.items():
        print(f"  {key:34s} {value:10.4f}" if isinstance(value, float) else f"  {key:34s} {value:10d}")


if __name__ == "__main__":
    main()
