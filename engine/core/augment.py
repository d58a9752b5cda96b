"""Synthetic spectra as in the KWR study: random convex mixtures of two spectra of one class.

For each synthetic spectrum two different spectra ``a`` and ``b`` of the
same class are drawn, then weights ``w1, w2 ~ U(low, high)`` with
``w1 + w2 <= 1`` (rejection sampling), and the result is ``w1*a + w2*b``.
Everything is seeded; :func:`synthesize_class` regenerates one class alone,
which is what an incremental library update needs.

>>> import numpy as np
>>> X = np.array([[1.0, 0.0, 0.0, 0.0], [0.0, 1.0, 0.0, 0.0], [0.0, 0.0, 1.0, 0.0]])
>>> Xs, ys = synthesize(X, ["PE", "PE", "PP"], n_per_class=4, seed=0)
>>> Xs.shape, sorted(set(ys))
((8, 4), ['PE', 'PP'])
>>> bool(np.all(Xs[np.array(ys) == "PE"].sum(axis=1) <= 1.0))  # convex weights
True
"""

from __future__ import annotations

import zlib
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["class_seed", "draw_weights", "synthesize", "synthesize_class"]

FloatMatrix = npt.NDArray[np.float32]


def draw_weights(
    n: int, rng: np.random.Generator, *, low: float = 0.1, high: float = 0.9
) -> npt.NDArray[np.float64]:
    """``n`` weight pairs from U(low, high)^2 conditioned on ``w1 + w2 <= 1`` (rejection sampling)."""
    if not 0.0 <= low < high or 2 * low > 1.0:
        raise ValueError(f"weights U({low}, {high}) cannot sum to at most 1")
    out = np.empty((0, 2))
    while out.shape[0] < n:
        pairs = rng.uniform(low, high, size=(max(2 * (n - out.shape[0]), 16), 2))
        out = np.vstack([out, pairs[pairs.sum(axis=1) <= 1.0]])
    return out[:n]


def class_seed(seed: int, label: str) -> int:
    """A per-class seed, so one class regenerates identically whatever the other classes are."""
    return (seed * 1_000_003 + zlib.crc32(label.encode("utf-8"))) % (2**32)


def synthesize_class(
    X: npt.ArrayLike,
    n: int,
    *,
    seed: int,
    low: float = 0.1,
    high: float = 0.9,
) -> FloatMatrix:
    """``n`` synthetic spectra from the rows of ``X`` (all of one class).

    Two *different* rows are mixed. A class with a single spectrum can only
    be mixed with itself, which gives scaled copies of it.
    NaN (missing) in either parent stays NaN in the child.
    """
    X = np.asarray(X, dtype=np.float32)
    if X.ndim != 2 or X.shape[0] == 0:
        raise ValueError(f"need a non-empty 2-D matrix of one class, got shape {X.shape}")
    rng = np.random.default_rng(seed)
    m = X.shape[0]
    first = rng.integers(0, m, size=n)
    # always a different row, when there is one
    second = (first + rng.integers(1, m, size=n)) % m if m > 1 else first
    w = draw_weights(n, rng, low=low, high=high).astype(np.float32)
    return w[:, :1] * X[first] + w[:, 1:] * X[second]


def synthesize(
    X: npt.ArrayLike,
    y: Sequence[Any],
    *,
    n_per_class: int,
    seed: int,
    low: float = 0.1,
    high: float = 0.9,
) -> tuple[FloatMatrix, list[Any]]:
    """``n_per_class`` synthetic spectra for every class in ``y``; returns (spectra, labels)."""
    X = np.asarray(X, dtype=np.float32)
    labels = np.asarray([str(v) for v in y])
    if X.shape[0] != labels.size:
        raise ValueError(f"{X.shape[0]} spectra but {labels.size} labels")
    blocks, out_labels = [], []
    for label in dict.fromkeys(labels.tolist()):
        rows = X[labels == label]
        blocks.append(synthesize_class(rows, n_per_class, seed=class_seed(seed, label), low=low, high=high))
        out_labels.extend([label] * n_per_class)
    if not blocks:
        return np.zeros((0, X.shape[1] if X.ndim == 2 else 0), np.float32), []
    return np.vstack(blocks), out_labels
