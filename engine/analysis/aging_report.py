"""The aging report: weathering indices of a labelled set's particles, pristine against environmental.

:func:`aging_report` computes :func:`engine.core.aging.aging_indices` for
every particle of a labelled set, splits the particles into :data:`PRISTINE`
and :data:`ENVIRONMENTAL` by a meta.csv column, and compares the groups per
polymer and index with :func:`compare_groups` (Mann-Whitney U). It writes
``aging.json`` and the figure :func:`engine.analysis.plots.plot_distributions`
draws. docs/AGING.md reports the FLOPP / FLOPP-e numbers.
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from engine.core.aging import BASELINE_LAM, INDICES, REFERENCE_BANDS, aging_indices

__all__ = ["ENVIRONMENTAL", "PRISTINE", "aging_report", "compare_groups"]

FloatArray = npt.NDArray[np.float64]

#: Group names used by :func:`aging_report` and :func:`engine.analysis.plots.plot_distributions`.
PRISTINE = "pristine"
ENVIRONMENTAL = "environmental"


def _finite(values: Iterable[float | None]) -> tuple[FloatArray, int]:
    """The finite values as an array, and how many were None or not finite."""
    kept: list[float] = []
    dropped = 0
    for value in values:
        if value is None or not math.isfinite(value):
            dropped += 1
        else:
            kept.append(float(value))
    return np.asarray(kept, dtype=np.float64), dropped


def _describe(values: FloatArray, excluded: int) -> dict[str, Any]:
    if values.size == 0:
        return {"n": 0, "n_excluded": excluded, "median": None, "q1": None, "q3": None, "iqr": None}
    q1, median, q3 = (float(q) for q in np.percentile(values, [25.0, 50.0, 75.0]))
    return {
        "n": int(values.size),
        "n_excluded": excluded,
        "median": median,
        "q1": q1,
        "q3": q3,
        "iqr": q3 - q1,
    }


def compare_groups(values_a: Iterable[float | None], values_b: Iterable[float | None]) -> dict[str, Any]:
    """Mann-Whitney U test of group b against group a (a: pristine, b: environmental).

    ``None`` and non-finite values (not applicable) are left out and counted.
    ``u`` is the U statistic of b; ``p_greater`` tests "b is stochastically
    greater than a", ``p_two_sided`` tests any difference; ``prob_b_greater``
    is U / (n_a n_b), the probability that a random b exceeds a random a
    (ties counting half). With an empty group the test fields are ``None``.

    >>> result = compare_groups([0.1, 0.2, 0.3, None], [0.4, 0.5, 0.6])
    >>> result["a"]["n"], result["a"]["n_excluded"], result["u"], result["prob_b_greater"]
    (3, 1, 9.0, 1.0)
    >>> round(result["p_greater"], 3), round(result["p_two_sided"], 3)
    (0.05, 0.1)
    """
    from scipy.stats import mannwhitneyu

    a, excluded_a = _finite(values_a)
    b, excluded_b = _finite(values_b)
    result: dict[str, Any] = {
        "a": _describe(a, excluded_a),
        "b": _describe(b, excluded_b),
        "alternative": "b > a",
        "u": None,
        "p_greater": None,
        "p_two_sided": None,
        "prob_b_greater": None,
    }
    if a.size == 0 or b.size == 0:
        result["reason"] = "a group has no applicable values"
        return result
    greater = mannwhitneyu(b, a, alternative="greater")
    two_sided = mannwhitneyu(b, a, alternative="two-sided")
    u = float(greater.statistic)
    result.update(
        u=u,
        p_greater=float(greater.pvalue),
        p_two_sided=float(two_sided.pvalue),
        prob_b_greater=u / (a.size * b.size),
    )
    return result


def aging_report(
    labelled_dir: str | Path,
    out_dir: str | Path,
    *,
    group_column: str = "library",
    environmental: Sequence[str] = ("FLOPP-e",),
) -> dict[str, Any]:
    """Indices of every particle of a labelled set, compared pristine vs environmental.

    A particle is environmental when its meta.csv ``group_column`` value is in
    ``environmental``, pristine otherwise. Writes ``aging.json`` (method,
    per-polymer comparisons of every index, one record per particle) and
    ``aging.png`` (carbonyl index distributions) into ``out_dir`` and returns
    the JSON content.
    """
    from engine.analysis.plots import plot_distributions  # here, not above: plots imports this module
    from engine.io import read_spectra

    spectra = read_spectra(Path(labelled_dir))
    if spectra and group_column not in spectra[0].metadata:
        raise ValueError(f"{labelled_dir}: meta.csv has no {group_column!r} column to split the groups by")
    records: list[dict[str, Any]] = []
    for position, spectrum in enumerate(spectra):
        meta = spectrum.metadata
        group = ENVIRONMENTAL if str(meta.get(group_column, "")) in environmental else PRISTINE
        indices = aging_indices(spectrum, str(meta.get("label", "")) or "unknown")
        records.append(
            {
                "row": position,
                "sample_id": meta.get("sample_id"),
                "label": meta.get("label"),
                "group": group,
                **indices.as_dict(),
            }
        )
    comparisons: dict[str, dict[str, Any]] = {}
    for polymer in sorted({r["polymer"] for r in records}):
        mine = [r for r in records if r["polymer"] == polymer]
        for index in INDICES:
            if all(r[index] is None for r in mine):
                continue
            stats = compare_groups(
                [r[index] for r in mine if r["group"] == PRISTINE],
                [r[index] for r in mine if r["group"] == ENVIRONMENTAL],
            )
            comparisons.setdefault(polymer, {})[index] = {"a": PRISTINE, "b": ENVIRONMENTAL, **stats}
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    png = plot_distributions(records, out / "aging.png", index="carbonyl")
    report: dict[str, Any] = {
        "labelled_set": str(labelled_dir),
        "groups": {
            "column": group_column,
            ENVIRONMENTAL: list(environmental),
            PRISTINE: "every other value",
        },
        "method": {
            "baseline": f"arPLS (pybaselines), lam {BASELINE_LAM:g} at 2 cm-1 spacing, CO2 region bridged",
            "windows": {
                polymer: {
                    name: str(window) for name in ("reference", *INDICES) if (window := getattr(row, name))
                }
                for polymer, row in REFERENCE_BANDS.items()
                if row.reference is not None
            },
        },
        "comparisons": comparisons,
        "records": records,
        "outputs": {"png": str(png), "json": str(out / "aging.json")},
    }
    (out / "aging.json").write_text(json.dumps(report, indent=2), encoding="utf-8")
    return report
