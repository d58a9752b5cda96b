"""Imaging maps to particles: a memory-mapped cube (an FTIR ENVI image, or a Renishaw WiRE Raman map) read
in blocks, its pixels identified in batch, the filter's pixels set apart as background, connected regions
of one identification measured as particles (area, Feret diameters, centroid) and each particle's mean
spectrum classified by the served model.

``identify_map(model, path, config=MapConfig())`` answers a :class:`MapIdentification`; ``is_map(path)``
tells whether a file holds a map; ``render_map`` draws the particles for the console.
"""

from __future__ import annotations

from engine.maps.config import MapConfig
from engine.maps.identify import identify_map, is_map
from engine.maps.particles import MapIdentification, Particle
from engine.maps.render import render_map

__all__ = ["MapConfig", "MapIdentification", "Particle", "identify_map", "is_map", "render_map"]
