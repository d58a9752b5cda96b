"""Build the bundled default libraries (FTIR and Raman) and the demo spectra from the Open Specy sets.

Run from the repository root with the shared data beside it::

    .venv/bin/python scripts/build_default_library.py ../shared/data/openspecy_ftir_2023 \
        --raman ../shared/data/openspecy_raman_polymers_2023

Writes ``engine/data/default_library/`` (the FTIR library, with ATTRIBUTION.md
naming every contributing organisation), ``engine/data/demo/`` (a few
instrument-like CSV files made from library spectra: transmittance, noise
and a sloping baseline added, plus one noise-only file and one broken file)
and, with ``--raman``, ``engine/data/default_raman_library/``. With
``--raman-only`` the FTIR library and the demo are left as they are.
"""

from __future__ import annotations

import argparse
import csv
import shutil
from collections import Counter
from pathlib import Path

import numpy as np

from engine.io import read_spectra
from engine.core.library import DEFAULT_LIBRARY, DEFAULT_RAMAN_LIBRARY, ReferenceLibrary

DEMO_DIR = DEFAULT_LIBRARY.parent / "demo"
DEMO_CLASSES = ("PE", "PP", "PS", "PET", "PA", "PVC")

ATTRIBUTION = """# Attribution: the bundled default reference library

mpwatch ships the Open Specy FTIR reference library (2023 snapshot) as its
default library, so it identifies spectra with no configuration.

- Open Specy: Cowger W. et al. (2021) "Microplastic Spectral Classification Needs an
  Open Source Community: Open Specy to the Rescue!" Analytical Chemistry 93(21), 7543-7548.
  The OpenSpecy R package is licensed CC BY 4.0; the library data are hosted on OSF and
  remain under the terms of their contributors.
- The snapshot was taken from the `pyopenspecy` 0.0.1 package (MIT).

## Contributing organisations

| organisation | spectra |
|---|---|
{rows}

Spectra were resampled to a 2 cm-1 grid from 400 to 4000 cm-1 before they were
bundled; points outside each spectrum's measured range are not stored.
"""


RAMAN_ATTRIBUTION = """# Attribution: the bundled Raman reference library

mpwatch ships the polymer part of the Open Specy Raman reference library (2023 snapshot)
as its default Raman library, so Raman spectra are identified with no configuration.

- Open Specy: Cowger W. et al. (2021) "Microplastic Spectral Classification Needs an
  Open Source Community: Open Specy to the Rescue!" Analytical Chemistry 93(21), 7543-7548.
  The OpenSpecy R package is licensed CC BY 4.0; the library data are hosted on OSF and
  remain under the terms of their contributors.
- The snapshot was taken from the `pyopenspecy` 0.0.1 package (MIT). Only the spectra of
  polymer contributors were kept (the rest of that library is mostly minerals).

## Contributing organisations

| organisation | spectra |
|---|---|
{rows}

Spectra were resampled to a 2 cm-1 grid of Raman shift from 100 to 3500 cm-1 before they
were bundled; points outside each spectrum's measured range are not stored.
"""


def organisations(source: Path) -> Counter[str]:
    with (source / "meta.csv").open(newline="", encoding="utf-8") as handle:
        return Counter(row["organization"] for row in csv.DictReader(handle))


def build_library(source: Path, *, technique: str = "ir") -> ReferenceLibrary:
    """The bundled library of ``technique`` from ``source``, written to its package folder."""
    target = DEFAULT_RAMAN_LIBRARY if technique == "raman" else DEFAULT_LIBRARY
    if target.exists():
        shutil.rmtree(target)
    lib = ReferenceLibrary.empty(technique=technique)
    lib.import_folder(source, confirmed_by="Open Specy library")
    rows = "\n".join(f"| {org} | {n} |" for org, n in organisations(source).most_common())
    lib.attribution = (RAMAN_ATTRIBUTION if technique == "raman" else ATTRIBUTION).format(rows=rows)
    lib.save(target, message=f"default {technique} library from {source.name}")
    return lib


def write_demo(source: Path, *, seed: int = 7) -> None:
    """Instrument-like files: %T with noise and a baseline slope, from real library spectra."""
    rng = np.random.default_rng(seed)
    if DEMO_DIR.exists():
        shutil.rmtree(DEMO_DIR)
    sample = DEMO_DIR / "sample-001"
    sample.mkdir(parents=True)
    spectra = read_spectra(source)
    by_label: dict[str, list[int]] = {}
    for i, s in enumerate(spectra):
        by_label.setdefault(
            str(s.metadata["label"]).upper().replace("HDPE", "PE").replace("LDPE", "PE"), []
        ).append(i)
    n = 0
    for label in DEMO_CLASSES:
        for i in rng.choice(by_label[label], size=min(2, len(by_label[label])), replace=False):
            s = spectra[int(i)]
            absorbance = (s.values - s.values.min()) / np.ptp(s.values)
            absorbance = 0.8 * absorbance + 0.05 + 0.02 * (s.wavenumbers - 400) / 3600
            transmittance = 100 * 10 ** (-absorbance) + rng.normal(0, 0.15, s.n_points)
            n += 1
            _write_csv(sample / f"particle_{n:03d}.csv", s.wavenumbers[::-1], transmittance[::-1])
    x = np.arange(650.0, 4000.0, 2.0)
    _write_csv(sample / f"particle_{n + 1:03d}.csv", x, 95 + rng.normal(0, 0.5, x.size))  # nothing but noise
    (sample / f"particle_{n + 2:03d}.csv").write_text(
        "this file was cut short by the instrument\n1234.5;", "utf-8"
    )


def _write_csv(path: Path, x: np.ndarray, y: np.ndarray) -> None:
    lines = ["wavenumber,transmittance"] + [f"{a:.3f},{b:.4f}" for a, b in zip(x, y, strict=True)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("source", type=Path, help="the openspecy_ftir_2023 labelled-set folder")
    parser.add_argument("--raman", type=Path, help="the openspecy_raman_polymers_2023 labelled-set folder")
    parser.add_argument("--raman-only", action="store_true", help="build only the Raman library")
    args = parser.parse_args()
    built = []
    if not args.raman_only:
        built.append((build_library(args.source), DEFAULT_LIBRARY))
        write_demo(args.source)
    if args.raman:
        built.append((build_library(args.raman, technique="raman"), DEFAULT_RAMAN_LIBRARY))
    for lib, target in built:
        print(f"{lib.technique} library: {len(lib)} spectra, {len(lib.class_counts())} classes -> {target}")  # noqa: T201


if __name__ == "__main__":
    main()
