"""Draw a map's particles for the console: each particle filled with its polymer's colour and outlined.

The figure is drawn on matplotlib's Agg canvas directly (no pyplot, no global
backend), so the daemon may draw from any thread. Particles the model named
are coloured by label, the others (unknown, low quality) grey; the
background is left white. The axes are in micrometres when the map has a
pixel size, else in pixels. The PNG is written atomically.
"""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import numpy.typing as npt
from skimage.segmentation import find_boundaries

from engine.core.storage import atomic_write_bytes
from engine.maps.particles import MapIdentification

__all__ = ["particle_colours", "render_map"]

#: The colour of particles without a label.
UNLABELLED = (0.62, 0.62, 0.62)

#: Largest side of the figure, inches; the map keeps its aspect.
FIGURE_INCHES = 8.0


def particle_colours(identification: MapIdentification) -> dict[str, tuple[float, float, float]]:
    """One colour per label of the identified particles, in a stable order (labels sorted)."""
    from matplotlib import colormaps

    labels = sorted({p.label for p in identification.particles if p.label is not None})
    palette = colormaps["tab20"]
    return {label: tuple(float(c) for c in palette(i % 20)[:3]) for i, label in enumerate(labels)}  # type: ignore[misc]


def _rgb(
    identification: MapIdentification, colours: dict[str, tuple[float, float, float]]
) -> npt.NDArray[np.float64]:
    image = identification.particle_image
    table = np.ones((len(identification.particles) + 1, 3))  # the last row: background, white
    for particle in identification.particles:
        table[particle.index] = colours.get(particle.label or "", UNLABELLED)
    rgb = table[np.where(image >= 0, image, len(identification.particles))]
    labelled = np.where(image >= 0, image + 1, 0)
    edges = find_boundaries(labelled, mode="inner", background=0)
    # A particle that is all edge (a fibre one or two pixels wide) keeps its colour: outlined, it was black.
    n = len(identification.particles) + 1
    all_edge = np.bincount(labelled[edges], minlength=n) == np.bincount(labelled.ravel(), minlength=n)
    rgb[edges & ~all_edge[labelled]] = 0.0
    return rgb


def render_map(identification: MapIdentification, path: Path) -> None:
    """Write a PNG of ``identification``'s particles to ``path``: outlined, coloured by polymer."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    colours = particle_colours(identification)
    lines, samples = identification.particle_image.shape
    size = identification.pixel_size_um
    scale = size if size is not None else 1.0
    unit = "µm" if size is not None else "pixels"
    aspect = lines / max(samples, 1)
    width = FIGURE_INCHES if aspect <= 1 else FIGURE_INCHES / aspect
    fig = Figure(figsize=(width + 2.2, max(2.5, width * aspect + 0.8)), dpi=100)
    FigureCanvasAgg(fig)
    ax = fig.add_subplot(1, 1, 1)
    ax.imshow(
        _rgb(identification, colours),
        extent=(0.0, samples * scale, lines * scale, 0.0),
        interpolation="nearest",
    )
    ax.set_xlabel(f"x ({unit})")
    ax.set_ylabel(f"y ({unit})")
    counts: dict[str, int] = {}
    for particle in identification.particles:
        key = particle.label or "unidentified"
        counts[key] = counts.get(key, 0) + 1
    handles = [Patch(color=colours[label], label=f"{label} ({counts[label]})") for label in colours]
    if "unidentified" in counts:
        handles.append(Patch(color=UNLABELLED, label=f"unidentified ({counts['unidentified']})"))
    if handles:
        ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), fontsize=8, frameon=False)
    ax.set_title(f"{len(identification.particles)} particles", fontsize=10)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    atomic_write_bytes(path, buffer.getvalue())
