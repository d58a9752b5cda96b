"""The labelled-set folder: ``spectra.npy``, ``wavenumbers.npy``, ``labels.txt``, ``meta.csv``.

One spectrum per row of ``spectra.npy``; NaN marks wavenumbers a spectrum was
not measured at. ``meta.csv`` is optional and may carry ``y_unit`` per row.
"""

from __future__ import annotations

import csv
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt

from engine.core.spectrum import Spectrum, SpectrumError, normalise_y_unit
from engine.io.registry import register

__all__ = ["LabelledSet", "is_labelled_set", "load_labelled_set"]

REQUIRED = ("spectra.npy", "wavenumbers.npy", "labels.txt")

_RAMAN_WORDS = ("raman",)


@dataclass(frozen=True)
class LabelledSet:
    """A labelled set loaded whole: a matrix on one shared axis plus per-row facts."""

    spectra: npt.NDArray[np.float32]
    wavenumbers: npt.NDArray[np.float64]
    labels: list[str]
    meta: list[dict[str, str]]
    path: Path

    def __len__(self) -> int:
        return len(self.labels)

    def y_unit(self, row: int) -> str:
        """The row's y unit from meta.csv, ``arbitrary`` when not given."""
        return normalise_y_unit(self.meta[row].get("y_unit")) if self.meta else "arbitrary"

    def technique(self, row: int) -> str | None:
        """``ir`` or ``raman`` when meta.csv says so, else a guess from the folder name."""
        kind = (self.meta[row].get("spectrum_type", "") if self.meta else "").lower()
        if kind:
            return "raman" if "raman" in kind else "ir"
        name = self.path.name.lower()
        if any(w in name for w in _RAMAN_WORDS):
            return "raman"
        return "ir"


def is_labelled_set(path: Path) -> bool:
    """Whether ``path`` is a folder holding the three required files."""
    return path.is_dir() and all((path / name).is_file() for name in REQUIRED)


def load_labelled_set(path: str | Path) -> LabelledSet:
    """Load a labelled-set folder, checking that its parts agree."""
    path = Path(path)
    missing = [name for name in REQUIRED if not (path / name).is_file()]
    if missing:
        raise SpectrumError(
            "unsupported_format", f"{path} is not a labelled set: missing {', '.join(missing)}"
        )
    try:
        spectra = np.load(path / "spectra.npy", allow_pickle=False)
        wavenumbers = np.load(path / "wavenumbers.npy", allow_pickle=False).astype(np.float64)
    except (OSError, ValueError) as exc:
        raise SpectrumError("unreadable", f"{path.name}: cannot load the arrays ({exc})") from exc
    labels = (path / "labels.txt").read_text(encoding="utf-8").splitlines()
    if spectra.ndim != 2:
        raise SpectrumError("unreadable", f"{path.name}: spectra.npy must be 2-D, got shape {spectra.shape}")
    if spectra.shape[1] != wavenumbers.size:
        raise SpectrumError(
            "length_mismatch",
            f"{path.name}: spectra have {spectra.shape[1]} columns, wavenumbers.npy has {wavenumbers.size}",
        )
    if len(labels) != spectra.shape[0]:
        raise SpectrumError(
            "length_mismatch", f"{path.name}: {spectra.shape[0]} spectra but {len(labels)} labels"
        )
    meta: list[dict[str, str]] = []
    meta_path = path / "meta.csv"
    if meta_path.is_file():
        with meta_path.open(newline="", encoding="utf-8") as handle:
            meta = list(csv.DictReader(handle))
        if len(meta) != len(labels):
            raise SpectrumError(
                "length_mismatch", f"{path.name}: meta.csv has {len(meta)} rows, expected {len(labels)}"
            )
    return LabelledSet(spectra=spectra, wavenumbers=wavenumbers, labels=labels, meta=meta, path=path)


def _missing_mask(row: npt.NDArray[np.floating], y_unit: str) -> npt.NDArray[np.bool_]:
    """NaN is missing; so are runs of exact zeros at either end of a %T row (FLOPP's unmeasured edge)."""
    missing = np.isnan(row)
    if y_unit == "transmittance":
        nonzero = np.flatnonzero(row != 0)
        if nonzero.size:
            missing[: nonzero[0]] = True
            missing[nonzero[-1] + 1 :] = True
    return missing


@register("labelled-set", directory=True)
def read_labelled_set(path: Path) -> list[Spectrum]:
    """Every row of a labelled set as a Spectrum, label and meta row in its metadata."""
    data = load_labelled_set(path)
    out = []
    for row in range(len(data)):
        unit = data.y_unit(row)
        values = data.spectra[row].astype(np.float64)
        values[_missing_mask(values, unit)] = np.nan
        meta = {"label": data.labels[row], **(data.meta[row] if data.meta else {})}
        out.append(
            Spectrum.create(
                data.wavenumbers,
                values,
                y_unit=unit,
                technique=data.technique(row),
                metadata=meta,
                drop_missing=True,
            )
        )
    return out
