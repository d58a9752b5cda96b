"""Confidence: the probability that a result's label is right, calibrated on held-out references.

The subspace kNN's vote share is no probability: on environmental particles it
says 1.00 for a particle whose best reference matches at r 0.67. A
:class:`ConfidenceCalibrator` maps a result's evidence to the probability that
its candidate is right, learned from references the model did not see:

- **The evidence** (:data:`FEATURES`, made by :func:`evidence_features`) is
  class-agnostic: the candidate's best r, its vote share, the vote margin to the
  runner-up class, the r margin to the best reference of any other class, and
  how far the r lies above the candidate class's reject threshold.
- **The held-out examples** come from a k-fold pass over the library
  (:func:`held_out_folds`; the served model runs it, see
  :meth:`engine.models.served.IdentificationModel.held_out_evidence`). Each
  fold's references are identified by a model built on the other folds alone,
  with synthetic spectra mixed from those folds only, so a reference never
  meets itself, nor a mixture made from it.
- **The map** is a logistic regression over the standardised evidence followed
  by isotonic regression on the logistic score. The logistic model learns how
  much each piece of evidence counts and gives one monotone score; an isotonic
  fit of one variable cannot weigh five, and the logistic curve alone assumes
  log-odds linear in the evidence, which the held-out examples do not bear out
  (they are right almost always, until r and the vote drop together).
  The isotonic step then maps the score to the frequency of right answers
  without assuming a shape. Probabilities are kept within
  ``[1 / (n + 2), (n + 1) / (n + 2)]`` for ``n`` examples: no finite set of
  examples shows certainty. Below ``min_examples`` examples, or when they are
  all right (or all wrong), the map is the rule of succession, ``(k + 1) / (n + 2)``
  for ``k`` right of ``n``, whatever the evidence.

The examples are those whose class is still in the library without them (a class
with one reference, held out, cannot be named right): the confidence is the
probability that the label is right *for a particle of a class the library
holds*. Whether the class is there at all is the reject option's question
(:class:`~engine.models.openset.RejectCalibrator`); a particle of a class the
library lacks that passes the reject option still gets a confidence as high as
its evidence.

>>> rng = np.random.default_rng(0)
>>> r = rng.uniform(0.5, 1.0, 400)
>>> right = rng.uniform(size=400) < (r - 0.5) * 2  # right more often at higher r
>>> X = evidence_features(r, r, np.zeros(400), np.zeros(400), np.full(400, 0.5))
>>> cal = ConfidenceCalibrator().fit(X, right)
>>> low, high = cal.predict(evidence_features([0.55, 0.95], [0.55, 0.95], [0, 0], [0, 0], [0.5, 0.5]))
>>> bool(low < 0.3 < 0.7 < high < 1.0)
True
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import numpy.typing as npt
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression

__all__ = ["FEATURES", "ConfidenceCalibrator", "evidence_features", "held_out_folds"]

#: The evidence of one result, in the order of :func:`evidence_features`' columns.
FEATURES = ("r", "vote_share", "vote_margin", "r_margin", "r_over_threshold")


def evidence_features(
    r: npt.ArrayLike,
    vote_share: npt.ArrayLike,
    runner_up_share: npt.ArrayLike,
    other_r: npt.ArrayLike,
    threshold: npt.ArrayLike,
) -> npt.NDArray[np.float64]:
    """The :data:`FEATURES` of each result: ``(n, 5)``.

    ``r`` is the candidate's best r (-1 when no reference of its class is among the
    hits), ``vote_share`` and ``runner_up_share`` the shares of the first and second
    class, ``other_r`` the best r of a reference of another class (-1 if none) and
    ``threshold`` the candidate class's reject threshold.

    >>> evidence_features([0.9], [0.8], [0.15], [0.7], [0.6]).round(2).tolist()
    [[0.9, 0.8, 0.65, 0.2, 0.3]]
    """
    r = np.asarray(r, dtype=np.float64)
    vote_share = np.asarray(vote_share, dtype=np.float64)
    return np.column_stack(
        [
            r,
            vote_share,
            vote_share - np.asarray(runner_up_share, dtype=np.float64),
            r - np.asarray(other_r, dtype=np.float64),
            r - np.asarray(threshold, dtype=np.float64),
        ]
    )


def held_out_folds(labels: Sequence[str], *, n_folds: int, seed: int) -> npt.NDArray[np.int64]:
    """The fold (0 to ``n_folds`` - 1) of each reference: every class spread over the folds.

    Each class's references are shuffled (seeded) and dealt round the folds,
    continuing where the previous class stopped, so folds stay balanced even
    when most classes have one reference.

    >>> held_out_folds(["a", "a", "a", "b", "b", "c"], n_folds=3, seed=0).tolist()
    [1, 2, 0, 1, 0, 2]
    """
    if n_folds < 2:
        raise ValueError(f"n_folds must be at least 2, got {n_folds}")
    names = np.asarray([str(label) for label in labels])
    folds = np.empty(names.size, dtype=np.int64)
    rng = np.random.default_rng(seed)
    dealt = 0
    for label in dict.fromkeys(names.tolist()):
        rows = rng.permutation(np.flatnonzero(names == label))
        folds[rows] = (dealt + np.arange(rows.size)) % n_folds
        dealt += rows.size
    return folds


@dataclass(eq=False)
class ConfidenceCalibrator:
    """Evidence -> probability that the candidate is right: logistic regression, then isotonic.

    ``regularization`` is the logistic model's inverse L2 strength (scikit-learn's
    ``C``); ``min_examples`` the fewest held-out examples to fit a map on (fewer
    give the rule of succession). The fitted map is kept as plain arrays, so
    :meth:`predict` is a few vector operations and pickles stay small.
    """

    regularization: float = 1.0
    min_examples: int = 20
    n_examples_: int = 0
    n_right_: int = 0
    mean_: npt.NDArray[np.float64] = field(default_factory=lambda: np.zeros(len(FEATURES)))
    scale_: npt.NDArray[np.float64] = field(default_factory=lambda: np.ones(len(FEATURES)))
    coef_: npt.NDArray[np.float64] = field(default_factory=lambda: np.zeros(len(FEATURES)))
    intercept_: float = 0.0
    knots_score_: npt.NDArray[np.float64] = field(default_factory=lambda: np.zeros(1))
    knots_probability_: npt.NDArray[np.float64] = field(default_factory=lambda: np.full(1, 0.5))

    def fit(self, features: npt.ArrayLike, right: npt.ArrayLike) -> ConfidenceCalibrator:
        """Learn the map from held-out examples: their evidence and whether their candidate was right."""
        X = np.asarray(features, dtype=np.float64).reshape(-1, len(FEATURES))
        y = np.asarray(right, dtype=bool).ravel()
        if X.shape[0] != y.size:
            raise ValueError(f"{X.shape[0]} examples but {y.size} outcomes")
        if not np.all(np.isfinite(X)):
            raise ValueError("features contain NaN or infinity")
        self.n_examples_, self.n_right_ = int(y.size), int(y.sum())
        self.mean_ = X.mean(axis=0) if y.size else np.zeros(len(FEATURES))
        spread = X.std(axis=0) if y.size else np.ones(len(FEATURES))
        self.scale_ = np.where(spread > 0, spread, 1.0)
        succession = (self.n_right_ + 1) / (self.n_examples_ + 2)
        if y.size < self.min_examples or self.n_right_ in (0, y.size):
            self.coef_, self.intercept_ = np.zeros(len(FEATURES)), 0.0
            self.knots_score_, self.knots_probability_ = np.zeros(1), np.full(1, succession)
            return self
        logistic = LogisticRegression(C=self.regularization).fit((X - self.mean_) / self.scale_, y)
        self.coef_ = logistic.coef_.ravel().astype(np.float64)
        self.intercept_ = float(logistic.intercept_[0])
        isotonic = IsotonicRegression(out_of_bounds="clip").fit(self._score(X), y.astype(np.float64))
        self.knots_score_ = np.asarray(isotonic.X_thresholds_, dtype=np.float64)
        self.knots_probability_ = np.asarray(isotonic.y_thresholds_, dtype=np.float64)
        return self

    def _score(self, X: npt.NDArray[np.float64]) -> npt.NDArray[np.float64]:
        return np.asarray(((X - self.mean_) / self.scale_) @ self.coef_ + self.intercept_, dtype=np.float64)

    def predict(self, features: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """The probability that each candidate is right, one per row of ``features``."""
        X = np.asarray(features, dtype=np.float64).reshape(-1, len(FEATURES))
        if not np.all(np.isfinite(X)):
            raise ValueError("features contain NaN or infinity")
        p = np.interp(self._score(X), self.knots_score_, self.knots_probability_)
        n = self.n_examples_
        return np.asarray(np.clip(p, 1.0 / (n + 2), (n + 1.0) / (n + 2)), dtype=np.float64)
