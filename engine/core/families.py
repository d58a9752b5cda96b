"""Polymer families: the class above a label, for counts and for answers that go no further.

A family groups polymers whose spectra share their defining bands: the
polyolefins (PE, PP, EVA and the other ethylene copolymers), the styrenics (PS,
ABS, SAN and styrene copolymers), the polyesters, the polyamides and so on. The
families follow the material classes of Open Specy's reference library, under
short names. A result carries its label's family; a report counts by family when
a lab wants fewer, surer classes; an open-set evaluation holds out whole
families, since a PE particle that matches EVA is spectrally right.

:func:`family_of` takes a canonical label (:func:`engine.core.labels.canonical_label`)
or any raw library name. A class's own names take its family from :data:`FAMILY_OF_CLASS`;
longer names are placed by the words in them (:data:`FAMILY_WORDS`), then by the class
canonicalising finds in them; a name that nothing places has no family (None).

>>> family_of("HDPE"), family_of("EVA"), family_of("styrene butadiene copolymer")
('polyolefin', 'polyolefin', 'styrenic')
>>> family_of("poly(n-butyl methacrylate)"), family_of("fur alpaca"), family_of("coal")
('acrylic', 'natural', None)
>>> family_of(None) is None
True
"""

from __future__ import annotations

import re
from typing import Final

from engine.core.labels import CANONICAL, canonical_label

__all__ = ["FAMILIES", "FAMILY_OF_CLASS", "FAMILY_WORDS", "family_of"]

#: Every family, with the Open Specy material class it stands for.
FAMILIES: Final[dict[str, str]] = {
    "polyolefin": "polyolefins (polyalkenes) and ethylene copolymers",
    "styrenic": "polystyrenes and styrene copolymers",
    "polyester": "polyesters (aromatic and aliphatic)",
    "polyamide": "polyamides (polylactams) and aramids",
    "polyurethane": "polyurethanes (polycarbamates)",
    "polycarbonate": "polycarbonates",
    "acrylic": "poly(meth)acrylates, polyacrylonitrile and polyacrylamides",
    "vinyl": "polyvinyl chlorides, acetates, alcohols and vinylidene polymers",
    "fluoropolymer": "polyfluorocarbons",
    "polyether": "polyethers, polyacetals and polyphenylene oxides",
    "polysulfone": "polysulfones and polyphenylene sulfide",
    "silicone": "polysiloxanes",
    "rubber": "polydienes and elastomers",
    "cellulosic": "cellulose and cellulose derivatives",
    "natural": "proteins and other natural materials (wool, silk, chitin, wood, waxes)",
    "mineral": "minerals and pigments",
    "resin": "thermoset resins and varnishes",
}

#: The family of each canonical class of :data:`engine.core.labels.CANONICAL`.
FAMILY_OF_CLASS: Final[dict[str, str]] = {
    "PE": "polyolefin",
    "PP": "polyolefin",
    "EVA": "polyolefin",
    "EAA": "polyolefin",
    "EVOH": "polyolefin",
    "CPE": "polyolefin",
    "CSM": "polyolefin",
    "PS": "styrenic",
    "ABS": "styrenic",
    "SAN": "styrenic",
    "PET": "polyester",
    "PES": "polyester",
    "PLA": "polyester",
    "PA": "polyamide",
    "PU": "polyurethane",
    "PC": "polycarbonate",
    "PMMA": "acrylic",
    "PAN": "acrylic",
    "PVC": "vinyl",
    "CPVC": "vinyl",
    "PVAc": "vinyl",
    "PVA": "vinyl",
    "PVDF": "fluoropolymer",
    "PTFE": "fluoropolymer",
    "POM": "polyether",
    "PDMS": "silicone",
    "CA": "cellulosic",
    "cellulose": "cellulosic",
}

#: Words that place a name no canonical class covers, tried in order (the first match wins:
#: "styrene acrylonitrile" is styrenic, "vinylidene chloride acrylonitrile" vinyl).
FAMILY_WORDS: Final[tuple[tuple[str, str], ...]] = (
    (r"^ethylene (vinyl|ethyl acryl|methacryl|acryl|propylene)", "polyolefin"),
    (r"styren|polymethylstyrene", "styrenic"),
    (r"vinylidene|vinyl (chloride|acetat|alcohol|butyral|formal|stearate)|vinylpyrrolidone", "vinyl"),
    (r"sulfone|sulphone|sulfide", "polysulfone"),
    (r"butadiene|isoprene|chloroprene|rubber|latex|elastom|epdm|sealing ring", "rubber"),
    (r"amide|imide|nylon|aramid", "polyamide"),
    (r"caprolactone|hydroxybutyr|terephthal|isophthal|isophtal|fumarate|ester", "polyester"),
    (r"vinyl ether|phenylene oxide|ethylene oxide|glycol|ether", "polyether"),
    (r"acryl", "acrylic"),
    (r"ethylene|propylene|butene|pentene|olefin|paraff|parrafine", "polyolefin"),
    (r"cellulo|cotton|paper|flax|hemp|jute|linen|kapok|cocoanut|coconut|cigarette filter", "cellulosic"),
    (
        r"wool|fur |silk|chitin|zein|keratin|honeycomb|broodcomb|wax|wood(?! glue)|lignin|algae|alginic|leaf|"
        r"turf|grass|amber|poplar|urtica",
        "natural",
    ),
    (r"quartz|sand|silica|titan|sakhaite|soil|mineral", "mineral"),
    (r"resin|varnish|epoxi|epoxy|glue|putty", "resin"),
)

_RULES = tuple((re.compile(pattern), family) for pattern, family in FAMILY_WORDS)


def family_of(label: str | None) -> str | None:
    """The family of a label (canonical or raw), or None when no rule places it."""
    if label is None or not label.strip():
        return None
    name = label.strip()
    if name in FAMILY_OF_CLASS:
        return FAMILY_OF_CLASS[name]
    canonical = canonical_label(name)
    if canonical in FAMILY_OF_CLASS and name.lower() in (canonical.lower(), *CANONICAL.get(canonical, ())):
        return FAMILY_OF_CLASS[canonical]  # a class's own name ("hdpe", "Nylon"): its class's family
    for pattern, family in _RULES:  # a longer name: its words first ("n-vinylpyrrolidone vinyl acetate")
        if pattern.search(name.lower()):
            return family
    return FAMILY_OF_CLASS.get(canonical)  # then whatever class canonicalising finds in it
