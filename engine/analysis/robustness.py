"""The robustness matrix: labelled sets rendered in the conventions labs use, identified from files.

Instruments in other labs deliver the same spectra in many conventions (see
``../shared/DATA.md``, "Conventions labs use"): %T on 0-100 or 0-1,
absorbance raw or normalised, files with a unit header, a bare header or
none, decimal commas, partial spectral ranges (LDIR and QCL about
975-1800 cm-1), coarser resolution with noise. A :class:`Convention`
describes one of them; :func:`render_set` writes a labelled set in it as an
instrument would, one two-column CSV file per spectrum, no unit stated unless
the convention states it; :func:`conventions_matrix` identifies every
rendering from its files with :func:`engine.io.read_spectra`, exactly as the
daemon would, and scores it against the set read natively. The labels never
change, so every rendering is honest test data: accuracy in each convention
should stay within :data:`TOLERANCE_POINTS` of the native form.

>>> import tempfile
>>> from engine.io import read_spectra
>>> wavenumbers = np.linspace(400.0, 4000.0, 1801)
>>> pct_t = 100.0 - 60.0 * np.exp(-(((wavenumbers - 2916.0) / 15.0) ** 2))
>>> convention = by_name("t_fraction")
>>> convention.describe()
'T (0-1), bare header, comma'
>>> with tempfile.TemporaryDirectory() as tmp:
...     [path] = render_set(pct_t[None, :], wavenumbers, convention, tmp, seed=0, y_units="%T")
...     head = path.read_text(encoding="utf-8").splitlines()[:2]
...     spectrum = read_spectra(path)[0]
>>> head
['wavenumber,intensity', '400.0000,1']
>>> spectrum.n_points, round(float(spectrum.values.min()), 3)
(1801, 0.4)
"""

from __future__ import annotations

import logging
import shutil
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from engine.io import read_spectra
from engine.io.labelled_set import load_labelled_set
from engine.core.labels import scoring_label
from engine.core.spectrum import Spectrum, SpectrumError, normalise_y_unit

if TYPE_CHECKING:
    from engine.models.served import IdentificationModel, Result

__all__ = [
    "CONVENTIONS",
    "HEADERS",
    "NATIVE",
    "TOLERANCE_POINTS",
    "Y_RENDERINGS",
    "Convention",
    "by_name",
    "conventions_matrix",
    "measured_mask",
    "plot_conventions",
    "render_set",
    "render_values",
    "shortfalls",
    "stratified_rows",
]

logger = logging.getLogger(__name__)

#: How far (percentage points) a convention's accuracy may fall below the native form's.
TOLERANCE_POINTS = 1.0

#: The name of the native form (the labelled-set folder read as it is) in reports.
NATIVE = "native"

#: The y renderings: what the file's second column holds, and how a unit header names it.
Y_RENDERINGS: dict[str, str] = {
    "percent_transmittance": "%T",
    "transmittance": "transmittance",
    "absorbance": "absorbance",
    "absorbance_max1": "absorbance",
    "absorbance_max100": "absorbance",
}

#: How each y rendering reads in a description.
_Y_WORDS: dict[str, str] = {
    "percent_transmittance": "%T (0-100)",
    "transmittance": "T (0-1)",
    "absorbance": "absorbance",
    "absorbance_max1": "absorbance, max 1",
    "absorbance_max100": "absorbance, max 100",
}

#: Header styles: ``none`` (data from the first line), ``bare`` (``wavenumber,intensity``:
#: no unit declared) and ``unit`` (``wavenumber (cm-1),%T``: the unit declared).
HEADERS = ("none", "bare", "unit")

#: Transmittance below this (percent) is clipped before it becomes absorbance, as an opaque
#: band reads as (almost) zero transmittance.
MIN_PERCENT_TRANSMITTANCE = 0.01

_DELIMITER_WORDS = {",": "comma", ";": "semicolon", "\t": "tab"}


@dataclass(frozen=True)
class Convention:
    """How a lab's instrument delivers a spectrum as a file.

    ``y`` is one of :data:`Y_RENDERINGS`; ``header`` one of :data:`HEADERS`;
    ``delimiter`` and ``decimal`` separate fields and the integer part of
    numbers; ``x_range`` (cm-1, inclusive) cuts the axis to an instrument's
    range; ``step`` (cm-1) resamples to that spacing by averaging the points
    within each step (a coarser resolution, not just fewer points);
    ``noise`` adds seeded Gaussian noise after resampling, its standard
    deviation that share of the spectrum's range (0.01: S/N about 100).

    >>> Convention("ldir", y="absorbance", x_range=(975.0, 1800.0)).describe()
    'absorbance, bare header, comma, 975-1800 cm-1'
    """

    name: str
    y: str = "percent_transmittance"
    header: str = "bare"
    delimiter: str = ","
    decimal: str = "."
    x_range: tuple[float, float] | None = None
    step: float | None = None
    noise: float = 0.0

    def __post_init__(self) -> None:
        if self.y not in Y_RENDERINGS:
            raise ValueError(f"y must be one of {', '.join(Y_RENDERINGS)}, got {self.y!r}")
        if self.header not in HEADERS:
            raise ValueError(f"header must be one of {', '.join(HEADERS)}, got {self.header!r}")
        if self.delimiter not in _DELIMITER_WORDS:
            raise ValueError(f"delimiter must be one of {list(_DELIMITER_WORDS)}, got {self.delimiter!r}")
        if self.decimal not in (".", ",") or self.decimal == self.delimiter:
            raise ValueError(f"decimal {self.decimal!r} does not go with delimiter {self.delimiter!r}")
        if self.x_range is not None and not self.x_range[0] < self.x_range[1]:
            raise ValueError(f"x_range must be (low, high), got {self.x_range!r}")
        if self.step is not None and self.step <= 0:
            raise ValueError(f"step must be positive, got {self.step!r}")
        if self.noise < 0:
            raise ValueError(f"noise must be >= 0, got {self.noise!r}")

    def describe(self) -> str:
        """A short description for tables: unit, header, delimiter, then range and resolution."""
        parts = [_Y_WORDS[self.y], f"{self.header} header" if self.header != "none" else "no header"]
        parts.append(_DELIMITER_WORDS[self.delimiter])
        if self.decimal == ",":
            parts.append("decimal comma")
        if self.x_range is not None:
            parts.append(f"{self.x_range[0]:g}-{self.x_range[1]:g} cm-1")
        if self.step is not None:
            parts.append(f"{self.step:g} cm-1 steps")
        if self.noise:
            parts.append(f"noise {self.noise:.0%} of range")
        return ", ".join(parts)

    def as_dict(self) -> dict[str, Any]:
        return {**asdict(self), "description": self.describe()}


#: The matrix of the project's issue: every y convention with a bare header (no unit declared),
#: the file-format conventions on %T (a unit header as the control), the LDIR/QCL and a mid
#: range cut as absorbance and as %T, and coarser resolutions with noise.
CONVENTIONS: tuple[Convention, ...] = (
    Convention("pct_t", y="percent_transmittance"),
    Convention("t_fraction", y="transmittance"),
    Convention("absorbance", y="absorbance"),
    Convention("absorbance_max1", y="absorbance_max1"),
    Convention("absorbance_max100", y="absorbance_max100"),
    Convention("pct_t_unit_header", header="unit"),
    Convention("pct_t_no_header", header="none"),
    Convention("t_fraction_no_header", y="transmittance", header="none"),
    Convention("pct_t_decimal_comma", delimiter=";", decimal=","),
    Convention("absorbance_975_1800", y="absorbance", x_range=(975.0, 1800.0)),
    Convention("pct_t_975_1800", x_range=(975.0, 1800.0)),
    Convention("absorbance_1200_3200", y="absorbance", x_range=(1200.0, 3200.0)),
    Convention("pct_t_1200_3200", x_range=(1200.0, 3200.0)),
    Convention("pct_t_4cm_noise", step=4.0, noise=0.01),
    Convention("pct_t_8cm_noise", step=8.0, noise=0.01),
    Convention("pct_t_16cm_noise", step=16.0, noise=0.01),
    Convention("absorbance_8cm_noise", y="absorbance", step=8.0, noise=0.01),
)


def by_name(name: str) -> Convention:
    """The convention of :data:`CONVENTIONS` called ``name``; KeyError when there is none."""
    for convention in CONVENTIONS:
        if convention.name == name:
            return convention
    raise KeyError(f"no convention {name!r}; known: {', '.join(c.name for c in CONVENTIONS)}")


# -- rendering ------------------------------------------------------------------------------------


def measured_mask(values: npt.ArrayLike, *, y_unit: str) -> npt.NDArray[np.bool_]:
    """The points a spectrum was measured at: not NaN and, for transmittance, not zero-filled at an end.

    A %T of exactly 0 before the first or after the last non-zero point is
    an instrument's "not measured" (FLOPP's edge below ~675 cm-1), as the
    labelled-set reader reads it.

    >>> measured_mask([0.0, 0.0, 95.0, np.nan, 80.0, 0.0], y_unit="%T").tolist()
    [False, False, True, False, True, False]
    """
    row = np.asarray(values, dtype=np.float64)
    keep = np.isfinite(row)
    if normalise_y_unit(y_unit) == "transmittance":
        nonzero = np.flatnonzero(keep & (row != 0))
        if nonzero.size:
            keep[: nonzero[0]] = False
            keep[nonzero[-1] + 1 :] = False
        else:
            keep[:] = False
    return keep


def _absorbance(values: npt.NDArray[np.float64], y_unit: str) -> npt.NDArray[np.float64]:
    """``values`` in ``y_unit`` as absorbance; transmittance above 1.5 anywhere is percent."""
    unit = normalise_y_unit(y_unit)
    if unit == "absorbance":
        return values
    if unit == "transmittance":
        percent = values if np.max(values) > 1.5 else values * 100.0
        return -np.log10(np.clip(percent, MIN_PERCENT_TRANSMITTANCE, None) / 100.0)
    raise ValueError(f"only transmittance and absorbance sets can be rendered, not {unit}")


def _percent_transmittance(values: npt.NDArray[np.float64], y_unit: str) -> npt.NDArray[np.float64]:
    """``values`` in ``y_unit`` as %T (0-100).

    Transmittance is kept (as percent). Absorbance is shifted so its minimum
    is 0 and scaled so its maximum is 1 (a realistic %T of 10 at the
    strongest band), then T = 100 * 10^-A.
    """
    unit = normalise_y_unit(y_unit)
    if unit == "transmittance":
        return values if np.max(values) > 1.5 else values * 100.0
    if unit == "absorbance":
        shifted = values - np.min(values)
        top = float(np.max(shifted))
        return 100.0 * np.power(10.0, -(shifted / top if top > 0 else shifted))
    raise ValueError(f"only transmittance and absorbance sets can be rendered, not {unit}")


def _scaled_to_max(absorbance: npt.NDArray[np.float64], top: float) -> npt.NDArray[np.float64]:
    """Absorbance scaled so its maximum is ``top``; a baseline below 0 stays below 0."""
    peak = float(np.max(absorbance))
    if peak > 0:
        return absorbance * (top / peak)
    shifted = absorbance - np.min(absorbance)
    return shifted * (top / max(float(np.max(shifted)), 1e-12))


def _resample(
    wavenumbers: npt.NDArray[np.float64], values: npt.NDArray[np.float64], step: float
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """The mean of the points within step/2 of each multiple of ``step``; steps with no point are left out."""
    grid = np.arange(np.ceil(wavenumbers[0] / step) * step, wavenumbers[-1] + step * 1e-9, step)
    lo = np.searchsorted(wavenumbers, grid - step / 2, side="left")
    hi = np.searchsorted(wavenumbers, grid + step / 2, side="right")
    sums = np.concatenate([[0.0], np.cumsum(values)])
    count = hi - lo
    filled = count > 0
    means = (sums[hi[filled]] - sums[lo[filled]]) / count[filled]
    return grid[filled], means


def render_values(
    wavenumbers: npt.ArrayLike,
    values: npt.ArrayLike,
    convention: Convention,
    *,
    y_unit: str,
    rng: np.random.Generator | None = None,
) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.float64]]:
    """One spectrum (``values`` in ``y_unit`` on ascending ``wavenumbers``) in ``convention``: axis, values.

    Points not measured (see :func:`measured_mask`) are dropped; the y unit
    is converted (%T to absorbance as A = -log10(T/100), T clipped to 0.01 %
    first; absorbance to %T as in :func:`_percent_transmittance`); the axis
    is cut, then resampled; absorbance is scaled to its maximum; noise is
    added last, drawn from ``rng`` (required when the convention adds noise).
    """
    x = np.asarray(wavenumbers, dtype=np.float64)
    y = np.asarray(values, dtype=np.float64)
    keep = measured_mask(y, y_unit=y_unit)
    x, y = x[keep], y[keep]
    if x.size == 0:
        raise ValueError("the spectrum has no measured point")
    if convention.y in ("percent_transmittance", "transmittance"):
        y = _percent_transmittance(y, y_unit)
        if convention.y == "transmittance":
            y = y / 100.0
    else:
        y = _absorbance(y, y_unit)
    if convention.x_range is not None:
        inside = (x >= convention.x_range[0]) & (x <= convention.x_range[1])
        x, y = x[inside], y[inside]
        if x.size == 0:
            raise ValueError(f"the spectrum has no point in {convention.x_range}")
    if convention.step is not None:
        x, y = _resample(x, y, convention.step)
    if convention.y == "absorbance_max1":
        y = _scaled_to_max(y, 1.0)
    elif convention.y == "absorbance_max100":
        y = _scaled_to_max(y, 100.0)
    if convention.noise:
        if rng is None:
            raise ValueError(f"convention {convention.name} adds noise: give an rng")
        y = y + rng.normal(0.0, convention.noise * float(np.ptp(y)), size=y.size)
    return x, y


def _header(convention: Convention) -> str | None:
    d = convention.delimiter
    if convention.header == "bare":
        return f"wavenumber{d}intensity"
    if convention.header == "unit":
        return f"wavenumber (cm-1){d}{Y_RENDERINGS[convention.y]}"
    return None


def _csv_text(x: npt.NDArray[np.float64], y: npt.NDArray[np.float64], convention: Convention) -> str:
    """The file's text: header line (if any), then ``wavenumber<delimiter>value`` lines."""
    d = convention.delimiter
    pairs = zip(x.tolist(), y.tolist(), strict=True)
    if convention.decimal == ",":
        lines = [f"{a:.4f}".replace(".", ",") + d + f"{b:.6g}".replace(".", ",") for a, b in pairs]
    else:
        lines = [f"{a:.4f}{d}{b:.6g}" for a, b in pairs]
    header = _header(convention)
    return "\n".join([header, *lines] if header else lines) + "\n"


def render_set(
    spectra: npt.ArrayLike,
    wavenumbers: npt.ArrayLike,
    convention: Convention,
    out_dir: str | Path,
    *,
    seed: int,
    y_units: str | Sequence[str],
    labels: Sequence[str] | None = None,
) -> list[Path]:
    """Write each row of ``spectra`` as one CSV file in ``convention``; the paths, in row order.

    ``spectra`` is a labelled set's matrix (one spectrum per row, NaN where
    not measured) on ``wavenumbers``; ``y_units`` is the unit of all rows or
    one per row (``%T``, ``T``, ``absorbance``). The files are
    ``00000.csv``, ``00001.csv``... in ``out_dir``; the labels, when given,
    are kept apart in ``labels.csv`` (file, label), as a lab keeps its sheet.
    Row ``i``'s noise is drawn from a generator seeded with ``(seed, i)``, so
    a row renders the same whatever else is rendered with it.
    """
    matrix = np.atleast_2d(np.asarray(spectra, dtype=np.float64))
    axis = np.asarray(wavenumbers, dtype=np.float64)
    units = [y_units] * len(matrix) if isinstance(y_units, str) else list(y_units)
    if len(units) != len(matrix):
        raise ValueError(f"{len(matrix)} spectra but {len(units)} y units")
    if labels is not None and len(labels) != len(matrix):
        raise ValueError(f"{len(matrix)} spectra but {len(labels)} labels")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    paths = []
    for i, (row, unit) in enumerate(zip(matrix, units, strict=True)):
        rng = np.random.default_rng((seed, i)) if convention.noise else None
        x, y = render_values(axis, row, convention, y_unit=unit, rng=rng)
        path = out / f"{i:05d}.csv"
        path.write_text(_csv_text(x, y, convention), encoding="utf-8")
        paths.append(path)
    if labels is not None:
        rows = [f"{p.name},{label}" for p, label in zip(paths, labels, strict=True)]
        (out / "labels.csv").write_text("\n".join(["file,label", *rows]) + "\n", encoding="utf-8")
    return paths


# -- the matrix -----------------------------------------------------------------------------------


def stratified_rows(labels: Sequence[str], *, per_class: int | None, seed: int) -> list[int]:
    """Up to ``per_class`` row indices of each label, drawn with ``seed``, in row order (all when None).

    >>> stratified_rows(["PE", "PE", "PE", "PP"], per_class=2, seed=0)
    [1, 2, 3]
    """
    if per_class is None:
        return list(range(len(labels)))
    rng = np.random.default_rng(seed)
    chosen: list[int] = []
    by_label: dict[str, list[int]] = {}
    for i, label in enumerate(labels):
        by_label.setdefault(label, []).append(i)
    for label in sorted(by_label):
        rows = by_label[label]
        chosen.extend(rows if len(rows) <= per_class else rng.choice(rows, per_class, replace=False).tolist())
    return sorted(chosen)


@dataclass(frozen=True)
class _Subset:
    """One test set of the matrix: its folder, chosen rows and their native spectra."""

    name: str
    folder: Path
    rows: list[int]
    n_selected: int
    native: list[Spectrum]


def _load_test_set(source: str | Path, *, per_class: int | None, seed: int) -> _Subset:
    """``DIR`` or ``DIR@key=value`` read natively, subsampled per label."""
    text = str(source)
    folder, _, selector = text.partition("@")
    native = read_spectra(folder)
    selected = list(range(len(native)))
    if selector:
        key, sep, value = selector.partition("=")
        if not sep:
            raise ValueError(f"selector {selector!r} must be key=value")
        selected = [i for i in selected if str(native[i].metadata.get(key, "")) == value]
        if not selected:
            raise ValueError(f"{text}: no spectrum has {key}={value}")
    labels = [str(native[i].metadata["label"]) for i in selected]
    rows = [selected[j] for j in stratified_rows(labels, per_class=per_class, seed=seed)]
    name = Path(folder).name + (f"@{selector}" if selector else "")
    return _Subset(name, Path(folder), rows, len(selected), [native[i] for i in rows])


def _score(results: Sequence[Result | None], truth: Sequence[str], scored: Sequence[int]) -> dict[str, Any]:
    """Accuracy (known and right), closed-set accuracy (candidate right) and the outcome shares."""
    n = len(scored)

    def share(hit: Callable[[Result | None, str], bool]) -> float:
        return sum(hit(results[i], truth[i]) for i in scored) / n if n else float("nan")

    return {
        "n": n,
        "accuracy": share(
            lambda r, t: r is not None and r.status == "known" and scoring_label(r.label or "") == t
        ),
        "closed_set_accuracy": share(
            lambda r, t: r is not None and scoring_label(r.candidate or "none") == t
        ),
        "rejected": share(lambda r, _: r is not None and r.status == "unknown"),
        "low_quality": share(lambda r, _: r is not None and r.status == "low_quality"),
        "unreadable": share(lambda r, _: r is None),
    }


def _read_rendering(paths: Sequence[Path]) -> tuple[list[Spectrum | None], Counter[str], Counter[str]]:
    """Each file read as the daemon reads it (its first spectrum), None when it cannot be read."""
    spectra: list[Spectrum | None] = []
    units: Counter[str] = Counter()
    errors: Counter[str] = Counter()
    for path in paths:
        try:
            spectrum = read_spectra(path)[0]
        except SpectrumError as exc:
            errors[exc.reason] += 1
            spectra.append(None)
            continue
        units[spectrum.y_unit] += 1
        spectra.append(spectrum)
    return spectra, units, errors


def _classify(
    model: IdentificationModel, spectra: Sequence[Spectrum | None], *, batch_size: int
) -> list[Result | None]:
    """Results in order, None where there is no spectrum; classified in batches."""
    results: list[Result | None] = [None] * len(spectra)
    present = [i for i, s in enumerate(spectra) if s is not None]
    for start in range(0, len(present), batch_size):
        chunk = present[start : start + batch_size]
        batch = [s for s in (spectra[i] for i in chunk) if s is not None]
        for i, result in zip(chunk, model.classify(batch, aging=False), strict=True):
            results[i] = result
    return results


def _units_used(results: Sequence[Result | None]) -> dict[str, int]:
    """How many results were identified under each y unit (and how it was known)."""
    return dict(
        Counter(f"{r.extra.get('y_unit')} ({r.extra.get('y_unit_source')})" for r in results if r is not None)
    )


def conventions_matrix(
    model: IdentificationModel,
    test_sets: Sequence[str | Path],
    conventions: Sequence[Convention] = CONVENTIONS,
    *,
    workdir: str | Path,
    per_class: int | None = 100,
    seed: int = 0,
    batch_size: int = 256,
    keep_files: bool = False,
    tolerance_points: float = TOLERANCE_POINTS,
    progress: Callable[[int], None] | None = None,
) -> dict[str, Any]:
    """Identify each test set natively and rendered in each convention; score each against native.

    ``test_sets`` are labelled-set folders as ``DIR`` or ``DIR@key=value``
    (meta.csv rows whose ``key`` is ``value``); each is subsampled to at most
    ``per_class`` spectra per label, drawn with ``seed`` (None keeps all).
    The native form is the folder read with :func:`engine.io.read_spectra`,
    as ``mpwatch classify`` reads it; each rendering is written by
    :func:`render_set` under ``workdir`` (removed once read unless
    ``keep_files``) and each file read back with
    :func:`engine.io.read_spectra`. Only spectra whose true label (through
    :func:`engine.core.labels.scoring_label`) is a class of the model's library
    are scored; the others are counted as skipped.

    Per set and convention: ``accuracy`` (known and the right label),
    ``closed_set_accuracy`` (the right candidate, known or not), the shares
    ``rejected`` (unknown), ``low_quality`` and ``unreadable`` (the file
    was refused), the y units the reader gave (``read_as``) and those the
    model identified under, declared or inferred (``identified_as``), and
    ``delta_points`` / ``closed_set_delta_points``, 100 x the difference to
    native. ``within_tolerance`` says whether accuracy is no more than
    ``tolerance_points`` below native. ``progress(1)`` follows the native
    form and each convention of each set.
    """
    started = time.perf_counter()
    known = {scoring_label(label) for label in model.library.labels}
    work = Path(workdir)
    sets: dict[str, Any] = {}
    for source in test_sets:
        test = _load_test_set(source, per_class=per_class, seed=seed)
        data = load_labelled_set(test.folder)
        truth = [scoring_label(str(s.metadata["label"])) for s in test.native]
        scored = [i for i, t in enumerate(truth) if t in known]
        skipped = Counter(t for t in truth if t not in known)
        units = [data.y_unit(row) for row in test.rows]
        if any(u not in ("transmittance", "absorbance") for u in units):
            raise ValueError(f"{test.name}: only transmittance and absorbance sets can be rendered")
        t0 = time.perf_counter()
        native_results = _classify(model, test.native, batch_size=batch_size)
        native = {
            **_score(native_results, truth, scored),
            "read_as": dict(Counter(s.y_unit for s in test.native)),
            "identified_as": _units_used(native_results),
            "seconds": round(time.perf_counter() - t0, 3),
        }
        scores: dict[str, Any] = {NATIVE: native}
        if progress:
            progress(1)
        for convention in conventions:
            t0 = time.perf_counter()
            folder = work / test.name.replace("@", "_").replace("=", "_") / convention.name
            paths = render_set(
                data.spectra[test.rows],
                data.wavenumbers,
                convention,
                folder,
                seed=seed,
                y_units=units,
                labels=[data.labels[row] for row in test.rows],
            )
            spectra, read_as, errors = _read_rendering(paths)
            results = _classify(model, spectra, batch_size=batch_size)
            entry = _score(results, truth, scored)
            entry["read_as"] = dict(read_as)
            entry["identified_as"] = _units_used(results)
            if errors:
                entry["errors"] = dict(errors)
            entry["delta_points"] = round(100.0 * (entry["accuracy"] - native["accuracy"]), 2)
            entry["closed_set_delta_points"] = round(
                100.0 * (entry["closed_set_accuracy"] - native["closed_set_accuracy"]), 2
            )
            entry["within_tolerance"] = bool(entry["delta_points"] >= -tolerance_points)
            entry["seconds"] = round(time.perf_counter() - t0, 3)
            scores[convention.name] = entry
            if not keep_files:
                shutil.rmtree(folder, ignore_errors=True)
            if progress:
                progress(1)
        sets[test.name] = {
            "source": str(source),
            "n_selected": test.n_selected,
            "n_rendered": len(test.rows),
            "n_scored": len(scored),
            "n_skipped": len(truth) - len(scored),
            "skipped_labels": dict(sorted(skipped.items())),
            "subsample": (
                f"at most {per_class} spectra per label, seed {seed}" if per_class is not None else None
            ),
            "scores": scores,
        }
        logger.info("robustness matrix of %s: %d spectra scored", test.name, len(scored))
    return {
        "model": {
            "version": model.version,
            "references": len(model.library),
            "classes": len(model.library.class_counts()),
        },
        "tolerance_points": tolerance_points,
        "conventions": [c.as_dict() for c in conventions],
        "sets": sets,
        "seconds": round(time.perf_counter() - started, 2),
    }


def shortfalls(report: dict[str, Any]) -> list[tuple[str, str, float]]:
    """(set, convention, delta in points) for every rendering that falls out of the report's tolerance."""
    return [
        (name, convention, float(entry["delta_points"]))
        for name, test in report["sets"].items()
        for convention, entry in test["scores"].items()
        if convention != NATIVE and not entry["within_tolerance"]
    ]


# -- plot -----------------------------------------------------------------------------------------


def plot_conventions(report: dict[str, Any], path: str | Path, *, title: str) -> Path:
    """Accuracy per convention, a bar per test set, native as a dashed line in the set's colour.

    Crosses mark the closed-set accuracy (the right candidate, accepted or not).
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = [c["name"] for c in report["conventions"]]
    sets = list(report["sets"])
    width = 0.8 / max(len(sets), 1)
    fig, ax = plt.subplots(figsize=(max(10.0, 0.6 * len(names) + 5.0), 5.0), dpi=120)
    positions = np.arange(len(names))
    for k, name in enumerate(sets):
        scores = report["sets"][name]["scores"]
        colour = f"C{k}"
        offset = positions - 0.4 + width * (k + 0.5)
        ax.bar(offset, [scores[c]["accuracy"] for c in names], width, color=colour, alpha=0.8, label=name)
        ax.plot(
            offset,
            [scores[c]["closed_set_accuracy"] for c in names],
            "x",
            color="black",
            ms=4,
            label="closed-set accuracy" if k == 0 else None,
        )
        native = scores[NATIVE]["accuracy"]
        ax.axhline(native, color=colour, ls="--", lw=1, label=f"{name}: native {native:.3f}")
    ax.set_xticks(positions, names, rotation=60, ha="right", fontsize=8)
    ax.set_ylim(0.0, 1.05)
    ax.set_ylabel("accuracy (known, right label)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    out = Path(path)
    fig.savefig(out)
    plt.close(fig)
    return out
