"""Identify a map: blocks of pixels in batch, background apart, particles segmented and classified.

The steps of :func:`identify_map`:

1. The cube is opened memory-mapped (:mod:`engine.maps.cube`); nothing larger than a block is
   ever held.
2. Its conventions are settled once: the y unit and technique as the file states them, or as
   :func:`engine.core.conventions.resolve` infers them from the brightest of an even sample of
   pixels (``config.sample_pixels``, read a line at a time; an inbox ``profile`` overrides
   both). The model is routed once by technique and range, as
   :meth:`IdentificationModel.classify` routes a spectrum.
3. The background model is learned from the sample (:mod:`engine.maps.background`).
4. Block by block, pixels with a NaN or infinite value are ``low_quality``, the filter's pixels
   background, and the rest are identified in batch (:mod:`engine.maps.pixelwise`).
5. Connected regions of one identification become particles (:mod:`engine.maps.segment`).
6. A second pass over the blocks sums each particle's pixels; each particle's mean spectrum is
   classified by the served model, with its evidence hits and aging indices.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt

from engine.core.conventions import AcquisitionProfile, resolve
from engine.core.spectrum import Spectrum, SpectrumError
from engine.maps.background import Background, learn_background, signal_and_noise
from engine.maps.config import MapConfig
from engine.maps.cube import Cube, map_shape, open_cube
from engine.maps.particles import MapIdentification, Particle
from engine.maps.pixels import PixelPreprocessor
from engine.maps.pixelwise import UNKNOWN, PixelIdentifier
from engine.maps.segment import Region, regions
from engine.models.result import Result
from engine.models.served import IdentificationModel

__all__ = ["BACKGROUND", "LOW_QUALITY", "UNKNOWN", "identify_map", "is_map"]

logger = logging.getLogger(__name__)

#: A pixel larger than this (µm) is no imaging microscope's: most likely a size in the wrong unit.
PLAUSIBLE_PIXEL_UM = 1000.0

#: Pixel codes besides the class indices: the filter, and pixels that cannot be identified.
BACKGROUND = -1
LOW_QUALITY = -3

#: Sampled pixels (the brightest) whose units are inferred when the file does not state one.
UNIT_SAMPLE = 16

#: Particles' mean spectra classified per call of the model.
CLASSIFY_BATCH = 512


def is_map(path: Path) -> bool:
    """Whether ``path`` holds a map of more than one line and sample: an ENVI pair, an Open Specy map
    zip or a WDF Raman map (a line scan, a single spectrum or a series is not).

    Only the header (a WDF file's header blocks) is read; a file that is not one (or cannot be
    read) is not a map.
    """
    shape = map_shape(path)
    return shape is not None and shape[0] > 1 and shape[1] > 1


def identify_map(
    model: IdentificationModel,
    path: Path,
    *,
    config: MapConfig | None = None,
    profile: AcquisitionProfile | None = None,
) -> MapIdentification:
    """Identify every pixel of the map at ``path`` and cut it into particles.

    ``profile`` states what an inbox knows (technique, y unit, range), as for any spectrum.
    Raises :class:`SpectrumError` for a map that cannot be read: header and data that disagree
    (``truncated``, ``length_mismatch``), a map over ``config.max_pixels``, no wavenumbers.
    """
    config = config or MapConfig()
    window = profile.range if profile is not None else None
    with open_cube(Path(path), max_pixels=config.max_pixels, window=window) as cube:
        return _MapRun(model, cube, config, profile, source=str(path)).run()


class _MapRun:
    """One map's identification; the steps share the cube, the conventions and the routed model."""

    def __init__(
        self,
        model: IdentificationModel,
        cube: Cube,
        config: MapConfig,
        profile: AcquisitionProfile | None,
        *,
        source: str,
    ) -> None:
        self.model = model
        self.cube = cube
        self.config = config
        self.profile = profile
        self.source = source
        self.metadata: dict[str, Any] = cube.metadata
        self.spectrum: Spectrum | None = None
        #: Pixels with a NaN or infinite value (``low_quality``), counted block by block.
        self.n_non_finite = 0

    # -- conventions and routing --------------------------------------------------------------

    def _conventions(self, sample: npt.NDArray[np.float32]) -> Spectrum | None:
        """A resolved spectrum standing for every pixel (its unit, technique and axis); None if none is."""
        y_unit, technique = self.cube.y_unit, self.cube.technique
        spread = np.where(np.isfinite(sample).all(axis=1), np.ptp(np.nan_to_num(sample), axis=1), -1.0)
        resolved = []
        for row in np.argsort(-spread, kind="stable")[:UNIT_SAMPLE]:
            if spread[row] < 0:
                break
            try:
                s = Spectrum.create(self.cube.wavenumbers, sample[row], y_unit=y_unit, technique=technique)
            except SpectrumError:
                continue
            resolved.append(resolve(s, profile=self.profile))
        if not resolved:
            return None
        unit, _ = Counter(s.y_unit for s in resolved).most_common(1)[0]
        chosen = next(s for s in resolved if s.y_unit == unit)
        agreeing = [s for s in resolved if s.y_unit == unit]
        meta = dict(chosen.metadata)
        meta["y_unit_confidence"] = round(
            float(np.mean([s.metadata["y_unit_confidence"] for s in agreeing]))
            * len(agreeing)
            / len(resolved),
            3,
        )
        return Spectrum(chosen.wavenumbers, chosen.values, chosen.y_unit, chosen.technique, meta)

    def _route(self, spectrum: Spectrum) -> tuple[IdentificationModel | None, str]:
        """The model that identifies the pixels, and why (``full``, ``range``, ``narrow``, ``no_library``)."""
        model: IdentificationModel | None = self.model
        for _ in range(2):  # a technique's companion routes its spectra itself once more
            assert model is not None
            key = model._route(spectrum)
            kind = str(key[0])
            if kind == "full":
                return model, kind
            if kind == "range":
                return model.ranges_.get(key[1]), kind
            if kind == "narrow":
                return None, kind
            model = model.model_for(str(key[1]))
            if model is None:
                return None, "no_library"
        return None, "no_library"

    # -- the pixel pass -----------------------------------------------------------------------

    def run(self) -> MapIdentification:
        started = time.perf_counter()
        cube, config = self.cube, self.config
        sample = cube.sample(config.sample_pixels)
        spectrum = self._conventions(sample)
        if spectrum is None:
            y_unit, technique, target, route = "arbitrary", None, None, "no_spectrum"
        else:
            y_unit, technique = spectrum.y_unit, spectrum.technique
            target, route = self._route(spectrum)
            for key in ("y_unit_source", "y_unit_confidence", "technique_source", "unit_uncertain"):
                if key in spectrum.metadata:
                    self.metadata[key] = spectrum.metadata[key]
        self.metadata.update({"y_unit": y_unit, "technique": technique, "route": route})
        self.spectrum = spectrum
        served = target or self.model
        pre = PixelPreprocessor(served.pipeline, cube.wavenumbers, y_unit, technique)
        finite = sample[np.isfinite(sample).all(axis=1)]
        background = learn_background(
            pre.absorbance(finite), lambda rows: pre.features(pre.grid_rows(rows)), config
        )
        self.metadata["background"] = background.as_dict()
        identifier = PixelIdentifier(target) if target is not None else None
        codes = np.full((cube.lines, cube.samples), BACKGROUND, dtype=np.int32)
        for start, stop in cube.blocks(config.block_pixels):
            block = cube.read_lines(start, stop)
            codes[start:stop] = self._block_codes(block, pre, background, identifier, route).reshape(
                stop - start, cube.samples
            )
        pixel_time = time.perf_counter() - started
        classes = identifier.classes if identifier is not None else []
        counts = np.bincount(codes[codes >= 0], minlength=len(classes))
        self.metadata["pixels_by_label"] = {
            name: int(n) for name, n in sorted(zip(classes, counts, strict=True)) if n
        }
        result = self._particles(codes, classes, served)
        logger.info(
            "%s: %d x %d pixels identified in %.1f s, %d particles (%d unknown) in %.1f s in all",
            self.source,
            cube.lines,
            cube.samples,
            pixel_time,
            len(result.particles),
            sum(p.status == "unknown" for p in result.particles),
            time.perf_counter() - started,
        )
        return result

    def _block_codes(
        self,
        block: npt.NDArray[np.float32],
        pre: PixelPreprocessor,
        background: Background,
        identifier: PixelIdentifier | None,
        route: str,
    ) -> npt.NDArray[np.int32]:
        """The code of every pixel of a block: a class index, UNKNOWN, BACKGROUND or LOW_QUALITY."""
        out = np.full(len(block), LOW_QUALITY, dtype=np.int32)
        finite = np.flatnonzero(np.isfinite(block).all(axis=1))
        self.n_non_finite += len(block) - finite.size
        if finite.size == 0:
            return out
        absorbance = pre.absorbance(block[finite])
        signal, noise = signal_and_noise(absorbance)
        low = background.low_signal(signal, noise)
        out[finite[low]] = BACKGROUND
        rows = finite[~low]
        if rows.size == 0:
            return out
        grid = pre.grid_rows(absorbance[~low])
        measured = ~np.isnan(grid).all(axis=1)
        features = pre.features(grid[measured])
        rows = rows[measured]
        like = background.like_filter(features)
        out[rows[like]] = BACKGROUND
        rows, features = rows[~like], features[~like]
        if identifier is None:
            out[rows] = LOW_QUALITY if route in ("narrow", "no_spectrum") else UNKNOWN
            return out
        out[rows] = identifier.identify(features).codes
        return out

    # -- particles ----------------------------------------------------------------------------

    def _pixel_size(self) -> tuple[tuple[float, float] | None, str]:
        size = self.cube.pixel_size_um
        if size is not None:
            if max(size) > PLAUSIBLE_PIXEL_UM:
                warning = (
                    f"the header gives pixels of {max(size):g} µm, more than a micro-spectroscopy map has "
                    "(an ENVI 'pixel size' is in metres unless it names its units): particle sizes are "
                    "that large"
                )
                self.metadata["pixel_size_warning"] = warning
                logger.warning("%s: %s", self.source, warning)
            return size, "header"
        if self.config.pixel_size_um is not None:
            return (self.config.pixel_size_um, self.config.pixel_size_um), "profile"
        return None, "none"

    def _mean_spectra(
        self, image: npt.NDArray[np.int32], n_regions: int
    ) -> tuple[npt.NDArray[np.float64], npt.NDArray[np.int64]]:
        """Each region's summed pixels (native unit) and pixel count, from a second pass over the blocks."""
        cube = self.cube
        sums = np.zeros((n_regions, cube.wavenumbers.size), dtype=np.float64)
        counts = np.zeros(n_regions, dtype=np.int64)
        if n_regions == 0:
            return sums, counts
        busy = np.asarray((image >= 0).any(axis=1), dtype=bool)
        for start, stop in cube.blocks(self.config.block_pixels):
            if not busy[start:stop].any():
                continue
            labels = image[start:stop].ravel()
            inside = np.flatnonzero(labels >= 0)
            block = cube.read_lines(start, stop)[inside]
            order = np.argsort(labels[inside], kind="stable")
            present, first, n = np.unique(labels[inside][order], return_index=True, return_counts=True)
            sums[present] += np.add.reduceat(block[order].astype(np.float64), first, axis=0)
            counts[present] += n
        return sums, counts

    def _classify_means(
        self, means: npt.NDArray[np.float64]
    ) -> tuple[list[Result | None], list[Spectrum | None]]:
        """The served model's result for every mean spectrum and the spectrum (None where it is no
        usable spectrum)."""
        base = self.spectrum
        spectra: list[Spectrum] = []
        at: list[int] = []
        for i, mean in enumerate(means):
            try:
                s = Spectrum.create(
                    self.cube.wavenumbers,
                    mean,
                    y_unit=base.y_unit if base is not None else "arbitrary",
                    technique=base.technique if base is not None else None,
                    metadata={**(base.metadata if base is not None else {}), "particle": i},
                )
            except SpectrumError:
                continue
            spectra.append(s)
            at.append(i)
        results: list[Result | None] = [None] * len(means)
        kept: list[Spectrum | None] = [None] * len(means)
        for begin in range(0, len(spectra), CLASSIFY_BATCH):
            batch = spectra[begin : begin + CLASSIFY_BATCH]
            for i, spectrum, result in zip(
                at[begin : begin + CLASSIFY_BATCH], batch, self.model.classify(batch), strict=True
            ):
                results[i], kept[i] = result, spectrum
        return results, kept

    def _particles(
        self, codes: npt.NDArray[np.int32], classes: list[str], served: IdentificationModel
    ) -> MapIdentification:
        size, size_source = self._pixel_size()
        segmentable = np.where(codes == UNKNOWN, len(classes), codes)
        px, py = size if size is not None else (1.0, 1.0)
        image, found = regions(
            segmentable, pixel_x=px, pixel_y=py, min_pixels=self.config.min_particle_pixels
        )
        sums, counts = self._mean_spectra(image, len(found))
        results, spectra = self._classify_means(sums / np.maximum(counts, 1)[:, None])
        particles = [
            _particle(region, result, size=size, classes=classes, spectrum=spectrum)
            for region, result, spectrum in zip(found, results, spectra, strict=True)
        ]
        if size is not None and size[0] != size[1]:
            self.metadata["pixel_size_um_xy"] = [size[0], size[1]]
        self.metadata["n_non_finite_pixels"] = self.n_non_finite
        return MapIdentification(
            source=self.source,
            lines=self.cube.lines,
            samples=self.cube.samples,
            bands=self.cube.bands,
            pixel_size_um=size[0] if size is not None else None,
            pixel_size_source=size_source,
            n_pixels=self.cube.n_pixels,
            n_background=int(np.count_nonzero(codes == BACKGROUND)),
            n_unknown_pixels=int(np.count_nonzero(codes == UNKNOWN)),
            n_low_quality_pixels=int(np.count_nonzero(codes == LOW_QUALITY)),
            particles=particles,
            particle_image=image,
            model_version=served.version,
            metadata=self.metadata,
        )


def _particle(
    region: Region,
    result: Result | None,
    *,
    size: tuple[float, float] | None,
    classes: list[str],
    spectrum: Spectrum | None = None,
) -> Particle:
    """A particle from its region, its mean spectrum's result and the mean ``spectrum`` itself."""
    line, sample = region.centroid
    um = size is not None
    px, py = size if size is not None else (1.0, 1.0)
    if result is None:
        status, label, material, confidence, hits, aging = "low_quality", None, None, 0.0, [], {}
    else:
        status, label, material = result.status, result.label, result.material
        confidence, hits = float(result.confidence), list(result.hits)
        aging = dict(result.extra.get("aging") or {})
    return Particle(
        index=region.label,
        status=status,
        label=label,
        material=material,
        family=None if result is None else result.family,
        confidence=confidence,
        n_pixels=region.n_pixels,
        area_um2=region.n_pixels * px * py if um else None,
        feret_max_um=region.feret_max if um else None,
        feret_min_um=region.feret_min if um else None,
        x_um=sample * px if um else None,
        y_um=line * py if um else None,
        area_px=float(region.n_pixels),
        feret_max_px=region.feret_max_px,
        feret_min_px=region.feret_min_px,
        x_px=sample,
        y_px=line,
        hits=hits,
        aging=aging,
        bbox=region.bbox,
        pixel_label=classes[region.code] if 0 <= region.code < len(classes) else None,
        spectrum=spectrum,
    )
