"""``mpwatch classify`` and ``mpwatch evaluate``: the engine from the command line, no daemon needed."""

from __future__ import annotations

import argparse
import csv
import json
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from rich.console import Console
from rich.table import Table

from engine.io import read_spectra
from engine.library import DEFAULT_LIBRARY, ReferenceLibrary
from engine.model import IdentificationModel, ModelConfig, Result
from engine.spectrum import Spectrum, SpectrumError

__all__ = ["add_parsers"]

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


def cmd_classify(args: argparse.Namespace) -> int:
    library = ReferenceLibrary.load(args.library or DEFAULT_LIBRARY)
    model = IdentificationModel(library, ModelConfig())
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


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")


def cmd_evaluate(args: argparse.Namespace) -> int:
    from engine import evaluate as ev

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    console = Console(stderr=True)
    config = ModelConfig()
    if args.study:
        for source in args.study:
            name = Path(source.split("@")[0]).name
            started = time.perf_counter()
            points, reference = ev.study(source, config=config)
            png = ev.plot_study(points, reference, out / f"study_{name}.png", title=f"study protocol: {name}")
            _write_json(
                out / f"study_{name}.json",
                {"points": [p.__dict__ for p in points], "reference": reference.__dict__},
            )
            table = Table(
                "N", "accuracy", "macro precision", "macro recall", "train s", title=f"study: {name}"
            )
            for p in [*points, reference]:
                table.add_row(
                    "CV on originals" if p.n == 0 else str(p.n),
                    f"{p.accuracy:.4f}",
                    f"{p.macro_precision:.4f}",
                    f"{p.macro_recall:.4f}",
                    f"{p.seconds_train:.3f}",
                )
            Console().print(table)
            console.print(f"{png} ({time.perf_counter() - started:.1f} s)")
    if args.library and args.test:
        library = ev.library_from_sources(args.library, pipeline=args.pipeline)
        test = [s for t in args.test for s in ev.load_source(t)]
        report = ev.cross_source(library, test, config=config)
        png = ev.plot_confusion(
            report, out / "confusion.png", title=" + ".join(args.library) + " -> " + " + ".join(args.test)
        )
        summary: dict[str, Any] = {"library": args.library, "test": args.test, **report.as_dict()}
        if args.loco:
            loco = ev.leave_one_class_out(library, test, config=config)
            summary["leave_one_class_out"] = loco.as_dict()
        _write_json(out / "cross_source.json", summary)
        _print_cross_source(summary)
        console.print(str(png))
    if args.aging:
        from engine.aging import aging_report

        for folder in args.aging:
            aging = aging_report(folder, out / "aging")
            _print_aging(aging)
            console.print(str(out / "aging" / "aging.png"))
    if not args.study and not args.aging and not (args.library and args.test):
        raise SystemExit("mpwatch evaluate: give --library and --test, --study or --aging")
    return 0


def _print_cross_source(s: dict[str, Any]) -> None:
    console = Console()
    table = Table("metric", "value", title="cross-source evaluation")
    for key in (
        "n_test",
        "n_in_library",
        "accuracy",
        "macro_precision",
        "macro_recall",
        "macro_f1",
        "false_reject_rate",
        "accepted_accuracy",
        "out_of_library",
        "out_of_library_unknown_rate",
        "low_quality",
        "seconds_build",
        "seconds_classify",
    ):
        value = s[key]
        table.add_row(key, f"{value:.4f}" if isinstance(value, float) else str(value))
    console.print(table)
    recall = Table("class", "recall", title="per-class recall")
    for label, value in s["per_class_recall"].items():
        recall.add_row(label, f"{value:.3f}")
    console.print(recall)
    if "leave_one_class_out" in s:
        loco = s["leave_one_class_out"]
        t = Table(
            "held-out class",
            "test spectra",
            "called unknown",
            "known-class rejected",
            title="leave one class out",
        )
        for label, rate in loco["unknown_rate"].items():
            t.add_row(
                label,
                str(loco["n_held_out"][label]),
                f"{rate:.3f}",
                f"{loco['known_reject_rate'][label]:.3f}",
            )
        t.add_row(
            "pooled",
            str(sum(loco["n_held_out"].values())),
            f"{loco['mean_unknown_rate']:.3f}",
            f"{loco['mean_known_reject_rate']:.3f}",
        )
        console.print(t)


def _print_aging(report: dict[str, Any]) -> None:
    table = Table(
        "polymer",
        "index",
        "n pristine",
        "median pristine",
        "n env.",
        "median env.",
        "U",
        "p (env > pristine)",
        title="aging indices: pristine vs environmental (Mann-Whitney U)",
    )
    for row in _aging_rows(report):
        table.add_row(*row)
    Console().print(table)


def _aging_rows(report: dict[str, Any]) -> list[list[str]]:
    rows = []
    for polymer, indices in report.get("comparisons", {}).items():
        for index, cmp in indices.items():
            a, b = cmp["a"], cmp["b"]
            rows.append(
                [
                    polymer,
                    index,
                    str(a["n"]),
                    _num(a["median"]),
                    str(b["n"]),
                    _num(b["median"]),
                    _num(cmp.get("u"), ".0f"),
                    _num(cmp.get("p_greater"), ".2g"),
                ]
            )
    return rows


def _num(value: Any, spec: str = ".3f") -> str:
    return format(value, spec) if isinstance(value, int | float) else "n/a"


def add_parsers(sub: Any) -> None:
    p = sub.add_parser(
        "classify", help="identify spectrum files or labelled sets, print one result per spectrum"
    )
    p.add_argument(
        "inputs", nargs="+", type=Path, metavar="INPUT", help="a spectrum file or a labelled-set folder"
    )
    p.add_argument("--library", type=Path, metavar="LIBDIR", help="library folder (default: the bundled one)")
    p.add_argument("--format", choices=("jsonl", "csv", "table"), default="jsonl")
    p.set_defaults(func=cmd_classify)

    p = sub.add_parser(
        "evaluate", help="score the classifier honestly: cross-source, leave-one-class-out, study"
    )
    p.add_argument(
        "--library",
        action="append",
        metavar="DIR[@key=value]",
        help="labelled set(s) to build the library from; @key=value keeps matching meta.csv rows",
    )
    p.add_argument("--test", action="append", metavar="DIR[@key=value]", help="labelled set(s) to test on")
    p.add_argument("--loco", action="store_true", help="also run leave-one-class-out on the test set")
    p.add_argument(
        "--pipeline", default="default", help="preprocessing pipeline of the library (default, openspecy)"
    )
    p.add_argument("--study", action="append", metavar="DIR", help="the KWR study protocol on a labelled set")
    p.add_argument(
        "--aging",
        action="append",
        metavar="DIR",
        help="carbonyl index distributions, pristine vs environmental (meta.csv 'library')",
    )
    p.add_argument("--out", default="artifacts/evaluate", help="folder for the PNG and JSON reports")
    p.set_defaults(func=cmd_evaluate)
