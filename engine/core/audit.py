"""Labels a set's own spectra contradict: spectra that look like another class's, not their own.

A labelled set, whether references for a library or particles to test on, may
hold spectra filed under the wrong label: a batch of PP spectra among the PS, a
PVC film that is polystyrene. No identification can call them "right", so they
cost accuracy and calibration they do not measure; in a library they teach the
model the wrong class. :func:`contradicted_labels` finds them from the set alone:

- Each class of at least ``min_class`` spectra gets a **consensus spectrum**:
  the median, point by point, of its preprocessed spectra (the rows the model
  compares). A median follows the class's majority, so a minority of
  mislabelled spectra that agree with one another (they are often one batch)
  does not pull it over.
- A spectrum's label is **contradicted** when its Pearson r with another class's
  consensus is at least ``r_match`` and exceeds its r with its own class's
  consensus by at least ``margin``. Classes of fewer spectra have no consensus
  to contradict, nor are they offered as the class a spectrum looks like.

The rule flags little on curated references (3 of Open Specy's 636 FTIR spectra,
1 of FLOPP's 380) and 259 of Villegas-Camacho's 3000 (150 of its PS spectra
match its PP consensus at r 0.99; 110 of its PVC match its PS). It is a flag for
an analyst, not a verdict: ``mpwatch library build`` lists the references it
flags and keeps them; ``mpwatch evaluate`` reports its scores with and without
the test spectra it flags; a confirmation whose spectra it flags says so in its
answer (:mod:`daemon.growth.library`).

>>> wn = np.linspace(0.0, 1.0, 200)
>>> band = lambda c: np.exp(-((wn - c) ** 2) / 0.002)
>>> rows = [band(0.3) + 0.01 * k for k in range(4)] + [band(0.7) + 0.01 * k for k in range(4)]
>>> rows.append(band(0.7))  # filed as "a", looks like "b"
>>> found = contradicted_labels(np.array(rows), ["a"] * 4 + ["b"] * 4 + ["a"])
>>> [(c.index, c.label, c.looks_like, round(c.r_other, 2)) for c in found]
[(8, 'a', 'b', 1.0)]
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

__all__ = ["MARGIN", "MIN_CLASS", "R_MATCH", "Contradiction", "contradicted_labels", "tally"]

#: The fewest spectra of a class for it to have a consensus spectrum.
MIN_CLASS = 3
#: The least r with another class's consensus for a label to be contradicted.
R_MATCH = 0.9
#: How far that r must exceed the r with the spectrum's own class's consensus.
MARGIN = 0.2


@dataclass(frozen=True)
class Contradiction:
    """One spectrum whose label its set contradicts: its row, its label, the class it looks like, both r."""

    index: int
    label: str
    looks_like: str
    r_own: float
    r_other: float

    def __str__(self) -> str:
        return (
            f"filed as {self.label}, r {self.r_other:.2f} with the {self.looks_like} consensus"
            f" and {self.r_own:.2f} with its own"
        )


def _standardised(X: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
    """Rows centred and scaled to unit length, so that a dot product is Pearson r (a flat row stays 0)."""
    centred = X - X.mean(axis=1, keepdims=True)
    norms = np.linalg.norm(centred, axis=1, keepdims=True)
    return np.asarray(np.divide(centred, norms, out=np.zeros_like(centred), where=norms > 0))


def contradicted_labels(
    preprocessed: npt.ArrayLike,
    labels: Sequence[str],
    *,
    min_class: int = MIN_CLASS,
    r_match: float = R_MATCH,
    margin: float = MARGIN,
) -> list[Contradiction]:
    """The spectra of ``preprocessed`` (one row each, as the model compares them) whose label their set
    contradicts, in row order (see the module docstring for the rule)."""
    X = np.nan_to_num(np.asarray(preprocessed, dtype=np.float64))
    names = np.asarray([str(label) for label in labels])
    if X.ndim != 2 or X.shape[0] != names.size:
        raise ValueError(f"{names.size} labels for a matrix of shape {X.shape}")
    counts = Counter(names.tolist())
    classes = sorted(c for c, n in counts.items() if n >= min_class)
    if len(classes) < 2:
        return []
    Z = _standardised(X)
    consensus = _standardised(np.stack([np.median(X[names == c], axis=0) for c in classes]))
    R = Z @ consensus.T
    column = {c: j for j, c in enumerate(classes)}
    found = []
    for i, label in enumerate(names.tolist()):
        own = column.get(label)
        if own is None:
            continue
        others = R[i].copy()
        others[own] = -np.inf
        best = int(np.argmax(others))
        if others[best] >= r_match and others[best] - R[i, own] >= margin:
            found.append(Contradiction(i, label, classes[best], float(R[i, own]), float(others[best])))
    return found


def tally(found: Sequence[Contradiction]) -> dict[str, int]:
    """How many of ``found`` each (label, look-alike) pair holds, most first: ``{"PS as PP": 150}``.

    >>> tally([Contradiction(0, "PS", "PP", 0.4, 0.99), Contradiction(3, "PVC", "PS", 0.2, 0.95),
    ...        Contradiction(5, "PS", "PP", 0.5, 0.98)])
    {'PS as PP': 2, 'PVC as PS': 1}
    """
    return dict(Counter(f"{c.label} as {c.looks_like}" for c in found).most_common())
