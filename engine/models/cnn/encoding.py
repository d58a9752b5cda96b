"""The images a spectrum is drawn as, for the CNN: polar curves and Gramian angular fields.

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
:func:`encode_images` stacks the encodings an ``encoding`` name asks for as
the channels of the network's input.
"""

from __future__ import annotations

import numpy as np
import numpy.typing as npt

from engine.models.base import check_integer, finite_matrix

__all__ = ["ENCODINGS", "encode_images", "gramian_field", "polar_images"]

FloatMatrix = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]

#: Curve samples per pixel of length when a segment is rasterised.
SAMPLES_PER_PIXEL = 2.0
#: Samples rasterised per chunk of rows (bounds the temporary arrays to some tens of MB).
RASTER_CHUNK_SAMPLES = 1 << 21

#: The encodings on offer: each channel of the network's input is one image.
ENCODINGS = ("polar", "gasf", "polar+gasf")


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
    check_integer("size", size, at_least=2)
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
    check_integer("size", size, positive=True)
    n, d = matrix.shape
    if d == 0:
        return np.zeros((n, int(size), int(size)), dtype=np.float32)
    reduced = matrix.astype(np.float64) @ _paa_matrix(d, int(size)).T
    x = np.clip(2.0 * _min_max(reduced.astype(np.float32)) - 1.0, -1.0, 1.0)
    s = np.sqrt(1.0 - x * x)
    field = x[:, :, np.newaxis] * x[:, np.newaxis, :] - s[:, :, np.newaxis] * s[:, np.newaxis, :]
    return field.astype(np.float32)


def encode_images(matrix: FloatMatrix, *, encoding: str, size: int, inner_radius: float) -> FloatMatrix:
    """The images ``encoding`` names for the rows of ``matrix``: ``(n, channels, size, size)`` float32.

    ``"polar"`` and ``"gasf"`` give one channel, ``"polar+gasf"`` both
    (polar first).

    >>> import numpy as np
    >>> encode_images(np.eye(3, 8), encoding="polar+gasf", size=6, inner_radius=0.15).shape
    (3, 2, 6, 6)
    """
    channels = []
    if encoding in ("polar", "polar+gasf"):
        channels.append(polar_images(matrix, size=size, inner_radius=inner_radius))
    if encoding in ("gasf", "polar+gasf"):
        channels.append(gramian_field(matrix, size))
    return np.stack(channels, axis=1)
