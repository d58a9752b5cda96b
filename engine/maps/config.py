"""How a map is read and cut into particles: :class:`MapConfig`, filled by the daemon from its config."""

from __future__ import annotations

from dataclasses import dataclass

from engine.io.envi import MAX_ENVI_PIXELS

__all__ = ["MapConfig"]


@dataclass(frozen=True)
class MapConfig:
    """Settings of :func:`engine.maps.identify_map`; every field has a keyword default.

    Background (the filter's pixels) is recognised in two ways. A pixel whose signal, the
    standard deviation of its absorbance over the bands, is below ``background_snr`` times its
    own noise level, or below ``background_fraction`` of the map's bright level (the 99th
    percentile of the signal over the sampled pixels), is background. And the mean spectrum of
    the dimmest ``background_quantile`` of the sampled pixels is the map's learned filter
    spectrum: when it carries a spectrum of its own (a polycarbonate or cellulose filter, not
    just noise), any pixel whose preprocessed spectrum correlates with it at Pearson r of
    ``background_r`` or more is background too.

    >>> MapConfig(pixel_size_um=25.0).block_pixels
    16384
    """

    #: A map of more pixels than this is refused (the streaming limit; a map is never held whole).
    max_pixels: int = MAX_ENVI_PIXELS
    #: Pixels read, preprocessed and identified per block (whole lines at a time).
    block_pixels: int = 16_384
    #: The pixel size in micrometres when the header gives none (an inbox profile's); ``None``: sizes in
    #: pixels only.
    pixel_size_um: float | None = None
    #: Regions of fewer pixels than this are not reported as particles (their pixels stay -1).
    min_particle_pixels: int = 1
    #: Signal below this many times a pixel's noise level: background.
    background_snr: float = 5.0
    #: Signal below this fraction of the map's bright level: background.
    background_fraction: float = 0.05
    #: Pearson r to the learned filter spectrum from which a pixel is background; ``None``: no such test.
    background_r: float | None = 0.9
    #: The dimmest share of the sampled pixels whose mean is the learned filter spectrum.
    background_quantile: float = 0.2
    #: Pixels sampled, evenly over the map, to resolve the cube's unit and learn its background.
    sample_pixels: int = 2_048

    def __post_init__(self) -> None:
        if self.max_pixels < 1 or self.block_pixels < 1 or self.sample_pixels < 1:
            raise ValueError("max_pixels, block_pixels and sample_pixels must be positive")
        if self.pixel_size_um is not None and not self.pixel_size_um > 0:
            raise ValueError(f"pixel_size_um must be positive, got {self.pixel_size_um!r}")
        if self.min_particle_pixels < 1:
            raise ValueError(f"min_particle_pixels must be at least 1, got {self.min_particle_pixels!r}")
        if not 0.0 < self.background_quantile <= 1.0:
            raise ValueError(f"background_quantile must be in (0, 1], got {self.background_quantile!r}")
