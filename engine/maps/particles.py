"""What identifying a map answers: one :class:`Particle` per region, and :class:`MapIdentification`."""

from __future__ import annotations

from dataclasses import dataclass, field, fields
from typing import Any

import numpy as np
import numpy.typing as npt

from engine.core.spectrum import Spectrum
from engine.models.result import Hit

__all__ = ["MapIdentification", "Particle"]


@dataclass(frozen=True)
class Particle:
    """One particle: a connected region of pixels with one identification, and its mean spectrum's answer.

    ``status``, ``label``, ``confidence``, ``hits`` and ``aging`` are the served model's answer for the
    particle's mean spectrum. Sizes in micrometres are ``None`` when the map has no pixel size; the
    ``_px`` sizes are always set. Feret diameters are measured over the pixels' squares.
    ``x`` is the column (sample) axis and ``y`` the line axis; ``bbox`` is
    ``(min_line, min_sample, max_line, max_sample)``, the maxima inclusive.
    """

    index: int
    status: str
    label: str | None
    material: str | None
    family: str | None
    confidence: float
    n_pixels: int
    area_um2: float | None
    feret_max_um: float | None
    feret_min_um: float | None
    x_um: float | None
    y_um: float | None
    area_px: float
    feret_max_px: float
    feret_min_px: float
    x_px: float
    y_px: float
    hits: list[Hit] = field(default_factory=list)
    aging: dict[str, Any] = field(default_factory=dict)
    bbox: tuple[int, int, int, int] = (0, 0, 0, 0)
    #: What the region's pixels were identified as (None: unknown pixels); ``label`` is the mean spectrum's.
    pixel_label: str | None = None
    #: The mean spectrum (None where the region gave no usable spectrum), kept for an analyst to
    #: decide the particle: not part of :meth:`as_dict`.
    spectrum: Spectrum | None = field(default=None, compare=False, repr=False)

    def as_dict(self) -> dict[str, Any]:
        """The fields as a JSON-ready dict, hits as dicts and ``bbox`` as a list (the spectrum left out)."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "spectrum"}
        out["hits"] = [{f.name: getattr(h, f.name) for f in fields(h)} for h in self.hits]
        out["bbox"] = list(self.bbox)
        out["aging"] = dict(self.aging)
        return out


@dataclass
class MapIdentification:
    """A whole map's answer: its particles, the pixel image that places them, and the counts of the rest.

    ``particle_image[line, sample]`` is ``-1`` for background and unassigned pixels and ``k`` for the
    pixels of the particle whose ``index`` is ``k``. ``pixel_size_source`` is ``"header"``,
    ``"profile"`` (:attr:`MapConfig.pixel_size_um`) or ``"none"``.
    """

    source: str
    lines: int
    samples: int
    bands: int
    pixel_size_um: float | None
    pixel_size_source: str
    n_pixels: int
    n_background: int
    n_unknown_pixels: int
    n_low_quality_pixels: int
    particles: list[Particle]
    particle_image: npt.NDArray[np.int32]
    model_version: str
    metadata: dict[str, Any] = field(default_factory=dict)

    def summary(self) -> dict[str, Any]:
        """Everything but the image, JSON-ready: counts, sizes, particles as dicts, counts by label."""
        by_label: dict[str, int] = {}
        for particle in self.particles:
            if particle.status == "known" and particle.label is not None:
                by_label[particle.label] = by_label.get(particle.label, 0) + 1
        return {
            "source": self.source,
            "lines": self.lines,
            "samples": self.samples,
            "bands": self.bands,
            "pixel_size_um": self.pixel_size_um,
            "pixel_size_source": self.pixel_size_source,
            "n_pixels": self.n_pixels,
            "n_background": self.n_background,
            "n_unknown_pixels": self.n_unknown_pixels,
            "n_low_quality_pixels": self.n_low_quality_pixels,
            "n_particles": len(self.particles),
            "particles_by_label": dict(sorted(by_label.items())),
            "model_version": self.model_version,
            "metadata": dict(self.metadata),
            "particles": [p.as_dict() for p in self.particles],
        }
