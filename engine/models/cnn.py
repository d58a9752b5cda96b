"""A CNN member on polar-coordinate images of spectra (the KWR study's challenger).

Each spectrum (a feature row on the common wavenumber grid) is drawn as a
curve on polar axes: the angle is the position on the wavenumber axis (0 to
2π over the grid, low wavenumbers first), the radius the intensity min-max
normalised to [``inner_radius``, 1]. :func:`polar_images` rasterises that
curve into an ``N x N`` image: every segment between two neighbouring points
is sampled every half pixel, the samples are splatted bilinearly into the grid
(one :func:`numpy.bincount` for a whole batch), so a pixel holds the length
of curve that passes through it, and ``1 - exp(-length)`` turns that into
ink: one pass of the curve gives about 0.6, crossings saturate towards 1. The
image depends only on its own row, never on the rest of the batch.

:func:`gramian_field` is the second encoding on offer: the Gramian angular
summation field (GASF) of the row averaged down to ``size`` points.

:class:`PolarCNN` is the classifier: a compact 2-D CNN (conv-BN-ReLU blocks
that halve the image by striding, global average pooling, a linear head; see
:class:`SpectrumImageNet`) trained with AdamW on class-balanced batches, with
early stopping on a stratified validation split, on ``n_threads`` CPU
threads (or a GPU with ``device="auto"``). Two constant channels with each
pixel's x and y go in beside the image ("CoordConv"): global average pooling
discards *where* a pattern is, and on a polar image where means which
wavenumber. (With four blocks the receptive field already spans the image and
on the benchmark they made no measurable difference; they cost next to
nothing and keep position available to shallower networks.)

Defaults (64 px, 4 blocks of 16-128 channels, about 100k weights, AdamW at
3e-3, batches of 64, at most 30 epochs, patience 4) train on 2000 spectra of
20 classes in 0.5 to 1.5 minutes on one CPU thread (depending on what else
the machine runs) and classify a spectrum in 2 to 3.5 ms, encoding included;
see ``benchmarks/bench_cnn.py``.
"""

from __future__ import annotations

import copy
import io
import math
from collections.abc import Hashable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from sklearn.exceptions import NotFittedError
from torch import nn

from engine.core.augment import synthesize
from engine.models.base import SpectrumClassifier, finite_matrix
from engine.core.storage import atomic_write_bytes

__all__ = ["PolarCNN", "SpectrumImageNet", "gramian_field", "polar_images"]

FloatMatrix = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]

#: Curve samples per pixel of length when a segment is rasterised.
SAMPLES_PER_PIXEL = 2.0
#: Samples rasterised per chunk of rows (bounds the temporary arrays to some tens of MB).
RASTER_CHUNK_SAMPLES = 1 << 21
#: A validation loss must fall by this share of the best so far to count as an improvement.
MIN_IMPROVEMENT = 1e-3
#: Optimiser steps per epoch at least, however few rows there are (small libraries still train).
MIN_STEPS_PER_EPOCH = 10
#: Predictions for at most this many spectra run on one thread.
SINGLE_THREAD_ROWS = 8
#: Spectra encoded and classified per batch at prediction time.
PREDICT_BATCH = 256
#: Format tag of a checkpoint written by :meth:`PolarCNN.save`.
CHECKPOINT_FORMAT = "mpwatch.cnn.PolarCNN"
CHECKPOINT_VERSION = 1

_ENCODINGS = ("polar", "gasf", "polar+gasf")
_DEVICES = ("cpu", "cuda", "auto")


# ---------------------------------------------------------------------------------------------- encodings


def _min_max(matrix: FloatMatrix) -> npt.NDArray[np.float64]:
    """Each row scaled to [0, 1]; a constant row becomes zeros."""
    values = matrix.astype(np.float64)
    low = values.min(axis=1, keepdims=True)
    span = values.max(axis=1, keepdims=True) - low
    return np.divide(values - low, span, out=np.zeros_like(values), where=span > 0)


def polar_images(X: npt.ArrayLike, *, size: int = 64, inner_radius: float = 0.15) -> FloatMatrix:
    """Polar-coordinate images of the rows of ``X``: ``(n, d) -> (n, size, size)`` float32 in [0, 1).

    Point ``i`` of ``d`` is drawn at angle ``2π i / d`` and radius
    ``inner_radius + (1 - inner_radius) * (x_i - min) / (max - min)``, the
    row's min-max normalised intensity (a constant row is the circle at
    ``inner_radius``). The inner radius keeps the row's minima apart instead
    of piling them up on the centre. See the module docstring for the ink.

    >>> import numpy as np
    >>> images = polar_images(np.array([[0.0, 1.0, 0.0, 1.0], [1.0, 1.0, 1.0, 1.0]]), size=8)
    >>> images.shape, images.dtype, bool(images.min() >= 0.0 and images.max() < 1.0)
    ((2, 8, 8), dtype('float32'), True)
    """
    matrix = finite_matrix(X)
    if isinstance(size, bool) or not isinstance(size, int | np.integer) or size < 2:
        raise ValueError(f"size must be an integer of at least 2, got {size!r}")
    if not 0.0 <= inner_radius < 1.0:
        raise ValueError(f"inner_radius must be in [0, 1), got {inner_radius!r}")
    n, d = matrix.shape
    size = int(size)
    images = np.zeros((n, size * size), dtype=np.float64)
    if n == 0 or d == 0:
        return images.reshape(n, size, size).astype(np.float32)
    radius = inner_radius + (1.0 - inner_radius) * _min_max(matrix)
    angle = 2.0 * np.pi * np.arange(d) / d
    half = (size - 1) / 2.0
    cols = half * (1.0 + radius * np.cos(angle))  # pixel coordinates, (n, d)
    rows = half * (1.0 - radius * np.sin(angle))  # row 0 at the top: 90 degrees points up
    if d == 1:
        _splat(images, np.zeros(n, dtype=np.int64), rows[:, 0], cols[:, 0], np.ones(n), size)
        return (1.0 - np.exp(-images)).reshape(n, size, size).astype(np.float32)
    d_rows, d_cols = np.diff(rows, axis=1), np.diff(cols, axis=1)
    lengths = np.hypot(d_rows, d_cols)  # (n, d - 1), in pixels
    counts = np.maximum(1, np.ceil(lengths * SAMPLES_PER_PIXEL)).astype(np.int64)
    per_row = counts.sum(axis=1)
    start = 0
    while start < n:
        # As many rows as fit in one chunk of samples (always at least one).
        stop = start + max(1, int(np.searchsorted(np.cumsum(per_row[start:]), RASTER_CHUNK_SAMPLES, "right")))
        segment_counts = counts[start:stop].ravel()
        segment = np.repeat(np.arange(segment_counts.size), segment_counts)
        first = np.cumsum(segment_counts) - segment_counts
        t = (np.arange(segment.size) - first[segment]) / segment_counts[segment]
        owner = segment // (d - 1)  # row of each sample, within the chunk
        r0 = rows[start:stop, :-1].ravel()[segment]
        c0 = cols[start:stop, :-1].ravel()[segment]
        sample_rows = r0 + t * d_rows[start:stop].ravel()[segment]
        sample_cols = c0 + t * d_cols[start:stop].ravel()[segment]
        # Each sample stands for 1 / count of its segment's length: a pixel sums the curve length in it.
        weights = (lengths[start:stop].ravel() / segment_counts)[segment]
        _splat(images[start:stop], owner, sample_rows, sample_cols, weights, size)
        start = stop
    return (1.0 - np.exp(-images)).reshape(n, size, size).astype(np.float32)


def _splat(
    images: npt.NDArray[np.float64],
    owner: IntArray,
    rows: npt.NDArray[np.float64],
    cols: npt.NDArray[np.float64],
    weights: npt.NDArray[np.float64],
    size: int,
) -> None:
    """Add ``weights`` at fractional pixel positions into flat ``images`` (n, size * size), bilinearly."""
    r0 = np.minimum(np.floor(rows).astype(np.int64), size - 2)
    c0 = np.minimum(np.floor(cols).astype(np.int64), size - 2)
    fr, fc = rows - r0, cols - c0
    base = owner * (size * size) + r0 * size + c0
    cells = np.concatenate([base, base + 1, base + size, base + size + 1])
    shares = np.concatenate(
        [(1 - fr) * (1 - fc) * weights, (1 - fr) * fc * weights, fr * (1 - fc) * weights, fr * fc * weights]
    )
    images += np.bincount(cells, weights=shares, minlength=images.size).reshape(images.shape)


def _paa_matrix(d: int, size: int) -> npt.NDArray[np.float64]:
    """``(size, d)`` averaging weights: output j is the row's mean over ``[j d / size, (j+1) d / size)``.

    Fractional overlaps are weighted, so any ``d`` and ``size`` work (``size > d`` repeats points).
    """
    edges = np.linspace(0.0, float(d), size + 1)
    left, right = edges[:-1, np.newaxis], edges[1:, np.newaxis]
    points = np.arange(d, dtype=np.float64)[np.newaxis, :]
    overlap = np.clip(np.minimum(right, points + 1) - np.maximum(left, points), 0.0, None)
    return overlap / overlap.sum(axis=1, keepdims=True)


def gramian_field(X: npt.ArrayLike, size: int = 64) -> FloatMatrix:
    """Gramian angular summation fields: ``(n, d) -> (n, size, size)`` float32 in [-1, 1].

    Each row is averaged down to ``size`` points (piecewise aggregate
    approximation), min-max scaled to ``x`` in [-1, 1] and read as angles
    ``φ = arccos(x)``; the field is ``cos(φ_i + φ_j) = x_i x_j - sqrt(1 - x_i²) sqrt(1 - x_j²)``.

    >>> import numpy as np
    >>> field = gramian_field(np.array([[0.0, 1.0, 2.0, 3.0]]), size=4)
    >>> field.shape, float(field[0, 0, 0]), float(field[0, 3, 3])  # cos(2π), cos(0)
    ((1, 4, 4), 1.0, 1.0)
    """
    matrix = finite_matrix(X)
    if isinstance(size, bool) or not isinstance(size, int | np.integer) or size < 1:
        raise ValueError(f"size must be a positive integer, got {size!r}")
    n, d = matrix.shape
    if d == 0:
        return np.zeros((n, int(size), int(size)), dtype=np.float32)
    reduced = matrix.astype(np.float64) @ _paa_matrix(d, int(size)).T
    x = np.clip(2.0 * _min_max(reduced.astype(np.float32)) - 1.0, -1.0, 1.0)
    s = np.sqrt(1.0 - x * x)
    field = x[:, :, np.newaxis] * x[:, np.newaxis, :] - s[:, :, np.newaxis] * s[:, np.newaxis, :]
    return field.astype(np.float32)


# ---------------------------------------------------------------------------------------------- network


class SpectrumImageNet(nn.Module):
    """A compact CNN: ``depth`` conv-BN-ReLU blocks, global average pooling, dropout, a linear head.

    With ``coordinates`` two channels holding each pixel's x and y in [-1, 1]
    are appended to the ``in_channels`` of the input ("CoordConv").

    Each block is a 3x3 convolution with stride 2 (a learned pooling: it
    halves the image), batch normalisation and ReLU; block ``b`` has
    ``width * 2**b`` channels. Striding instead of conv + max-pool costs a
    quarter of the convolution and none of the pooling: on a CPU that made
    training 3 to 5 times faster at the same or better accuracy on real
    spectra (see ``benchmarks/bench_cnn.py``).
    """

    def __init__(
        self,
        *,
        in_channels: int,
        n_classes: int,
        width: int,
        depth: int,
        dropout: float,
        coordinates: bool = True,
    ) -> None:
        super().__init__()
        self.coordinates = coordinates
        layers: list[nn.Module] = []
        channels = in_channels + (2 if coordinates else 0)
        for block in range(depth):
            out = width * 2**block
            layers += [
                nn.Conv2d(channels, out, kernel_size=3, stride=2, padding=1, bias=False),
                nn.BatchNorm2d(out),
                nn.ReLU(inplace=True),
            ]
            channels = out
        self.features = nn.Sequential(*layers)
        self.head = nn.Sequential(
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Dropout(dropout), nn.Linear(channels, n_classes)
        )

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        if self.coordinates:
            n, _, rows, cols = images.shape
            y = torch.linspace(1.0, -1.0, rows, device=images.device, dtype=images.dtype)  # up is positive
            x = torch.linspace(-1.0, 1.0, cols, device=images.device, dtype=images.dtype)
            grid = torch.stack([x.expand(rows, cols), y[:, None].expand(rows, cols)])
            images = torch.cat([images, grid.expand(n, 2, rows, cols)], dim=1)
        logits: torch.Tensor = self.head(self.features(images))
        return logits


@contextmanager
def _torch_session(threads: int | None, *, device: torch.device) -> Iterator[None]:
    """Torch on ``threads`` intra-op threads, with deterministic algorithms; both restored after."""
    threads_before = torch.get_num_threads()
    deterministic_before = torch.are_deterministic_algorithms_enabled()
    warn_only_before = torch.is_deterministic_algorithms_warn_only_enabled()
    if threads is not None and threads != threads_before:
        torch.set_num_threads(threads)
    # CUDA has ops without a deterministic kernel: warn there instead of failing.
    fill_before = torch.utils.deterministic.fill_uninitialized_memory  # type: ignore[attr-defined]
    torch.use_deterministic_algorithms(mode=True, warn_only=device.type != "cpu")
    # Filling every new tensor with NaN (a debugging aid of deterministic mode) costs a sixth of the time.
    torch.utils.deterministic.fill_uninitialized_memory = False  # type: ignore[attr-defined]
    try:
        yield
    finally:
        torch.utils.deterministic.fill_uninitialized_memory = fill_before  # type: ignore[attr-defined]
        torch.use_deterministic_algorithms(mode=deterministic_before, warn_only=warn_only_before)
        if torch.get_num_threads() != threads_before:
            torch.set_num_threads(threads_before)


# ---------------------------------------------------------------------------------------------- classifier


class PolarCNN(SpectrumClassifier):
    """CNN classifier on polar-coordinate images of spectra, with river's per-sample API.

    Parameters
    ----------
    encoding
        ``"polar"`` (:func:`polar_images`), ``"gasf"`` (:func:`gramian_field`)
        or ``"polar+gasf"`` (both, as two channels).
    image_size
        Side of the images, in pixels.
    inner_radius
        Radius of a row's minimum on the polar image (its maximum is at 1).
    width
        Channels of the first conv block; each further block doubles them.
    depth
        Conv blocks (each halves the image).
    dropout
        Dropout before the linear head.
    n_synthetic
        Synthetic spectra per class (:func:`engine.core.augment.synthesize`, seeded
        by ``seed``) added to the training rows inside :meth:`fit`; 0 trains
        on the rows given, which is what the caller does when it passes the
        library and its synthetic spectra itself.
    max_epochs
        Cap on training epochs. An epoch draws as many rows as are trained on,
        but at least ``MIN_STEPS_PER_EPOCH`` batches.
    patience
        Epochs without a lower validation loss before training stops; the
        weights of the best epoch are kept.
    validation_fraction
        Share of each class's rows held out for early stopping (classes with
        one row keep it for training; no validation rows means
        ``max_epochs`` epochs).
    batch_size
        Rows per optimiser step; batches are drawn class-balanced (every class
        equally likely, rows with replacement).
    learning_rate, weight_decay
        AdamW's.
    device
        ``"cpu"`` (default), ``"cuda"``, or ``"auto"``: a GPU when there is one.
    n_threads
        Torch CPU threads while training and predicting batches (the
        process-wide setting is restored after; a few spectra are predicted
        on one thread); ``None`` leaves torch's setting alone. One thread by
        default: the service trains beside the classifier, and on a busy
        machine a second OpenMP thread mostly waits.
    seed
        Seeds the split, the batches, the initial weights, dropout and the
        synthetic spectra: the same seed, data and ``n_threads`` give the same
        predictions (deterministic algorithms are used; a different thread
        count sums in another order, and the training drifts apart).

    Attributes
    ----------
    classes_
        Labels in order of first appearance; the columns of :meth:`predict_proba`.
    n_features_in_
        Points per spectrum.
    feature_names_in_
        The dict keys, in order, when the model first learned from a dict whose
        keys are not simply ``0 .. n - 1``; otherwise ``None``.
    training_spectra_, training_codes_
        Every row learned (by :meth:`fit` or :meth:`learn_one`, synthetic rows
        made inside :meth:`fit` excluded: they are regenerated) and its class
        position: what the next refit trains on.
    pending_spectra_, pending_codes_
        Rows from :meth:`learn_one` not yet trained on (joined to the
        training rows at the next retrain).
    network_
        The trained :class:`SpectrumImageNet` (``None`` until there is one).
    architecture_
        The network's constructor arguments.
    history_
        Per epoch: mean training loss, validation loss and accuracy (NaN
        without validation rows).
    best_epoch_, n_epochs_
        The epoch whose weights were kept (1-based) and the epochs run.
    stale_
        Rows were learned since the network was last trained.

    Notes
    -----
    :meth:`learn_one` *buffers*: it adds the spectrum to the training rows and
    marks the network stale; the next prediction (or :meth:`refit`) retrains
    from scratch on every row learned, so a stream of ``learn_one`` calls
    gives exactly the network that :meth:`fit` gives on the same rows in the
    same order. A retrain costs a full training run: in the service the CNN is
    a scheduled challenger retrained in its own process, not a per-spectrum
    learner.

    Examples
    --------
    Two polymers, told apart by where their band is:

    >>> import numpy as np
    >>> from engine.models.cnn import PolarCNN
    >>> wavenumbers = np.linspace(400.0, 4000.0, 200)
    >>> def band(centre):
    ...     return np.exp(-0.5 * ((wavenumbers - centre) / 60.0) ** 2)
    >>> rng = np.random.default_rng(0)
    >>> X = np.array([band(c + rng.normal(0, 20)) for c in [1000.0] * 12 + [2900.0] * 12])
    >>> y = ["PS"] * 12 + ["PE"] * 12
    >>> model = PolarCNN(image_size=24, width=8, depth=2, max_epochs=10, batch_size=16, seed=0).fit(X, y)
    >>> model.classes_
    ['PS', 'PE']
    >>> model.predict(np.array([band(1010.0), band(2890.0)])).tolist()
    ['PS', 'PE']
    >>> proba = model.predict_proba_one(band(2890.0))
    >>> max(proba, key=proba.get), round(sum(proba.values()), 6)
    ('PE', 1.0)
    """

    def __init__(
        self,
        *,
        encoding: str = "polar",
        image_size: int = 64,
        inner_radius: float = 0.15,
        width: int = 16,
        depth: int = 4,
        dropout: float = 0.1,
        n_synthetic: int = 0,
        max_epochs: int = 30,
        patience: int = 4,
        validation_fraction: float = 0.15,
        batch_size: int = 64,
        learning_rate: float = 3e-3,
        weight_decay: float = 1e-4,
        device: str = "cpu",
        n_threads: int | None = 1,
        seed: int = 0,
    ) -> None:
        self.encoding = encoding
        self.image_size = image_size
        self.inner_radius = inner_radius
        self.width = width
        self.depth = depth
        self.dropout = dropout
        self.n_synthetic = n_synthetic
        self.max_epochs = max_epochs
        self.patience = patience
        self.validation_fraction = validation_fraction
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.device = device
        self.n_threads = n_threads
        self.seed = seed

    # ------------------------------------------------------------------ parameters

    def _validate_params(self) -> None:
        def integer(name: str, value: object, minimum: int) -> None:
            if isinstance(value, bool) or not isinstance(value, int | np.integer) or value < minimum:
                raise ValueError(f"{name} must be an integer of at least {minimum}, got {value!r}")

        def fraction(name: str, value: object, low: float, high: float, *, closed_high: bool) -> None:
            ok = isinstance(value, float | int) and not isinstance(value, bool)
            if ok:
                number = float(value)  # type: ignore[arg-type]
                ok = low <= number and (number <= high if closed_high else number < high)
            if not ok:
                bracket = "]" if closed_high else ")"
                raise ValueError(f"{name} must be in [{low}, {high}{bracket}, got {value!r}")

        if self.encoding not in _ENCODINGS:
            raise ValueError(f"encoding must be one of {_ENCODINGS}, got {self.encoding!r}")
        integer("image_size", self.image_size, 4)
        integer("width", self.width, 1)
        integer("depth", self.depth, 1)
        if int(self.image_size) < 2 ** int(self.depth):
            raise ValueError(f"image_size {self.image_size} is too small for {self.depth} pooling blocks")
        integer("n_synthetic", self.n_synthetic, 0)
        integer("max_epochs", self.max_epochs, 1)
        integer("patience", self.patience, 1)
        integer("batch_size", self.batch_size, 2)
        if self.n_threads is not None:
            integer("n_threads", self.n_threads, 1)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int | np.integer):
            raise ValueError(f"seed must be an integer, got {self.seed!r}")
        fraction("inner_radius", self.inner_radius, 0.0, 1.0, closed_high=False)
        fraction("dropout", self.dropout, 0.0, 1.0, closed_high=False)
        fraction("validation_fraction", self.validation_fraction, 0.0, 1.0, closed_high=False)
        fraction("learning_rate", self.learning_rate, 0.0, math.inf, closed_high=False)
        fraction("weight_decay", self.weight_decay, 0.0, math.inf, closed_high=False)
        if not float(self.learning_rate) > 0.0:
            raise ValueError(f"learning_rate must be positive, got {self.learning_rate!r}")
        if self.device not in _DEVICES:
            raise ValueError(f"device must be one of {_DEVICES}, got {self.device!r}")

    def _torch_device(self) -> torch.device:
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(str(self.device))

    # ------------------------------------------------------------------ state

    def _is_fitted(self) -> bool:
        return hasattr(self, "classes_")

    def _initialise(self, n_features: int, feature_names: tuple[Hashable, ...] | None) -> None:
        """Empty learned state for spectra of ``n_features`` points."""
        self._validate_params()
        if n_features < 1:
            raise ValueError("spectra must have at least one point")
        self.n_features_in_ = n_features
        self.feature_names_in_ = feature_names
        self.classes_: list[Hashable] = []
        self.training_spectra_ = np.zeros((0, n_features), dtype=np.float32)
        self.training_codes_ = np.zeros(0, dtype=np.int64)
        self.pending_spectra_: list[FloatMatrix] = []
        self.pending_codes_: list[int] = []
        self.network_: SpectrumImageNet | None = None
        self.architecture_: dict[str, Any] = {}
        self.history_: list[dict[str, float]] = []
        self.best_epoch_ = 0
        self.n_epochs_ = 0
        self.stale_ = False

    # ------------------------------------------------------------------ inputs

    def _code(self, label: Hashable) -> int:
        """Class position of ``label``, appending a new class to ``classes_``."""
        if isinstance(label, np.generic):
            label = label.item()  # NumPy scalars become the equal Python value
        try:
            return self.classes_.index(label)
        except ValueError:
            self.classes_.append(label)
            return len(self.classes_) - 1

    def _encode_images(self, matrix: FloatMatrix) -> FloatMatrix:
        """The network's input for ``matrix``: ``(n, channels, size, size)`` float32.

        The training set's images are all held in memory: 16 KB per spectrum
        and channel at 64 px.
        """
        size = int(self.architecture_.get("image_size", self.image_size))
        encoding = str(self.architecture_.get("encoding", self.encoding))
        inner = float(self.architecture_.get("inner_radius", self.inner_radius))
        channels = []
        if encoding in ("polar", "polar+gasf"):
            channels.append(polar_images(matrix, size=size, inner_radius=inner))
        if encoding in ("gasf", "polar+gasf"):
            channels.append(gramian_field(matrix, size))
        return np.stack(channels, axis=1)

    # ------------------------------------------------------------------ learning

    def fit(self, X: npt.ArrayLike, y: Iterable[Hashable]) -> PolarCNN:
        """Train from scratch on spectra ``X`` (rows) and labels ``y`` (plus ``n_synthetic`` per class)."""
        self._validate_params()
        matrix = self._as_matrix(X, check_width=False)
        labels = list(y)
        if len(labels) != matrix.shape[0]:
            raise ValueError(f"{matrix.shape[0]} spectra but {len(labels)} labels")
        if matrix.shape[0] == 0:
            raise ValueError("cannot fit on no spectra")
        self._initialise(matrix.shape[1], None)
        codes = np.array([self._code(label) for label in labels], dtype=np.int64)
        self.training_spectra_ = matrix.copy()
        self.training_codes_ = codes
        self._train()
        return self

    def learn_one(self, x: Mapping[Hashable, float] | npt.ArrayLike, y: Hashable) -> None:
        """Add one spectrum ``x`` of class ``y`` to the training rows; the network retrains lazily.

        See the class notes: the next prediction (or :meth:`refit`) retrains
        from scratch on every row learned.
        """
        row, names = self._row(x)
        if not self._is_fitted():
            self._initialise(row.shape[1], names)
        self.pending_spectra_.append(row)
        self.pending_codes_.append(self._code(y))
        self.stale_ = True

    def refit(self) -> PolarCNN:
        """Retrain now on every row learned, if any arrived since the last training."""
        if self._is_fitted() and self.stale_:
            if self.pending_spectra_:
                self.training_spectra_ = np.concatenate([self.training_spectra_, *self.pending_spectra_])
                self.training_codes_ = np.concatenate(
                    [self.training_codes_, np.asarray(self.pending_codes_, dtype=np.int64)]
                )
                self.pending_spectra_, self.pending_codes_ = [], []
            self._train()
        return self

    def _training_set(self) -> tuple[FloatMatrix, IntArray]:
        """The learned rows, plus ``n_synthetic`` mixtures per class when asked for."""
        X, codes = self.training_spectra_, self.training_codes_
        if int(self.n_synthetic) > 0:
            Xs, ys = synthesize(X, codes.tolist(), n_per_class=int(self.n_synthetic), seed=int(self.seed))
            X = np.concatenate([X, Xs])
            codes = np.concatenate([codes, np.asarray([int(c) for c in ys], dtype=np.int64)])
        return X, codes

    def _split(self, codes: IntArray, rng: np.random.Generator) -> tuple[IntArray, IntArray]:
        """Stratified (train, validation) row positions; classes of one row stay in training."""
        train, held = [], []
        for code in np.unique(codes):
            members = rng.permutation(np.flatnonzero(codes == code))
            n_held = min(members.size - 1, round(float(self.validation_fraction) * members.size))
            held.append(members[: max(n_held, 0)])
            train.append(members[max(n_held, 0) :])
        return np.sort(np.concatenate(train)), np.sort(np.concatenate(held))

    def _train(self) -> None:
        """Train a fresh network on the learned rows (early stopping, class-balanced batches)."""
        self._validate_params()
        seed = int(self.seed)
        rng = np.random.default_rng([seed, 7])
        X, codes = self._training_set()
        train_rows, valid_rows = self._split(codes, rng)
        device = self._torch_device()
        self.architecture_ = {
            "encoding": str(self.encoding),
            "image_size": int(self.image_size),
            "inner_radius": float(self.inner_radius),
            "in_channels": 2 if self.encoding == "polar+gasf" else 1,
            "coordinates": True,
            "n_classes": len(self.classes_),
            "width": int(self.width),
            "depth": int(self.depth),
            "dropout": float(self.dropout),
        }
        images = torch.from_numpy(self._encode_images(X))
        targets = torch.from_numpy(codes)
        counts = np.bincount(codes[train_rows], minlength=len(self.classes_)).astype(np.float64)
        row_weights = torch.from_numpy(1.0 / counts[codes[train_rows]])
        history: list[dict[str, float]] = []
        forked = [] if device.type != "cuda" else [device.index or torch.cuda.current_device()]
        with _torch_session(self.n_threads, device=device), torch.random.fork_rng(devices=forked):
            torch.manual_seed(seed)
            generator = torch.Generator().manual_seed(seed)
            network = self._build_network().to(device)
            optimiser = torch.optim.AdamW(
                network.parameters(), lr=float(self.learning_rate), weight_decay=float(self.weight_decay)
            )
            loss_function = nn.CrossEntropyLoss()
            train_index = torch.from_numpy(train_rows)
            valid_images = images[torch.from_numpy(valid_rows)].to(device)
            valid_targets = targets[torch.from_numpy(valid_rows)].to(device)
            best_loss, best_epoch, best_state = math.inf, 0, copy.deepcopy(network.state_dict())
            batch = int(self.batch_size)
            for epoch in range(1, int(self.max_epochs) + 1):
                network.train()
                n_draws = max(train_rows.size, MIN_STEPS_PER_EPOCH * batch)
                draws = torch.multinomial(row_weights, n_draws, replacement=True, generator=generator)
                order = train_index[draws]
                total, seen = 0.0, 0
                for start in range(0, order.numel(), batch):
                    rows = order[start : start + batch]
                    if rows.numel() == 1:
                        rows = rows.repeat(2)  # batch statistics need two images
                    inputs, wanted = images[rows].to(device), targets[rows].to(device)
                    optimiser.zero_grad(set_to_none=True)
                    loss = loss_function(network(inputs), wanted)
                    loss.backward()
                    optimiser.step()
                    total += float(loss.detach()) * rows.numel()
                    seen += rows.numel()
                record = {"epoch": float(epoch), "train_loss": total / max(seen, 1)}
                if valid_rows.size:
                    valid_loss, valid_accuracy = self._evaluate(network, valid_images, valid_targets)
                    record.update(valid_loss=valid_loss, valid_accuracy=valid_accuracy)
                    if valid_loss < best_loss * (1.0 - MIN_IMPROVEMENT):
                        best_loss, best_epoch = valid_loss, epoch
                        best_state = copy.deepcopy(network.state_dict())
                else:
                    record.update(valid_loss=math.nan, valid_accuracy=math.nan)
                    best_epoch, best_state = epoch, network.state_dict()
                history.append(record)
                if valid_rows.size and epoch - best_epoch >= int(self.patience):
                    break
            network.load_state_dict(best_state)
            network.eval()
        self.network_ = network
        self.history_ = history
        self.best_epoch_ = best_epoch
        self.n_epochs_ = len(history)
        self.stale_ = False

    def _build_network(self) -> SpectrumImageNet:
        arch = self.architecture_
        return SpectrumImageNet(
            in_channels=int(arch["in_channels"]),
            n_classes=int(arch["n_classes"]),
            width=int(arch["width"]),
            depth=int(arch["depth"]),
            dropout=float(arch["dropout"]),
            coordinates=bool(arch["coordinates"]),
        )

    @staticmethod
    def _evaluate(network: nn.Module, images: torch.Tensor, targets: torch.Tensor) -> tuple[float, float]:
        """Mean cross-entropy and accuracy of ``network`` on a validation set (eval mode)."""
        network.eval()
        with torch.inference_mode():
            logits = torch.cat(
                [network(images[i : i + PREDICT_BATCH]) for i in range(0, len(images), PREDICT_BATCH)]
            )
            loss = float(nn.functional.cross_entropy(logits, targets))
            accuracy = float((logits.argmax(dim=1) == targets).float().mean())
        return loss, accuracy

    # ------------------------------------------------------------------ prediction

    def predict_proba(self, X: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Softmax probability of each class in ``classes_``: ``(n, n_classes)``, rows sum to 1."""
        if not self._is_fitted() or not (self.training_codes_.size or self.pending_codes_):
            raise NotFittedError("this PolarCNN has learned nothing yet: call fit or learn_one first")
        matrix = self._as_matrix(X)
        self.refit()
        network = self.network_
        assert network is not None
        device = self._torch_device()
        proba = np.empty((matrix.shape[0], len(self.classes_)), dtype=np.float64)
        # A few spectra are too little work to share: extra threads would only wait on each other.
        threads = self.n_threads
        if threads is not None and matrix.shape[0] <= SINGLE_THREAD_ROWS:
            threads = 1
        with _torch_session(threads, device=device), torch.inference_mode():
            if next(network.parameters()).device != device:
                network.to(device)
            network.eval()
            for start in range(0, matrix.shape[0], PREDICT_BATCH):
                chunk = matrix[start : start + PREDICT_BATCH]
                logits = network(torch.from_numpy(self._encode_images(chunk)).to(device))
                proba[start : start + chunk.shape[0]] = torch.softmax(logits.double(), dim=1).cpu().numpy()
        return proba

    def predict(self, X: npt.ArrayLike) -> npt.NDArray[np.object_]:
        """The most probable class for each spectrum."""
        proba = self.predict_proba(X)
        return self._labels(proba)

    # ------------------------------------------------------------------ persistence

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        network = state.get("network_")
        if network is not None:
            state["network_"] = {k: v.detach().cpu().clone() for k, v in network.state_dict().items()}
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        weights = state.get("network_")
        self.__dict__.update(state)
        if weights is not None:
            network = self._build_network()
            network.load_state_dict(weights)
            network.eval()
            self.network_ = network

    def save(self, path: str | Path) -> None:
        """Write a checkpoint (parameters, classes, training rows, weights) to ``path`` atomically.

        It is a :func:`torch.save` file that :meth:`load` reads with
        ``weights_only=True``, so it holds only tensors and plain values:
        labels (and dict point names) must be ``str``, ``int``, ``float``,
        ``bool`` or tuples of them. Rows still waiting for a retrain are saved
        with the network they have not yet changed; the loaded model retrains
        when it is next asked to predict, as this one would.
        """
        learned: dict[str, Any] = {}
        if self._is_fitted():
            for label in [*self.classes_, *(self.feature_names_in_ or ())]:
                _check_plain(label)
            spectra = np.concatenate([self.training_spectra_, *self.pending_spectra_])
            codes = np.concatenate([self.training_codes_, np.asarray(self.pending_codes_, dtype=np.int64)])
            learned = {
                "n_features_in_": self.n_features_in_,
                "feature_names_in_": self.feature_names_in_,
                "classes_": list(self.classes_),
                "training_spectra_": torch.from_numpy(spectra),
                "training_codes_": torch.from_numpy(codes),
                "stale_": bool(self.stale_),
                "architecture_": dict(self.architecture_),
                "history_": [dict(record) for record in self.history_],
                "best_epoch_": self.best_epoch_,
                "n_epochs_": self.n_epochs_,
                "network_": None
                if self.network_ is None
                else {k: v.detach().cpu().clone() for k, v in self.network_.state_dict().items()},
            }
        buffer = io.BytesIO()
        torch.save(
            {
                "format": CHECKPOINT_FORMAT,
                "version": CHECKPOINT_VERSION,
                "params": self.get_params(),
                "learned": learned,
            },
            buffer,
        )
        atomic_write_bytes(path, buffer.getvalue())

    @classmethod
    def load(cls, path: str | Path) -> PolarCNN:
        """A model read back from a checkpoint written by :meth:`save` (on the CPU)."""
        with Path(path).open("rb") as handle:
            checkpoint = torch.load(handle, map_location="cpu", weights_only=True)
        if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"{path} is not a PolarCNN checkpoint")
        if checkpoint.get("version") != CHECKPOINT_VERSION:
            raise ValueError(f"{path}: checkpoint version {checkpoint.get('version')} is not supported")
        model = cls(**checkpoint["params"])
        learned = checkpoint["learned"]
        if learned:
            model._initialise(int(learned["n_features_in_"]), learned["feature_names_in_"])
            model.classes_ = list(learned["classes_"])
            model.training_spectra_ = learned["training_spectra_"].numpy().copy()
            model.training_codes_ = learned["training_codes_"].numpy().copy()
            model.architecture_ = dict(learned["architecture_"])
            model.history_ = list(learned["history_"])
            model.best_epoch_ = int(learned["best_epoch_"])
            model.n_epochs_ = int(learned["n_epochs_"])
            model.stale_ = bool(learned["stale_"])
            if learned["network_"] is not None:
                network = model._build_network()
                network.load_state_dict(learned["network_"])
                network.eval()
                model.network_ = network
        return model


def _check_plain(label: object) -> None:
    """Raise ValueError for a label that a ``weights_only`` checkpoint cannot hold."""
    if isinstance(label, tuple):
        for part in label:
            _check_plain(part)
        return
    if type(label) not in (str, int, float, bool):
        raise ValueError(f"label {label!r} ({type(label).__name__}) cannot be saved: use str or int labels")
