"""``mpwatch classify``: identify spectrum files or labelled sets with the served model, no daemon needed."""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from engine.core.library import DEFAULT_LIBRARIES, LibraryError, ReferenceLibrary
from engine.core.spectrum import Spectrum, SpectrumError
from engine.io import read_spectra
from engine.models.served import ModelConfig, Result, serving

__all__ = ["add_parsers", "served_libraries"]

CSV_FIELDS = ("source", "index", "status", "label", "material", "confidence", "top_hit", "top_r", "candidate")


def _inputs(paths: list[Path]) -> Iterator[tuple[Path, list[Spectrum] | SpectrumError]]:
    for path in paths:
        try:
            yield path, read_spectra(path)
        except SpectrumError as exc:
            yield path, exc


def _row(spectrum: Spectrum, result: Result) -> dict[str, Any]:
    return {
        "source": spectrum.metadata.get("source"),
        "index": spectrum.metadata.get("index", 0),
        **result.as_dict(),
    }


def served_libraries(folders: Sequence[Path] | None) -> list[ReferenceLibrary]:
    """The libraries in ``folders`` (one per technique), the bundled ones for the other techniques."""
    chosen = [ReferenceLibrary.load(folder) for folder in folders or ()]
    techniques = [lib.technique for lib in chosen]
    if len(set(techniques)) != len(techniques):
        raise LibraryError(f"give one library per technique, got {', '.join(techniques)} libraries")
    for technique, folder in DEFAULT_LIBRARIES.items():
        if technique not in techniques:
            chosen.append(ReferenceLibrary.load(folder))
    return sorted(chosen, key=lambda lib: lib.technique != "ir")


def cmd_classify(args: argparse.Namespace) -> int:
    model = serving(served_libraries(args.library), ModelConfig())
    out = sys.stdout
    writer = None
    table = Table("source", "#", "status", "label", "confidence", "best hit (r)")
    bad = 0
    for path, got in _inputs(args.inputs):
        if isinstance(got, SpectrumError):
            bad += 1
            sys.stderr.write(f"mpwatch: {path}: {got}\n")
            continue
        for spectrum, result in zip(got, model.classify(got), strict=True):
            row = _row(spectrum, result)
            if args.format == "jsonl":
                out.write(json.dumps(row) + "\n")
            elif args.format == "csv":
                if writer is None:
                    writer = csv.DictWriter(
                        out, fieldnames=CSV_FIELDS, lineterminator="\n", extrasaction="ignore"
                    )
                    writer.writeheader()
                top = result.hits[0] if result.hits else None
                writer.writerow({**row, "top_hit": top.label if top else "", "top_r": top.r if top else ""})
            else:
                top = result.hits[0] if result.hits else None
                table.add_row(
                    Path(str(row["source"])).name,
                    str(row["index"]),
                    result.status,
                    result.label or "",
                    f"{result.confidence:.2f}",
                    f"{top.label} ({top.r:.3f})" if top else "",
                )
    if args.format == "table":
        Console().print(table)
    return 2 if bad and bad == len(args.inputs) else 0


def add_parsers(sub: Any) -> None:
    p = sub.add_parser(
        "classify", help="identify spectrum files or labelled sets, print one result per spectrum"
    )
    p.add_argument(
        "inputs", nargs="+", type=Path, metavar="INPUT", help="a spectrum file or a labelled-set folder"
    )
    p.add_argument(
        "--library",
        type=Path,
        action="append",
        metavar="LIBDIR",
        help="library folder, one per technique (default: the bundled FTIR and Raman libraries)",
    )
    p.add_argument("--format", choices=("jsonl", "csv", "table"), default="jsonl")
    p.set_defaults(func=cmd_classify)
