"""Canonical polymer labels: one abbreviation per polymer family, the specific material beside it.

Libraries from different labs name the same polymer differently (HDPE, LDPE,
"polyethylene wax" are all PE; "Nylon 6" is PA; "Cotton" is cellulose).
:func:`canonical_label` maps a raw name to the canonical abbreviation used for
classes and scoring; the raw name is kept as the ``material``.

>>> canonical_label("HDPE")
'PE'
>>> canonical_label("Nylon 6,6")
'PA'
>>> canonical_label("polystyrene foam")
'PS'
>>> canonical_label("fur")  # no polymer family: kept, lower-case
'fur'
>>> canonical_label("polyethylene, 36% chlorinated")  # a modified polymer is a polymer of its own
'CPE'
>>> same_polymer("PES", "PET")  # scoring equivalence: PET is the common polyester
True

:func:`normalisations` says what canonicalising a set of raw labels changes, for
whoever imports them (``mpwatch library build`` prints it; ``--keep-labels`` keeps
the raw labels instead).
"""

from __future__ import annotations

import re
from collections.abc import Iterable

__all__ = [
    "CANONICAL",
    "MODIFIED",
    "SCORING_EQUIVALENTS",
    "canonical_label",
    "normalisations",
    "same_polymer",
    "scoring_label",
]

#: Canonical abbreviation -> lower-case names and abbreviations that mean it.
#: Longer, more specific names are matched before shorter ones (EVA before PE).
CANONICAL: dict[str, tuple[str, ...]] = {
    "EVA": (
        "eva",
        "peva",
        "ethylene vinyl acetate",
        "ethylene-vinyl acetate",
        "poly(ethylene-co-vinyl acetate)",
    ),
    "EVOH": ("evoh", "ethylene vinyl alcohol"),
    "EAA": ("eaa", "ethylene acrylic acid"),
    "ABS": ("abs", "acrylonitrile butadiene styrene"),
    "SAN": ("san", "styrene acrylonitrile"),
    "PVC": ("pvc", "polyvinyl chloride", "poly(vinyl chloride)", "vinyl chloride"),
    "CPVC": ("cpvc", "pvc-c", "chlorinated polyvinyl chloride", "chlorinated pvc"),
    "PVAc": ("pvac", "polyvinyl acetate", "poly(vinyl acetate)"),
    "PVA": ("pva", "pvoh", "polyvinyl alcohol", "poly(vinyl alcohol)"),
    "PVDF": ("pvdf", "polyvinylidene fluoride", "polyvinylidenfluoride"),
    "PTFE": ("ptfe", "polytetrafluoroethylene", "teflon"),
    "PMMA": ("pmma", "poly(methyl methacrylate)", "polymethyl methacrylate", "plexiglas"),
    "PET": ("pet", "pete", "polyethylene terephthalate", "poly(ethylene terephthalate)", "polyester"),
    "PES": ("pes", "copolyester"),
    "PLA": ("pla", "polylactic acid", "poly(lactic acid)", "polylactide"),
    "PC": ("pc", "polycarbonate"),
    "POM": ("pom", "polyoxymethylene", "polyoxymethylen", "acetal"),
    "PDMS": ("pdms", "polydimethylsiloxane", "silicone"),
    "PU": ("pu", "pur", "polyurethane"),
    "PA": ("pa", "nylon", "polyamide", "pa6", "pa66", "aramid"),
    "PAN": ("pan", "acrylic", "polyacrylonitrile"),
    "CA": (
        "ca",
        "cellulose acetate",
        "cellulose diacetate",
        "cellulose triacetate",
        "fibre acetate",
        "acetate",
        "diacetate",
        "triacetate",
    ),
    "cellulose": ("cellulose", "cotton", "rayon", "viscose", "lyocell", "c"),
    "PS": ("ps", "eps", "polystyrene", "styrofoam"),
    "PP": ("pp", "polypropylene"),
    "CPE": ("cpe", "pe-c", "chlorinated polyethylene", "polyethylene chlorinated"),
    "CSM": ("csm", "cspe", "chlorosulfonated polyethylene", "polyethylene chlorosulfonated"),
    "PE": ("pe", "hdpe", "ldpe", "lldpe", "mdpe", "uhmwpe", "polyethylene", "polythene"),
}

#: A class whose chemically modified form is a polymer of its own, spectrally apart (chlorinated
#: polyethylene has C-Cl bands PE lacks): a name of the class with the modifier's word names the
#: modified polymer ("polyethylene, 36% chlorinated" is CPE, not PE).
MODIFIED: dict[str, tuple[tuple[str, str], ...]] = {
    "PE": (("chlorosulfonated", "CSM"), ("chlorinated", "CPE")),
    "PVC": (("chlorinated", "CPVC"),),
}

#: Classes scored as the same polymer when a library and a test set name them differently.
SCORING_EQUIVALENTS: dict[str, str] = {"PES": "PET"}

_LOOKUP: dict[str, str] = {}
for _canonical, _names in CANONICAL.items():
    for _name in (_canonical.lower(), *_names):
        _LOOKUP.setdefault(_name, _canonical)
_PREFIXES = sorted(_LOOKUP, key=len, reverse=True)
_SPLIT = re.compile(r"[\s,;/_()\-]+")


def canonical_label(name: str) -> str:
    """The canonical abbreviation for a raw label; unknown names come back lower-cased.

    An exact name wins; otherwise the longest known name that starts the raw
    label (``"polyethylene wax"`` -> PE), then any known abbreviation among its
    words (``"FLOPP_Nylon_3"`` -> PA); a class's name with a modifier's word
    names the modified polymer (:data:`MODIFIED`).
    """
    raw = name.strip()
    key = raw.lower()
    if not key:
        raise ValueError("an empty label cannot be canonicalised")
    if key in _LOOKUP:
        return _LOOKUP[key]
    words = _SPLIT.split(key)
    for prefix in _PREFIXES:
        if len(prefix) > 3 and key.startswith(prefix):
            return _modified(_LOOKUP[prefix], words)
    for word in words:
        if len(word) > 1 and word in _LOOKUP:
            return _modified(_LOOKUP[word], words)
    return key


def _modified(label: str, words: list[str]) -> str:
    """``label``, or the modified polymer that one of ``words`` names (:data:`MODIFIED`)."""
    return next((modified for word, modified in MODIFIED.get(label, ()) if word in words), label)


def normalisations(raw_labels: Iterable[str]) -> dict[str, list[str]]:
    """Each canonical label with the raw labels that :func:`canonical_label` changes into it.

    Only the labels it changes are listed (surrounding blanks aside), each once; canonical
    labels and their raw ones are sorted.

    >>> normalisations(["HDPE", "LDPE", "PE", "acrylic", "R", "HDPE "])
    {'PAN': ['acrylic'], 'PE': ['HDPE', 'LDPE'], 'r': ['R']}
    """
    changed: dict[str, set[str]] = {}
    for raw in raw_labels:
        label = raw.strip()
        canonical = canonical_label(label)
        if canonical != label:
            changed.setdefault(canonical, set()).add(label)
    return {canonical: sorted(changed[canonical]) for canonical in sorted(changed)}


def scoring_label(name: str) -> str:
    """The canonical label with scoring equivalences applied (PES is scored as PET)."""
    label = canonical_label(name)
    return SCORING_EQUIVALENTS.get(label, label)


def same_polymer(a: str, b: str) -> bool:
    """Whether two raw labels name the same polymer for scoring."""
    return scoring_label(a) == scoring_label(b)
