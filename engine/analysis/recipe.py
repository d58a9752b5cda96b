"""Open Specy's identification recipe, the baseline every evaluation table sets beside mpwatch.

The recipe is what a lab gets from Open Specy's matching (Cowger et al. 2021):
each spectrum as absorbance on a 5 cm-1 grid, the Savitzky-Golay first
derivative (order 3, window 11), its absolute value, min-max scaled; then the
Pearson r against every library reference, and the best reference's class as
the answer. It has no reject option: every spectrum gets a label.

Units and techniques are settled as for the served model
(:func:`engine.core.conventions.resolve_all`), so the two are compared on the
same readings of the same files; only what is done with them differs. A Raman
library keeps its own span (100-3500 cm-1) on the recipe's 5 cm-1 step.

>>> from engine.core.spectrum import Spectrum
>>> import numpy as np
>>> x = np.linspace(600, 4000, 900)
>>> band = lambda centre: Spectrum(x, np.exp(-(((x - centre) / 15) ** 2)), y_unit="absorbance")
>>> lib = ReferenceLibrary.empty()
>>> _ = lib.add([band(1000), band(2900)], ["PE", "PP"])
>>> [(m.label, round(m.r, 2)) for m in OpenSpecyRecipe(lib).identify([band(2905)])]
[('PP', 0.88)]
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from engine.core.conventions import resolve_all
from engine.core.library import ReferenceLibrary
from engine.core.preprocess import PIPELINES, build_pipeline, transform
from engine.core.spectrum import Spectrum

__all__ = ["RECIPE_NAME", "Match", "OpenSpecyRecipe"]

#: How tables name the baseline.
RECIPE_NAME = "Open Specy's recipe"

#: The recipe's grid step, cm-1.
RECIPE_STEP = 5.0

#: Raman shift span of the recipe's grid for a Raman library (the IR span is the pipeline's own).
RAMAN_SPAN = (100.0, 3500.0)


@dataclass(frozen=True)
class Match:
    """The recipe's answer for one spectrum: the best reference's class and its Pearson r."""

    label: str
    r: float


def _standardised(X: npt.NDArray[np.float32]) -> npt.NDArray[np.float64]:
    """Rows centred and scaled to unit norm, so that a dot product is Pearson's r (flat rows stay 0)."""
    rows = np.nan_to_num(np.asarray(X, dtype=np.float64))
    rows -= rows.mean(axis=1, keepdims=True)
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    return np.divide(rows, norms, out=np.zeros_like(rows), where=norms > 0)


class OpenSpecyRecipe:
    """The recipe fitted to one library's references (their measured spectra, not mpwatch's features)."""

    def __init__(self, library: ReferenceLibrary) -> None:
        if not len(library):
            raise ValueError("the recipe needs a library with references")
        start, stop, _ = PIPELINES["openspecy"][1]
        if library.technique == "raman":
            start, stop = RAMAN_SPAN
        self.pipeline = build_pipeline("openspecy", grid=(start, stop, RECIPE_STEP))
        self.labels = np.array(library.labels)
        self.references_ = _standardised(transform(self.pipeline, library.measured))

    def identify(self, spectra: Sequence[Spectrum]) -> list[Match]:
        """The best reference's class and r for each spectrum, in order."""
        if not spectra:
            return []
        queries = _standardised(transform(self.pipeline, resolve_all(spectra)))
        r = queries @ self.references_.T
        best = np.argmax(r, axis=1)
        return [Match(str(self.labels[j]), float(r[i, j])) for i, j in enumerate(best)]
