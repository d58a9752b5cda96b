"""``mpwatch library build|info|log|rollback``: build reference libraries and look after their versions."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

from rich.table import Table

from engine.cli.common import EXIT_OK, UsageError, progress_bar, stdout_console

__all__ = ["add_parsers"]


def _count_inputs(folder: Path) -> int:
    from engine.io.labelled_set import is_labelled_set, load_labelled_set

    if is_labelled_set(folder):
        return len(load_labelled_set(folder))
    return sum(1 for p in folder.rglob("*") if p.is_file())


def _say_normalisations(raw_labels: list[str]) -> None:
    """Each canonical label with the raw labels that became it (only those that changed), on stderr."""
    from engine.core.labels import normalisations

    changed = normalisations(raw_labels)
    if not changed:
        return
    sys.stderr.write("labels normalised (--keep-labels keeps them as given):\n")
    for canonical, raw in changed.items():
        sys.stderr.write(f"  {', '.join(raw)} -> {canonical}\n")


def _say_contradictions(lib: Any) -> None:
    """The references whose label the library's own spectra contradict (:mod:`engine.core.audit`), on
    stderr: kept, for an analyst to check."""
    from engine.core.audit import contradicted_labels

    found = contradicted_labels(lib.preprocessed, lib.labels)
    if not found:
        return
    some = "1 reference looks" if len(found) == 1 else f"{len(found)} references look"
    sys.stderr.write(f"{some} like another class of this library, not their own (kept; check the labels):\n")
    for c in found:
        entry = lib.entries[c.index]
        where = ", ".join(str(v) for v in (entry["organisation"], entry["source"]) if v)
        sys.stderr.write(f"  ref {entry['ref_id']} {entry['material']!r} ({where or 'no source'}): {c}\n")


def cmd_library_build(args: argparse.Namespace) -> int:
    from engine.core.library import HEAD, ReferenceLibrary

    folders = [Path(f) for f in args.sources]
    for folder in folders:
        if not folder.is_dir():
            raise UsageError(f"--from {folder}: no such folder")
    out = Path(args.out)
    if (out / HEAD).exists():
        lib = ReferenceLibrary.load(out)
        if args.keep_labels and not lib.keeps_labels:
            raise UsageError(
                f"{out} files its references under canonical labels; --keep-labels needs a new library"
            )
    else:
        lib = ReferenceLibrary.empty(args.pipeline, keep_labels=args.keep_labels)
    raw_labels: list[str] = []
    with progress_bar() as progress:
        for folder in folders:
            task = progress.add_task(f"importing {folder.name}", total=_count_inputs(folder))
            imported = lib.import_folder(folder, progress=lambda n, t=task: progress.advance(t, n))
            raw_labels.extend(imported.raw_labels)
    if len(lib) == 0:
        raise UsageError("no readable spectra found in " + ", ".join(map(str, folders)))
    if not lib.keeps_labels:
        _say_normalisations(raw_labels)
    _say_contradictions(lib)
    names = ", ".join(f.name for f in folders)
    version = lib.save(out, message=f"build from {names}")
    labels = " (labels as given)" if lib.keeps_labels else ""
    sys.stderr.write(
        f"library {out}: version {version}, {lib.technique} ({lib.pipeline_spec['name']} pipeline), "
        f"{len(lib)} spectra, {len(lib.class_counts())} classes{labels}\n"
    )
    return EXIT_OK


def cmd_library_info(args: argparse.Namespace) -> int:
    from engine.core.library import ReferenceLibrary

    info = ReferenceLibrary.load(args.libdir).info()
    if args.json:
        sys.stdout.write(json.dumps(info, indent=2) + "\n")
        return EXIT_OK
    console = stdout_console()
    console.print(
        f"[bold]{args.libdir}[/]  version {info['version']}  ·  {info['n_spectra']} spectra  ·  "
        f"{info['n_classes']} classes ({info['labels']} labels)  ·  pipeline {info['pipeline']['name']}"
    )
    table = Table("class", "spectra", title="classes")
    for label, count in info["classes"].items():
        table.add_row(label, str(count))
    console.print(table)
    for key in ("organisations", "confirmed_by", "techniques"):
        console.print(f"[bold]{key}[/]: " + ", ".join(f"{k} ({v})" for k, v in info[key].items()))
    return EXIT_OK


def cmd_library_log(args: argparse.Namespace) -> int:
    from engine.core.library import library_log

    table = Table("version", "parent", "created", "spectra", "classes", "message")
    for v in library_log(args.libdir):
        table.add_row(
            str(v.version), str(v.parent or ""), v.created_at, str(v.n_spectra), str(v.n_classes), v.message
        )
    stdout_console().print(table)
    return EXIT_OK


def cmd_library_rollback(args: argparse.Namespace) -> int:
    from engine.core.library import rollback

    new = rollback(args.libdir, args.version)
    sys.stderr.write(f"library {args.libdir}: version {args.version} restored as version {new}\n")
    return EXIT_OK


def add_parsers(sub: Any) -> None:
    lib = sub.add_parser("library", help="build and look after reference libraries")
    lsub = lib.add_subparsers(dest="library_command", required=True, metavar="ACTION")
    p = lsub.add_parser("build", help="build (or extend) a library from labelled folders")
    p.add_argument(
        "--from",
        dest="sources",
        action="append",
        required=True,
        metavar="DIR",
        help="a labelled-set folder, or a folder with one subfolder per label (repeatable)",
    )
    p.add_argument("--out", required=True, metavar="LIBDIR", help="library folder to create or extend")
    p.add_argument(
        "--pipeline",
        default=None,
        help="preprocessing pipeline for a new library (unset: default for IR, raman for Raman spectra)",
    )
    p.add_argument(
        "--keep-labels",
        action="store_true",
        help="a new library keeps the labels as given (HDPE stays HDPE) instead of canonical ones (PE)",
    )
    p.set_defaults(func=cmd_library_build)
    p = lsub.add_parser("info", help="classes, counts, version and provenance")
    p.add_argument("libdir", type=Path)
    p.add_argument("--json", action="store_true")
    p.set_defaults(func=cmd_library_info)
    p = lsub.add_parser("log", help="every version of a library")
    p.add_argument("libdir", type=Path)
    p.set_defaults(func=cmd_library_log)
    p = lsub.add_parser("rollback", help="make an earlier version current again (as a new version)")
    p.add_argument("libdir", type=Path)
    p.add_argument("version", type=int)
    p.set_defaults(func=cmd_library_rollback)
