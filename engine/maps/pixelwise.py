"""Each foreground pixel's identification, in batch: the model's kNN votes and the r to its references.

A pixel is decided as :meth:`IdentificationModel.classify` decides a spectrum,
on the same features and by the same rule (a candidate is accepted when the
ensemble's vote share reaches ``min_vote`` and its best Pearson r to the
candidate's measured references reaches that class's threshold), without
building a result per pixel. The best r of every class comes first, from one
matrix product with the measured references (exact; the served path looks
among the 25 best hits, which gives the same r unless 25 references of other
classes are closer still), and a pixel whose r reaches no class's threshold is
unknown without a vote. The votes come from one
:meth:`~engine.models.subknn.SubspaceKNN.predict_proba` per block. The CNN
member, when there is one, does not vote here; each particle's mean spectrum
is classified by the whole served model afterwards.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from engine.models.openset import pearson_rows
from engine.models.served import IdentificationModel

__all__ = ["UNKNOWN", "PixelCalls", "PixelIdentifier"]

#: The code of a foreground pixel whose candidate was not accepted.
UNKNOWN = -2

#: Query rows x references per product, so the r matrix of a chunk stays small.
R_CHUNK_VALUES = 4_000_000


@dataclass(frozen=True)
class PixelCalls:
    """Per pixel: the class index (into ``classes``) or :data:`UNKNOWN`, the vote share, the candidate's r.

    A pixel whose r reaches no class's threshold is not voted on (vote share 0, r its best over all
    classes): no vote could make it known.
    """

    codes: npt.NDArray[np.int32]
    vote_share: npt.NDArray[np.float32]
    r: npt.NDArray[np.float32]


class PixelIdentifier:
    """Identifies feature rows with ``model`` (the model routed to: the whole library or a range model)."""

    def __init__(self, model: IdentificationModel) -> None:
        self.model = model
        self.classes = [str(c) for c in model.knn_.classes_]
        labels = np.asarray(model.library.labels)
        position = {label: j for j, label in enumerate(self.classes)}
        codes = np.asarray([position.get(str(label), -1) for label in labels], dtype=np.int64)
        keep = np.flatnonzero(codes >= 0)
        order = keep[np.argsort(codes[keep], kind="stable")]
        self.references_ = pearson_rows(model.library.preprocessed[order]) if order.size else None
        ref_codes = codes[order]
        #: Per class, the first column of its references in ``references_`` (-1: none).
        self.starts_ = np.full(len(self.classes), -1, dtype=np.int64)
        present, first = np.unique(ref_codes, return_index=True)
        self.starts_[present] = first
        self.present_ = present
        calibrator = model.calibrator_
        self.thresholds_ = np.asarray([calibrator.threshold(c) for c in self.classes], dtype=np.float32)
        self.min_vote_ = float(calibrator.min_vote)

    def class_r(self, X: npt.NDArray[np.float32]) -> npt.NDArray[np.float32]:
        """Per row and class: the best Pearson r to that class's measured references (-1 without any)."""
        out = np.full((len(X), len(self.classes)), -1.0, dtype=np.float32)
        if self.references_ is None or len(X) == 0:
            return out
        starts = self.starts_[self.present_]
        step = max(1, R_CHUNK_VALUES // len(self.references_))
        for begin in range(0, len(X), step):
            r = pearson_rows(X[begin : begin + step]) @ self.references_.T
            out[begin : begin + step, self.present_] = np.maximum.reduceat(r, starts, axis=1)
        return out

    def identify(self, X: npt.NDArray[np.float32]) -> PixelCalls:
        """The identification of every feature row."""
        n = len(X)
        if n == 0 or not self.classes:
            empty = np.zeros(n, dtype=np.float32)
            return PixelCalls(np.full(n, UNKNOWN, dtype=np.int32), empty, empty - 1)
        class_r = self.class_r(X)
        # A row whose r reaches no class's threshold is unknown whatever the votes: it is not voted on.
        voted = np.flatnonzero((class_r >= self.thresholds_).any(axis=1))
        codes = np.full(n, UNKNOWN, dtype=np.int32)
        share = np.zeros(n, dtype=np.float32)
        r = class_r.max(axis=1)
        if voted.size:
            proba = np.asarray(self.model.knn_.predict_proba(X[voted]))
            best = np.argmax(proba, axis=1)
            share[voted] = proba[np.arange(voted.size), best]
            r[voted] = class_r[voted, best]
            accepted = (r[voted] >= self.thresholds_[best]) & (share[voted] >= self.min_vote_)
            codes[voted] = np.where(accepted, best, UNKNOWN)
        return PixelCalls(codes, share, r)
