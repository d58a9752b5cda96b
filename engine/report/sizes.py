"""A particle's size as its per-particle file states it (LDIR and other one-file-per-particle exports).

Readers keep a text file's ``key: value`` header lines in ``metadata["header"]`` and a few fields at the
top level. This module looks there for the particle's Feret diameters and area, by the words in the key
(``Feret max``, ``Size (µm)``, ``Diameter``, ``Width``, ``Area (µm²)``), in micrometres unless the key or
value names millimetres. Nothing is guessed: a file that states no size gives an empty dict.

>>> sizes_from_metadata({"header": {"Feret Max (um)": "152.4", "Feret Min (um)": "40,5", "Area": "4.1e3"}})
{'feret_max_um': 152.4, 'feret_min_um': 40.5, 'area_um2': 4100.0}
>>> sizes_from_metadata({"header": {"Size [mm]": "0.25"}})
{'feret_max_um': 250.0}
>>> sizes_from_metadata({"laser_wavelength_nm": 532.25, "header": {"Slit width (um)": "50"}})
{}
>>> sizes_from_metadata({"title": "particle 7", "header": {"Instrument": "8700 LDIR"}})
{}
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any, Final

__all__ = ["SIZE_FIELDS", "sizes_from_metadata"]

#: The sizes this module reads, and the words that name each (the first rule that matches a key wins).
SIZE_FIELDS: Final[tuple[tuple[str, str], ...]] = (
    ("feret_min_um", r"feret\s*_?\s*min|min(imum)?\s*_?\s*feret|width|minor\s*axis"),
    ("feret_max_um", r"feret|diameter|\bsize\b|length|major\s*axis"),
    ("area_um2", r"\barea\b"),
)

_RULES = tuple((name, re.compile(words, re.IGNORECASE)) for name, words in SIZE_FIELDS)
#: Keys that name the measurement, not the particle: a Raman file's ``laser_wavelength_nm`` is
#: no length, its ``slit width`` no width (both were read as a particle of 532 um).
_NOT_A_SIZE = re.compile(
    r"wave|laser|slit|band|peak|spectr|resolution|grating|focal|step|pixel|objective|aperture|exposure",
    re.IGNORECASE,
)
_NUMBER = re.compile(r"[-+]?\d+(?:[.,]\d+)?(?:[eE][-+]?\d+)?")
_MILLIMETRES = re.compile(r"\bmm\b|mm2|mm²|mm\^2", re.IGNORECASE)
_PIXELS = re.compile(r"\b(px|pixels?)\b", re.IGNORECASE)


def _value(text: object) -> float | None:
    match = _NUMBER.search(str(text))
    if match is None:
        return None
    number = float(match.group().replace(",", "."))
    return number if number > 0 else None


def sizes_from_metadata(metadata: Mapping[str, Any]) -> dict[str, float]:
    """``feret_max_um``, ``feret_min_um`` and ``area_um2`` where a spectrum's metadata states them."""
    fields: dict[str, Any] = {}
    header = metadata.get("header")
    if isinstance(header, Mapping):
        fields.update(header)
    fields.update({k: v for k, v in metadata.items() if isinstance(v, str | int | float)})
    out: dict[str, float] = {}
    for key, raw in fields.items():
        if not isinstance(key, str) or _PIXELS.search(f"{key} {raw}") or _NOT_A_SIZE.search(key):
            continue
        for name, rule in _RULES:
            if not rule.search(key):
                continue
            value = _value(raw)
            if value is not None and name not in out:
                if _MILLIMETRES.search(f"{key} {raw}"):
                    value *= 1e6 if name == "area_um2" else 1e3
                out[name] = round(value, 6)
            break
    return {name: out[name] for name, _ in sorted(SIZE_FIELDS, key=_order) if name in out}


def _order(item: tuple[str, str]) -> int:
    return ("feret_max_um", "feret_min_um", "area_um2").index(item[0])
