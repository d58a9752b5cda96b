"""What the classifiers share: checked inputs and river's per-sample API on scikit-learn's base.

A subclass provides ``predict_proba(X)``, ``_is_fitted()`` and, once fitted,
``classes_``, ``n_features_in_`` and ``feature_names_in_``; it gets
``predict_proba_one`` / ``predict_one`` for a single spectrum given as a dict
of point -> value or a 1-D array, the input checks, and ``clone``.
``get_params`` / ``set_params`` come from scikit-learn's ``BaseEstimator``,
which reads them off ``__init__``.
"""

from __future__ import annotations

from collections.abc import Hashable, Mapping
from typing import Self

import numpy as np
import numpy.typing as npt
from sklearn.base import BaseEstimator, clone

__all__ = ["SpectrumClassifier", "check_integer", "check_option", "finite_matrix"]

FloatMatrix = npt.NDArray[np.float32]


def finite_matrix(X: npt.ArrayLike, name: str = "X") -> FloatMatrix:
    """``X`` as a C-contiguous float32 ``(spectra, points)`` matrix; ValueError for NaN or infinity."""
    matrix = np.ascontiguousarray(X, dtype=np.float32)
    if matrix.ndim != 2:
        raise ValueError(f"{name} must be 2-D (spectra x points), got shape {matrix.shape}")
    if not np.isfinite(matrix).all():
        raise ValueError(f"{name} contains NaN or infinity (or values too large for float32)")
    return matrix


def check_integer(name: str, value: object, *, at_least: int | None = None, positive: bool = False) -> None:
    """ValueError unless ``value`` is an integer (Python's or NumPy's; a ``bool`` is not one) in bounds.

    ``positive`` asks for at least 1 and says so; ``at_least`` asks for at
    least that; with neither, any integer will do.

    >>> check_integer("size", 2, at_least=2)
    >>> check_integer("size", True, positive=True)
    Traceback (most recent call last):
    ...
    ValueError: size must be a positive integer, got True
    """
    if positive:
        minimum: int | None = 1
        wanted = "a positive integer"
    elif at_least is not None:
        minimum, wanted = at_least, f"an integer of at least {at_least}"
    else:
        minimum, wanted = None, "an integer"
    if (
        isinstance(value, bool)
        or not isinstance(value, int | np.integer)
        or (minimum is not None and value < minimum)
    ):
        raise ValueError(f"{name} must be {wanted}, got {value!r}")


def check_option(name: str, value: object, options: tuple[str, ...]) -> None:
    """ValueError unless ``value`` is one of ``options``.

    >>> check_option("search", "exact", ("exact", "shortlist"))
    >>> check_option("search", "fast", ("exact", "shortlist"))
    Traceback (most recent call last):
    ...
    ValueError: search must be one of ('exact', 'shortlist'), got 'fast'
    """
    if value not in options:
        raise ValueError(f"{name} must be one of {options}, got {value!r}")


class SpectrumClassifier(BaseEstimator):
    """Base of :class:`~engine.models.subknn.SubspaceKNN` and :class:`~engine.models.cnn.PolarCNN`."""

    classes_: list[Hashable]
    n_features_in_: int
    feature_names_in_: tuple[Hashable, ...] | None

    def predict_proba(self, X: npt.ArrayLike) -> npt.NDArray[np.float64]:
        raise NotImplementedError

    def _is_fitted(self) -> bool:
        raise NotImplementedError

    def clone(self) -> Self:
        """A new, unfitted model with the same parameters."""
        fresh: Self = clone(self)
        return fresh

    def _as_matrix(self, X: npt.ArrayLike, name: str = "X", *, check_width: bool = True) -> FloatMatrix:
        """``X`` as a checked float32 matrix whose width matches what the model learned."""
        matrix = finite_matrix(X, name)
        if check_width and self._is_fitted() and matrix.shape[1] != self.n_features_in_:
            raise ValueError(
                f"{name} has {matrix.shape[1]} points per spectrum, the model {self.n_features_in_}"
            )
        return matrix

    def _row(
        self, x: Mapping[Hashable, float] | npt.ArrayLike
    ) -> tuple[FloatMatrix, tuple[Hashable, ...] | None]:
        """One spectrum (a dict of point -> value, or a 1-D array) as a checked ``(1, n)`` matrix.

        Also returns the dict's point names when they are not ``0 .. n - 1``
        (what an unfitted model learns them as).
        """
        fitted = self._is_fitted()
        names: tuple[Hashable, ...] | None = None
        if isinstance(x, Mapping):
            names = self.feature_names_in_ if fitted else (None if set(x) == set(range(len(x))) else tuple(x))
            if names is None:
                n = self.n_features_in_ if fitted else len(x)
                if set(x) != set(range(n)):
                    raise ValueError(f"a spectrum dict needs exactly the keys 0 .. {n - 1}")
                values = [x[i] for i in range(n)]
            else:
                if len(x) != len(names) or any(name not in x for name in names):
                    raise ValueError("the spectrum dict's keys differ from the points the model learned")
                values = [x[name] for name in names]
            row = np.asarray(values, dtype=np.float32)
        else:
            row = np.asarray(x, dtype=np.float32)
            if row.ndim != 1:
                raise ValueError(f"a single spectrum must be 1-D or a dict, got shape {row.shape}")
        return self._as_matrix(row[np.newaxis], "x"), names

    def _labels(self, proba: npt.NDArray[np.float64]) -> npt.NDArray[np.object_]:
        """The class of the largest probability in each row (the first of ``classes_`` on ties)."""
        classes = np.empty(len(self.classes_), dtype=object)
        for code, label in enumerate(self.classes_):
            classes[code] = label
        labels: npt.NDArray[np.object_] = classes[proba.argmax(axis=1)] if proba.size else classes[:0]
        return labels

    def predict_proba_one(self, x: Mapping[Hashable, float] | npt.ArrayLike) -> dict[Hashable, float]:
        """Probability per class for one spectrum; ``{}`` before anything is learned."""
        row, _ = self._row(x)
        if not self._is_fitted():
            return {}
        proba = self.predict_proba(row)[0]
        return {label: float(p) for label, p in zip(self.classes_, proba, strict=True)}

    def predict_one(self, x: Mapping[Hashable, float] | npt.ArrayLike) -> Hashable | None:
        """The most probable class for one spectrum; ``None`` before anything is learned."""
        proba = self.predict_proba_one(x)
        if not proba:
            return None
        return max(proba, key=proba.__getitem__)
