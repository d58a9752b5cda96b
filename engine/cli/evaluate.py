"""``mpwatch evaluate``: score the classifier honestly.

Cross-source with leave-one-class-out, the study protocol, the robustness matrix of
conventions, and the aging indices; each writes its JSON and PNG reports under ``--out``.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any

from rich.console import Console
from rich.table import Table

from engine.cli.common import progress_bar
from engine.core.library import DEFAULT_LIBRARY, ReferenceLibrary
from engine.models.served import IdentificationModel, ModelConfig

if TYPE_CHECKING:
    from engine.analysis.evaluate import Study

__all__ = ["add_parsers", "run_conventions", "run_study"]


def _write_json(path: Path, data: Any) -> None:
    path.write_text(json.dumps(data, indent=2, default=str) + "\n", encoding="utf-8")


def cmd_evaluate(args: argparse.Namespace) -> int:
    from engine.analysis import evaluate as ev
    from engine.analysis import plots

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    console = Console(stderr=True)
    config = ModelConfig()
    if args.r_floor is not None:
        config = dataclasses.replace(config, r_floor=args.r_floor)
    if args.disagreement_r is not None:
        veto = None if args.disagreement_r > 1 else args.disagreement_r
        config = dataclasses.replace(config, disagreement_r=veto)
    if args.min_confidence is not None:
        config = dataclasses.replace(config, min_confidence=args.min_confidence)
    if args.study:
        steps = sum(len(ns) + 1 for ns in ev.study_plan(args.study_members).values())
        studies = []
        with progress_bar() as bar:
            for source in args.study:
                task = bar.add_task(f"study: {_study_name(source)}", total=steps)
                started = time.perf_counter()
                studies.append(
                    run_study(
                        source,
                        out,
                        members=args.study_members,
                        config=config,
                        progress=partial(bar.advance, task),
                    )
                )
                bar.console.print(f"study of {source}: {time.perf_counter() - started:.1f} s")
        for source, (study, written) in zip(args.study, studies, strict=True):
            _print_study(study, title=f"study: {_study_name(source)}")
            for path in written:
                console.print(str(path))
    if args.conventions:
        if not args.test:
            raise SystemExit(
                "mpwatch evaluate --conventions: give --test DIR (a labelled set in %T or absorbance)"
            )
        try:
            matrix, written = run_conventions(
                args.test, out, library_sources=args.library, pipeline=args.pipeline, config=config
            )
        except ValueError as exc:
            raise SystemExit(f"mpwatch evaluate --conventions: {exc}") from exc
        _print_conventions(matrix)
        for path in written:
            console.print(str(path))
    elif args.library and args.test:
        library = ev.library_from_sources(args.library, pipeline=args.pipeline)
        test = [s for t in args.test for s in ev.load_source(t)]
        names = [" + ".join(map(ev.source_name, sources)) for sources in (args.library, args.test)]
        pair = " -> ".join(names)
        reports, pngs = {}, []
        audit = ev.audit_test(library, test)
        for member in args.members:
            started = time.perf_counter()
            reports[member] = report = ev.cross_source(
                library, test, config=config, member=member, audit=audit
            )
            console.print(f"cross-source, {member}: {time.perf_counter() - started:.1f} s")
            suffix = "" if member == "subknn" else f"_{member}"
            title = f"{member}: {pair}"
            pngs.append(plots.plot_confusion(report, out / f"confusion{suffix}.png", title=title))
            pngs.append(plots.plot_reliability(report, out / f"reliability{suffix}.png", title=title))
        if args.baseline == ev.RECIPE:
            reports[ev.RECIPE] = recipe = ev.recipe_cross_source(library, test, audit=audit)
            title = f"{ev.RECIPE_NAME}: {pair}"
            pngs.append(plots.plot_confusion(recipe, out / f"confusion_{ev.RECIPE}.png", title=title))
        summary: dict[str, Any] = {
            "library": args.library,
            "test": args.test,
            **reports[args.members[0]].as_dict(),
            "members": {member: report.as_dict() for member, report in reports.items()},
        }
        if ev.RECIPE in reports:
            summary["against_recipe"] = _against_recipe(reports)
        for flag, grouping in ((args.loco, "class"), (args.lofo, "family")):
            if flag:
                first = args.members[0]
                held = ev.leave_one_out(library, test, grouping=grouping, config=config, member=first)
                summary[f"leave_one_{grouping}_out"] = held.as_dict()
        _write_json(out / "cross_source.json", summary)
        _print_cross_source(summary)
        for png in pngs:
            console.print(str(png))
    if args.aging:
        from engine.analysis.aging_report import aging_report

        for folder in args.aging:
            aging = aging_report(folder, out / "aging")
            _print_aging(aging)
            console.print(str(out / "aging" / "aging.png"))
    if not args.study and not args.aging and not args.conventions and not (args.library and args.test):
        raise SystemExit(
            "mpwatch evaluate: give --library and --test, --conventions --test, --study or --aging"
        )
    return 0


def run_study(
    source: str,
    out: Path,
    *,
    members: Sequence[str],
    config: ModelConfig,
    ns: Mapping[str, Sequence[int]] | None = None,
    cnn_params: Mapping[str, Any] | None = None,
    progress: Callable[[int], None] | None = None,
) -> tuple[Study, list[Path]]:
    """The study protocol on ``source``; writes study_NAME.json, study_NAME.png and study_NAME_time.png.

    NAME is the source's folder. The other arguments are
    :func:`engine.analysis.evaluate.study`'s. The JSON holds every member's points
    and references and the CNN's parameters; the PNGs are the study's two
    figures (scores against N, training time against data size).
    """
    from engine.analysis import evaluate as ev
    from engine.analysis import plots

    name = _study_name(source)
    study = ev.study(source, members=members, ns=ns, config=config, cnn_params=cnn_params, progress=progress)
    json_path = out / f"study_{name}.json"
    _write_json(json_path, {"source": source, **study.as_dict()})
    scores, times = plots.plot_study(
        study, out / f"study_{name}.png", out / f"study_{name}_time.png", title=f"study protocol: {name}"
    )
    return study, [json_path, scores, times]


def run_conventions(
    tests: Sequence[str],
    out: Path,
    *,
    library_sources: Sequence[str] | None,
    pipeline: str | None,
    config: ModelConfig,
) -> tuple[dict[str, Any], list[Path]]:
    """The robustness matrix of ``tests``; writes conventions.json and conventions.png under ``out``.

    The model is the served one on ``library_sources`` (labelled sets as
    ``DIR[@key=value]``) or, without them, on the bundled library. Each test
    set is rendered in every convention of :data:`engine.analysis.renderings.CONVENTIONS`
    in a temporary folder, and each rendering identified from its files (see
    :func:`engine.analysis.robustness.conventions_matrix`).
    """
    from engine.analysis import evaluate as ev
    from engine.analysis import plots, renderings, robustness

    if library_sources:
        library = ev.library_from_sources(library_sources, pipeline=pipeline)
        library_name = " + ".join(library_sources)
    else:
        library = ReferenceLibrary.load(DEFAULT_LIBRARY)
        library_name = "bundled default library"
    model = IdentificationModel(library, config)
    with progress_bar() as bar, tempfile.TemporaryDirectory(prefix="mpwatch-conventions-") as workdir:
        task = bar.add_task("robustness matrix", total=len(tests) * (len(renderings.CONVENTIONS) + 1))
        report = robustness.conventions_matrix(
            model, tests, workdir=workdir, progress=partial(bar.advance, task)
        )
    report = {"library": library_name, "test": list(tests), **report}
    json_path = out / "conventions.json"
    _write_json(json_path, report)
    png = plots.plot_conventions(report, out / "conventions.png", title=f"robustness matrix: {library_name}")
    return report, [json_path, png]


def _print_conventions(report: dict[str, Any]) -> None:
    """Rows: native, then each convention; per test set: accuracy, points vs native, closed-set, outcomes."""
    from engine.analysis.renderings import NATIVE
    from engine.analysis.robustness import shortfalls

    sets: dict[str, Any] = report["sets"]
    columns = ["convention"]
    for name in sets:
        folder, _, selector = name.partition("@")
        short = folder.split("_")[0] + (f" {selector.partition('=')[2]}" if selector else "")
        columns += [f"{short} acc", "Δ pts", "lost/won", "closed", "unk/lq"]
    table = Table(
        *columns,
        title=f"robustness matrix ({report['library']}; acc: known and right; Δ: points vs native; "
        "lost/won: spectra right only natively / only rendered; closed: candidate right; "
        "unk/lq: unknown / low quality)",
    )
    for convention in [NATIVE, *(c["name"] for c in report["conventions"])]:
        cells = [convention]
        for test in sets.values():
            entry = test["scores"][convention]
            delta = entry.get("delta_points")
            colour = "" if delta is None or entry["within_tolerance"] else "[red]"
            cells += [
                f"{entry['accuracy']:.3f}",
                "" if delta is None else f"{colour}{delta:+.1f}",
                f"{entry['lost']}/{entry['gained']}" if "lost" in entry else "",
                f"{entry['closed_set_accuracy']:.3f}",
                f"{entry['rejected']:.0%}/{entry['low_quality']:.0%}",
            ]
        table.add_row(*cells)
    table.columns[0].no_wrap = True
    console = Console(width=None if sys.stdout.isatty() else 150)  # a file or pipe gets the whole table
    console.print(table)
    for name, test in sets.items():
        note = f"; {test['subsample']}" if test["subsample"] else ""
        console.print(
            f"{name}: {test['n_scored']} of {test['n_rendered']} spectra scored "
            f"({test['n_skipped']} with a class the library lacks){note}"
        )
    missed = shortfalls(report)
    total = sum(len(test["scores"]) - 1 for test in sets.values())
    console.print(
        f"{total - len(missed)} of {total} renderings within {report['tolerance_points']:g} point "
        f"of native accuracy ({report['seconds']:.0f} s)"
    )
    for name, convention, delta in missed:
        entry = sets[name]["scores"][convention]
        console.print(
            f"  {name} {convention}: {delta:+.1f} points, {entry['lost']} spectra lost and "
            f"{entry['gained']} gained (exact McNemar p "
            f"{'< 0.001' if entry['p'] < 0.001 else format(entry['p'], '.2g')})"
        )


def _study_name(source: str) -> str:
    """The name of a study's files: the folder of ``DIR`` or ``DIR@key=value``."""
    return Path(source.split("@")[0]).name


def _print_study(study: Study, *, title: str) -> None:
    table = Table("member", "N", "accuracy", "macro precision", "macro recall", "train s", title=title)
    for member in study.members:
        for p in [*study.curve(member), study.reference(member)]:
            table.add_row(
                member,
                f"CV, {study.cv_folds} folds" if p.n == 0 else str(p.n),
                f"{p.accuracy:.4f}",
                f"{p.macro_precision:.4f}",
                f"{p.macro_recall:.4f}",
                f"{p.seconds_train:.3f}",
            )
    Console().print(table)


def _against_recipe(reports: dict[str, Any]) -> dict[str, Any]:
    """Each member's errors and macro-F1 against Open Specy's recipe's (errors: see ``CrossSourceReport``)."""
    from engine.analysis.evaluate import RECIPE

    recipe = reports[RECIPE]
    return {
        member: {
            "errors": report.errors,
            "recipe_errors": recipe.errors,
            "errors_ratio": report.errors / recipe.errors if recipe.errors else None,
            "macro_f1": report.macro_f1,
            "recipe_macro_f1": recipe.macro_f1,
            "false_reject_rate": report.false_reject_rate,
        }
        for member, report in reports.items()
        if member != RECIPE
    }


def _print_cross_source(s: dict[str, Any]) -> None:
    """The summary's tables: the scores and the per-class recall of each member, then leave-one-class-out."""
    console = Console()
    members: dict[str, dict[str, Any]] = s["members"]
    table = Table("metric", *members, title="cross-source evaluation")
    for key in (
        "n_test",
        "n_in_library",
        "accuracy",
        "macro_precision",
        "macro_recall",
        "macro_f1",
        "family_accuracy",
        "false_reject_rate",
        "errors",
        "accepted_accuracy",
        "out_of_library",
        "out_of_library_unknown_rate",
        "low_quality",
        "ece",
        "ece_in_library",
        "ece_candidates",
        "ece_vote_share",
        "accuracy_consistent",
        "errors_consistent",
        "ece_consistent",
        "seconds_build",
        "seconds_classify",
    ):
        values = [m[key] for m in members.values()]
        table.add_row(key, *(f"{v:.4f}" if isinstance(v, float) else str(v) for v in values))
        if key == "ece":
            table.add_row(
                "ece 95 % interval",
                *(f"{m[key + '_interval'][0]:.3f}-{m[key + '_interval'][1]:.3f}" for m in members.values()),
            )
    console.print(table)
    recall = Table("class", *members, title="per-class recall")
    for label in s["per_class_recall"]:
        recall.add_row(label, *(f"{m['per_class_recall'][label]:.3f}" for m in members.values()))
    console.print(recall)
    if s["contradicted"]:
        pairs = ", ".join(f"{pair}: {n}" for pair, n in s["contradicted"].items())
        console.print(
            f"{sum(s['contradicted'].values())} test spectra look like another class of their own set,"
            f" not their label's ({pairs}); the *_consistent rows score the others"
        )
    for member, versus in s.get("against_recipe", {}).items():
        ratio = versus["errors_ratio"]
        console.print(
            f"{member} against Open Specy's recipe: {versus['errors']} errors"
            f" against {versus['recipe_errors']}"
            f" ({'n/a' if ratio is None else f'{ratio:.2f}x'}; a rejected known spectrum counts as an error),"
            f" macro-F1 {versus['macro_f1']:.3f} against {versus['recipe_macro_f1']:.3f}"
        )
    for member, report in members.items():
        if report.get("disagreement"):
            shares = ", ".join(f"{kind} {d} of {n}" for kind, (d, n) in report["disagreement"].items())
            console.print(f"{member}: the CNN disagreed with candidates past their threshold: {shares}")
    for grouping in ("class", "family"):
        if f"leave_one_{grouping}_out" in s:
            _print_leave_one_out(s[f"leave_one_{grouping}_out"], grouping)


def _print_leave_one_out(held: dict[str, Any], grouping: str) -> None:
    """One row per held-out class or family, then the pooled row."""
    columns = [f"held-out {grouping}", "test spectra", "called not known", "known-class rejected"]
    if grouping == "family":
        columns.append("classes removed")
    t = Table(*columns, title=f"leave one {grouping} out")
    for group, rate in held["unknown_rate"].items():
        removed = held["removed_classes"].get(group, [])
        t.add_row(
            group,
            str(held["n_held_out"][group]),
            f"{rate:.3f}",
            f"{held['known_reject_rate'][group]:.3f}",
            *([str(len(removed))] if grouping == "family" else []),
        )
    t.add_row(
        "pooled",
        str(sum(held["n_held_out"].values())),
        f"{held['mean_unknown_rate']:.3f}",
        f"{held['mean_known_reject_rate']:.3f}",
    )
    Console().print(t)


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


def _members(text: str, allowed: tuple[str, ...] = ("subknn", "cnn")) -> tuple[str, ...]:
    """``--study-members`` (and, with ``served`` allowed, ``--members``): comma-separated names."""
    from engine.analysis.evaluate import check_members

    try:
        return check_members([m.strip() for m in text.split(",") if m.strip()], allowed)
    except ValueError as exc:
        raise argparse.ArgumentTypeError(str(exc)) from exc


def _cross_source_members(text: str) -> tuple[str, ...]:
    return _members(text, ("subknn", "cnn", "served"))


def add_parsers(sub: Any) -> None:
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
    p.add_argument(
        "--members",
        type=_cross_source_members,
        default="subknn",
        metavar="M[,M]",
        help="who decides in the cross-source evaluation: subknn (default), cnn (the CNN member trained "
        "as the daemon's challenger trains it: a minute or two on a CPU thread), served (the kNN with "
        "that CNN beside it, as the daemon serves them), or several, scored side by side; --loco and "
        "--lofo build the first",
    )
    p.add_argument(
        "--loco", action="store_true", help="also run leave-one-class-out on the test set (the kNN)"
    )
    p.add_argument(
        "--lofo",
        action="store_true",
        help="also hold out whole polymer families (styrenics, polyamides, polyesters...) in turn",
    )
    p.add_argument(
        "--r-floor",
        type=float,
        default=None,
        metavar="R",
        help="the lowest acceptance threshold on the best r of any class (the model's r_floor; "
        "default: the served model's)",
    )
    p.add_argument(
        "--disagreement-r",
        type=float,
        default=None,
        metavar="R",
        help="with --members served: a candidate the CNN disagrees with is accepted only at a best r of at "
        "least R (the model's disagreement_r; a value above 1 turns the veto off; default: the served "
        "model's)",
    )
    p.add_argument(
        "--min-confidence",
        type=float,
        default=None,
        metavar="P",
        help="a candidate whose confidence is below P comes out unknown (the model's min_confidence; "
        "default: the served model's, none)",
    )
    p.add_argument(
        "--baseline",
        choices=("openspecy", "none"),
        default="openspecy",
        help="score Open Specy's recipe (SG derivative, min-max, top-1 Pearson r) beside the model on the "
        "same data (default), or none",
    )
    p.add_argument(
        "--pipeline",
        default=None,
        help="preprocessing pipeline of the library (default, openspecy, baseline, raman; "
        "unset: default for IR, raman for Raman)",
    )
    p.add_argument("--study", action="append", metavar="DIR", help="the KWR study protocol on a labelled set")
    p.add_argument(
        "--study-members",
        type=_members,
        default="subknn,cnn",
        metavar="M[,M]",
        help="models the study trains: subknn, cnn or both (default; the CNN takes minutes)",
    )
    p.add_argument(
        "--aging",
        action="append",
        metavar="DIR",
        help="carbonyl index distributions, pristine vs environmental (meta.csv 'library')",
    )
    p.add_argument(
        "--conventions",
        action="store_true",
        help="the robustness matrix: each --test set rendered as instrument files in every convention "
        "labs use (%%T, T, absorbance, headers, decimal comma, range cuts, resolutions), identified and "
        "scored against the native form; the model is the bundled library's unless --library",
    )
    p.add_argument("--out", default="artifacts/evaluate", help="folder for the PNG and JSON reports")
    p.set_defaults(func=cmd_evaluate)
