"""Particles from a map of pixel identifications: connected regions of one identification, and their sizes.

Pixels that touch (sides or corners) and share an identification are one
region (:func:`skimage.measure.label` on the code image), so two particles
of different polymers that touch are two regions. Sizes are measured over
the pixels' squares, each pixel one ``pixel_x`` by ``pixel_y`` rectangle:
the area is the pixel count times a pixel's area, and the Feret (caliper)
diameters are those of the convex hull of the pixels' corners. The largest
is the longest distance between two hull vertices; the smallest, the width,
is found with one side of the calipers flush with a hull edge (rotating
calipers), so both are exact for the pixelated shape.

>>> rectangle = np.argwhere(np.ones((10, 20), dtype=bool))
>>> [round(d, 2) for d in feret_diameters(rectangle)]
[22.36, 10.0]
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import numpy.typing as npt
from scipy.spatial import ConvexHull, QhullError
from skimage.measure import label as label_regions
from skimage.measure import regionprops

__all__ = ["Region", "feret_diameters", "regions"]

_CORNERS = np.array([[0.0, 0.0], [0.0, 1.0], [1.0, 0.0], [1.0, 1.0]])


@dataclass(frozen=True)
class Region:
    """One connected region of one code: its label in the region image, its pixels and their geometry.

    Sizes are in the units of the pixel size given to :func:`regions` (pixels when 1 x 1);
    ``centroid`` is (line, sample) in pixel indices; ``bbox`` is (min_line, min_sample, max_line,
    max_sample), inclusive.
    """

    label: int
    code: int
    n_pixels: int
    centroid: tuple[float, float]
    bbox: tuple[int, int, int, int]
    feret_max_px: float
    feret_min_px: float
    feret_max: float
    feret_min: float


def _outline(coords: npt.NDArray[np.integer]) -> npt.NDArray[np.float64]:
    """The centres that can be hull vertices: the hull's vertices (all centres when collinear)."""
    points = coords.astype(np.float64)
    if len(points) < 3:
        return points
    try:
        return points[ConvexHull(points).vertices]
    except QhullError:  # collinear centres: a straight line of pixels
        return points


def feret_diameters(
    coords: npt.NDArray[np.integer], *, pixel_x: float = 1.0, pixel_y: float = 1.0
) -> tuple[float, float]:
    """The (largest, smallest) Feret diameter of pixels at ``coords`` ((line, sample) rows).

    Each pixel is a ``pixel_x`` (along samples) by ``pixel_y`` (along lines) rectangle. The hull of
    the pixels' corners is the hull of the corners of the centres' hull vertices.
    """
    centres = _outline(coords)
    corners = (centres[:, None, ::-1] + _CORNERS[None, :, ::-1]).reshape(-1, 2)
    points = corners * np.array([pixel_x, pixel_y])
    try:
        hull = points[ConvexHull(points).vertices]
    except QhullError:  # cannot happen for pixel squares; kept for degenerate pixel sizes
        span = points.max(axis=0) - points.min(axis=0)
        return float(np.hypot(*span)), float(span.min())
    gaps = hull[:, None, :] - hull[None, :, :]
    largest = float(np.sqrt((gaps**2).sum(axis=2)).max())
    edges = np.roll(hull, -1, axis=0) - hull
    lengths = np.hypot(edges[:, 0], edges[:, 1])
    normals = np.stack([-edges[:, 1], edges[:, 0]], axis=1) / lengths[:, None]
    heights = (hull - hull[0]) @ normals.T  # every vertex's distance along each edge's normal
    smallest = float((heights.max(axis=0) - heights.min(axis=0)).min())
    return largest, smallest


def regions(
    codes: npt.NDArray[np.int32],
    *,
    pixel_x: float = 1.0,
    pixel_y: float = 1.0,
    min_pixels: int = 1,
) -> tuple[npt.NDArray[np.int32], list[Region]]:
    """The regions of ``codes`` (an image of identifications; negative codes are no particle).

    Returns the region image (``-1`` outside any region kept, ``k`` inside ``regions[k]``) and the
    regions in raster order of their first pixel. Regions of fewer than ``min_pixels`` pixels are
    dropped.
    """
    labelled = label_regions(np.where(codes >= 0, codes + 1, 0), background=0, connectivity=2)
    image = np.full(codes.shape, -1, dtype=np.int32)
    found: list[Region] = []
    for props in regionprops(labelled):
        coords = props.coords
        if len(coords) < min_pixels:
            continue
        index = len(found)
        image[coords[:, 0], coords[:, 1]] = index
        feret_max_px, feret_min_px = feret_diameters(coords)
        if pixel_x == 1.0 and pixel_y == 1.0:
            feret_max, feret_min = feret_max_px, feret_min_px
        else:
            feret_max, feret_min = feret_diameters(coords, pixel_x=pixel_x, pixel_y=pixel_y)
        min_line, min_sample, max_line, max_sample = props.bbox
        centroid = coords.mean(axis=0)
        found.append(
            Region(
                label=index,
                code=int(codes[coords[0, 0], coords[0, 1]]),
                n_pixels=len(coords),
                centroid=(float(centroid[0]), float(centroid[1])),
                bbox=(int(min_line), int(min_sample), int(max_line) - 1, int(max_sample) - 1),
                feret_max_px=feret_max_px,
                feret_min_px=feret_min_px,
                feret_max=feret_max,
                feret_min=feret_min,
            )
        )
    return image, found
