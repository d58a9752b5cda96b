"""``mpwatch classify``: identify spectrum files, folders of them or labelled sets, no daemon needed.

A folder that is a labelled set is read as one. Any other folder is walked recursively
with the daemon's file filters (:mod:`engine.io.candidates`): temporary, hidden and lock
files and excluded folders are passed over, and files that are plainly not spectra by
name (images, documents, spreadsheets) are skipped, with one line on standard error
saying which. A file that cannot be read gets one line on standard error and the run
goes on; the exit status is 2 only when nothing could be read. Results go to standard
output as they come, and a run of several inputs shows a progress bar on standard error
(on a terminal).
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from engine.cli.common import EXIT_BAD_INPUT, EXIT_OK, progress_bar
from engine.core.library import DEFAULT_LIBRARIES, LibraryError, ReferenceLibrary
from engine.core.spectrum import Spectrum, SpectrumError
from engine.io import read_spectra
from engine.io.candidates import NonSpectrumFilter, SpectrumFileFilter, candidate_files
from engine.io.labelled_set import is_labelled_set
from engine.models.cnn.runtime import BESIDE_LIBRARY, cnn_for
from engine.models.served import IdentificationModel, ModelConfig, Result, serving

__all__ = ["add_library_argument", "add_parsers", "served_libraries", "served_model", "spectrum_inputs"]

CSV_FIELDS = ("source", "index", "status", "label", "material", "confidence", "top_hit", "top_r", "candidate")

#: Skipped files named on standard error per folder; the rest are counted.
NAMES_SHOWN = 5


def _say(message: str) -> None:
    """One line on standard error (looked up now: above the progress bar while it runs)."""
    sys.stderr.write(f"mpwatch: {message}\n")


def _skipped(folder: Path, names: Sequence[str]) -> str:
    shown = ", ".join(names[:NAMES_SHOWN])
    more = f" and {len(names) - NAMES_SHOWN} more" if len(names) > NAMES_SHOWN else ""
    what = "file that is not a spectrum" if len(names) == 1 else "files that are not spectra"
    return f"{folder}: skipped {len(names)} {what} by name ({shown}{more})"


def spectrum_inputs(paths: Sequence[Path]) -> list[Path]:
    """What to read for ``paths``: files and labelled sets as given, other folders walked.

    A walked folder's candidates come in name order, a labelled set met on the way as
    one input; those that are plainly not spectra by name are left out, and one line on
    standard error names them. A folder without a candidate says so too.
    """
    spectra, non_spectra = SpectrumFileFilter(), NonSpectrumFilter()
    inputs: list[Path] = []
    for path in paths:
        if not path.is_dir() or is_labelled_set(path):
            inputs.append(path)
            continue
        found: list[Path] = []
        skipped: list[Path] = []
        labelled: dict[Path, bool] = {}  # each folder met: whether it is a labelled set
        for candidate in candidate_files(path, file_filter=spectra):
            folder = candidate.parent
            if folder not in labelled:
                labelled[folder] = is_labelled_set(folder)
                if labelled[folder]:
                    found.append(folder)
            if labelled[folder]:
                continue
            (skipped if non_spectra.reason_for(candidate) else found).append(candidate)
        if skipped:
            _say(_skipped(path, [str(p.relative_to(path)) for p in skipped]))
        if not found:
            _say(f"{path}: no spectrum files in it")
        inputs.extend(found)
    return inputs


class _Stdout:
    """Standard output as it is when written to (the progress bar may stand in for it)."""

    def write(self, text: str) -> int:
        return sys.stdout.write(text)


class _Rows:
    """Results as they come: jsonl or csv lines on standard output, or a table printed at the end."""

    def __init__(self, form: str) -> None:
        self.form = form
        self.table = Table("source", "#", "status", "label", "confidence", "best hit (r)")
        self._csv: csv.DictWriter[str] | None = None

    def add(self, spectrum: Spectrum, result: Result) -> None:
        row = {
            "source": spectrum.metadata.get("source"),
            "index": spectrum.metadata.get("index", 0),
            **result.as_dict(),
        }
        top = result.hits[0] if result.hits else None
        if self.form == "jsonl":
            sys.stdout.write(json.dumps(row) + "\n")
        elif self.form == "csv":
            if self._csv is None:
                self._csv = csv.DictWriter(
                    _Stdout(), fieldnames=CSV_FIELDS, lineterminator="\n", extrasaction="ignore"
                )
                self._csv.writeheader()
            self._csv.writerow({**row, "top_hit": top.label if top else "", "top_r": top.r if top else ""})
        else:
            self.table.add_row(
                Path(str(row["source"])).name,
                str(row["index"]),
                result.status,
                result.label or "",
                f"{result.confidence:.2f}",
                f"{top.label} ({top.r:.3f})" if top else "",
            )

    def close(self) -> None:
        if self.form == "table" and self.table.row_count:  # nothing read: the errors said so, no empty table
            Console().print(self.table)


def served_libraries(folders: Sequence[Path] | None) -> list[tuple[ReferenceLibrary, Path]]:
    """The libraries in ``folders`` (one per technique), the bundled ones for the other techniques,
    each with its folder."""
    chosen = [(ReferenceLibrary.load(folder), Path(folder)) for folder in folders or ()]
    techniques = [lib.technique for lib, _ in chosen]
    if len(set(techniques)) != len(techniques):
        raise LibraryError(f"give one library per technique, got {', '.join(techniques)} libraries")
    for technique, folder in DEFAULT_LIBRARIES.items():
        if technique not in techniques:
            chosen.append((ReferenceLibrary.load(folder), folder))
    return sorted(chosen, key=lambda pair: pair[0].technique != "ir")


def served_model(folders: Sequence[Path] | None) -> IdentificationModel:
    """The model ``classify`` and ``reclassify`` serve: the libraries of :func:`served_libraries`,
    each with the CNN member kept in its folder (``cnn.onnx``) when it was trained on that content
    (the bundled libraries ship theirs), as the daemon serves them."""
    chosen = served_libraries(folders)
    model = serving([library for library, _ in chosen], ModelConfig())
    for library, folder in chosen:
        cnn = cnn_for(library, [folder / BESIDE_LIBRARY])
        target = model.model_for(library.technique)
        if cnn is not None and target is not None:
            target.set_cnn(cnn)
    return model


def add_library_argument(parser: argparse.ArgumentParser) -> None:
    """``--library LIBDIR`` (repeatable), as :func:`served_libraries` takes it."""
    parser.add_argument(
        "--library",
        type=Path,
        action="append",
        metavar="LIBDIR",
        help="library folder, one per technique (default: the bundled FTIR and Raman libraries)",
    )


def cmd_classify(args: argparse.Namespace) -> int:
    inputs = spectrum_inputs(args.inputs)
    if not inputs:
        return EXIT_BAD_INPUT
    model = served_model(args.library)
    rows = _Rows(args.format)
    bad = 0
    with progress_bar(show=len(inputs) > 1) as progress:
        task = progress.add_task("classifying", total=len(inputs))
        for path in inputs:
            try:
                spectra = read_spectra(path)
            except SpectrumError as exc:
                bad += 1
                _say(f"{path}: {exc}")
            else:
                for spectrum, result in zip(spectra, model.classify(spectra), strict=True):
                    rows.add(spectrum, result)
            progress.advance(task)
    rows.close()
    return EXIT_BAD_INPUT if bad == len(inputs) else EXIT_OK


def add_parsers(sub: Any) -> None:
    p = sub.add_parser(
        "classify",
        help="identify spectrum files, folders of them or labelled sets, one result per spectrum",
    )
    p.add_argument(
        "inputs",
        nargs="+",
        type=Path,
        metavar="INPUT",
        help="a spectrum file, a folder of them (walked recursively) or a labelled-set folder",
    )
    add_library_argument(p)
    p.add_argument("--format", choices=("jsonl", "csv", "table"), default="jsonl")
    p.set_defaults(func=cmd_classify)
