"""The figures of the analyses, drawn with matplotlib (Agg, no display needed).

- :func:`plot_confusion`: a cross-source evaluation's confusion matrix
  (:func:`engine.analysis.evaluate.cross_source`);
- :func:`plot_reliability`: its reliability diagram, confidence against the
  share right (:mod:`engine.analysis.reliability`);
- :func:`plot_study`: the study protocol's scores and training times
  (:func:`engine.analysis.evaluate.study`);
- :func:`plot_conventions`: accuracy per convention of the robustness matrix
  (:func:`engine.analysis.robustness.conventions_matrix`);
- :func:`plot_distributions`: an aging index per polymer, pristine beside
  environmental (:mod:`engine.analysis.aging_report`).

matplotlib is imported when a figure is drawn, not with this module.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from engine.analysis.aging_report import ENVIRONMENTAL, PRISTINE, compare_groups
from engine.analysis.renderings import NATIVE
from engine.core.aging import INDICES

if TYPE_CHECKING:
    from engine.analysis.evaluate import CrossSourceReport, Study

__all__ = ["plot_confusion", "plot_conventions", "plot_distributions", "plot_reliability", "plot_study"]


def _pyplot() -> Any:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(plt: Any, fig: Any, path: str | Path, **savefig: Any) -> Path:
    """Write ``fig`` to ``path`` and close it; the path written."""
    path = Path(path)
    fig.savefig(path, **savefig)
    plt.close(fig)
    return path


# -- cross-source evaluation and the study --------------------------------------------------------


def plot_confusion(report: CrossSourceReport, path: str | Path, *, title: str) -> Path:
    """The served outcomes per true class, rows normalised, counts annotated.

    Every test spectrum is counted once: under its label, ``other`` (a label of
    no test class), ``unknown`` or ``low quality``; a row's count is in its name.
    Lines set apart the outcome columns and the row of classes the library lacks.
    """
    plt = _pyplot()
    rows, columns = report.confusion_rows, report.confusion_columns
    cm = np.asarray(report.confusion, dtype=float).reshape(len(rows), len(columns))
    n_classes = len(report.classes)
    fig, ax = plt.subplots(figsize=(2.0 + 0.42 * len(columns), 1.4 + 0.42 * len(rows)), dpi=120)
    counts = cm.sum(axis=1, keepdims=True)
    shares = cm / np.maximum(counts, 1)
    ax.imshow(shares, cmap="Blues", vmin=0, vmax=1, aspect="auto")
    for i, j in zip(*np.nonzero(cm), strict=True):
        ax.text(
            j,
            i,
            int(cm[i, j]),
            ha="center",
            va="center",
            fontsize=7,
            color="white" if shares[i, j] > 0.5 else "black",
        )
    ax.axvline(n_classes - 0.5, color="grey", lw=0.8)
    if len(rows) > n_classes:
        ax.axhline(n_classes - 0.5, color="grey", lw=0.8)
    ax.set_xticks(range(len(columns)), columns, rotation=90, fontsize=8)
    ax.set_yticks(
        range(len(rows)), [f"{r} ({int(n)})" for r, n in zip(rows, counts[:, 0], strict=True)], fontsize=8
    )
    ax.set_xlabel("outcome")
    ax.set_ylabel("true class (spectra)")
    right = int(np.trace(cm[:n_classes, :n_classes]))
    ax.set_title(
        f"{title}\nclosed-set accuracy {report.accuracy:.3f}, macro-F1 {report.macro_f1:.3f}; "
        f"known & right {right} of {int(cm.sum())}",
        fontsize=9,
    )
    fig.tight_layout()
    return _save(plt, fig, path)


def plot_reliability(report: CrossSourceReport, path: str | Path, *, title: str) -> Path:
    """Confidence against the share right: bars for the labels given; lines for the labels given to
    spectra of classes the library holds, and for every candidate judged (``known`` or ``unknown``).

    The dashed diagonal is a perfectly calibrated model; the lower panel counts
    the labels given per bin (log scale: most sit near 1). The legend gives each ECE.
    """
    plt = _pyplot()
    given = report.reliability
    fig, (top, bottom) = plt.subplots(
        2, 1, figsize=(5.0, 6.2), dpi=120, sharex=True, gridspec_kw={"height_ratios": [3, 1]}
    )
    centres = [(b.lower + b.upper) / 2 for b in given.bins]
    width = given.bins[0].upper - given.bins[0].lower if given.bins else 0.1
    top.plot([0, 1], [0, 1], ls="--", color="grey", lw=1, label="calibrated")
    top.bar(
        centres,
        [b.accuracy or 0.0 for b in given.bins],
        width=width * 0.9,
        color="C0",
        alpha=0.75,
        label=f"labels given (ECE {given.ece:.3f}, n {given.n})",
    )
    for curve, name, style in (
        (report.reliability_in_library, "labels given, class in library", ("o-", "C2")),
        (report.reliability_candidates, "every candidate", ("s:", "C3")),
    ):
        shown = [b for b in curve.bins if b.n]
        top.plot(
            [b.confidence for b in shown],
            [b.accuracy for b in shown],
            style[0],
            color=style[1],
            ms=4,
            label=f"{name} (ECE {curve.ece:.3f}, n {curve.n})",
        )
    top.set_xlim(0, 1)
    top.set_ylim(0, 1.42)  # the band above 1 holds the legend, clear of the bars
    top.set_yticks(np.linspace(0, 1, 6))
    top.set_ylabel("share right")
    top.grid(alpha=0.3)
    top.legend(fontsize=7, loc="upper left")
    top.set_title(f"{title}\nconfidence against the share right", fontsize=9)
    bottom.bar(centres, [b.n for b in given.bins], width=width * 0.9, color="C0", alpha=0.75)
    bottom.set_yscale("log")
    bottom.set_ylim(0.8, max([b.n for b in given.bins], default=1) * 2.0)
    bottom.set_xlabel("confidence")
    bottom.set_ylabel("labels")
    bottom.grid(alpha=0.3, which="both")
    fig.tight_layout()
    return _save(plt, fig, path)


#: How each member is drawn in the study's figures: its name and line style.
_MEMBER_STYLE: dict[str, tuple[str, dict[str, Any]]] = {
    "subknn": ("subspace kNN", {"color": "C0", "ls": "-", "marker": "o"}),
    "cnn": ("polar CNN", {"color": "C3", "ls": "--", "marker": "s"}),
}


def plot_study(
    study: Study, scores_path: str | Path, time_path: str | Path, *, title: str
) -> tuple[Path, Path]:
    """The study's two figures, every member side by side: scores against N, training time against size.

    The first has one panel per score (accuracy, macro precision, macro
    recall), a line per member and, dotted in the member's colour, its
    cross-validated reference; the second the training time against the
    number of training spectra, on a log axis (the members differ by orders
    of magnitude).
    """
    plt = _pyplot()
    fig, axes = plt.subplots(1, 3, figsize=(13, 4), dpi=120, sharey=True)
    for ax, attr in zip(axes, ("accuracy", "macro_precision", "macro_recall"), strict=True):
        for member in study.members:
            name, line = _MEMBER_STYLE[member]
            curve = study.curve(member)
            ax.plot([p.n for p in curve], [getattr(p, attr) for p in curve], **line, label=name)
            ax.axhline(
                getattr(study.reference(member), attr),
                color=line["color"],
                ls=":",
                label=f"{name}, {study.cv_folds}-fold CV on originals",
            )
        ax.set_title(attr.replace("_", " "))
        ax.set_xlabel("synthetic spectra per class (N)")
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("score on the original spectra")
    axes[-1].legend(loc="lower right", fontsize=7)
    fig.suptitle(f"{title} ({study.n_originals} originals, {study.n_classes} classes)")
    fig.tight_layout()
    scores = _save(plt, fig, scores_path)

    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for member in study.members:
        name, line = _MEMBER_STYLE[member]
        curve = study.curve(member)
        ax.plot([p.n_train for p in curve], [p.seconds_train for p in curve], **line, label=name)
        for p in curve:
            ax.annotate(
                f"N={p.n}",
                (p.n_train, p.seconds_train),
                xytext=(3, 4),
                textcoords="offset points",
                fontsize=6,
                color=line["color"],
            )
    ax.set_yscale("log")
    ax.set_xlabel("training spectra (N x classes)")
    ax.set_ylabel("training time (s, log scale)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    ax.set_title(f"{title}, training time", fontsize=10)
    fig.tight_layout()
    return scores, _save(plt, fig, time_path)


# -- the robustness matrix ------------------------------------------------------------------------


def plot_conventions(report: dict[str, Any], path: str | Path, *, title: str) -> Path:
    """Accuracy per convention, a bar per test set, native as a dashed line in the set's colour.

    Crosses mark the closed-set accuracy (the right candidate, accepted or not).
    """
    plt = _pyplot()
    names = [c["name"] for c in report["conventions"]]
    sets = list(report["sets"])
    width = 0.8 / max(len(sets), 1)
    fig, ax = plt.subplots(figsize=(max(10.0, 0.6 * len(names) + 5.0), 5.0), dpi=120)
    positions = np.arange(len(names))
    for k, name in enumerate(sets):
        scores = report["sets"][name]["scores"]
        colour = f"C{k}"
        offset = positions - 0.4 + width * (k + 0.5)
        ax.bar(offset, [scores[c]["accuracy"] for c in names], width, color=colour, alpha=0.8, label=name)
        ax.plot(
            offset,
            [scores[c]["closed_set_accuracy"] for c in names],
            "x",
            color="black",
            ms=4,
            label="closed-set accuracy" if k == 0 else None,
        )
        native = scores[NATIVE]["accuracy"]
        ax.axhline(native, color=colour, ls="--", lw=1, label=f"{name}: native {native:.3f}")
    ax.set_xticks(positions, names, rotation=60, ha="right", fontsize=8)
    ax.set_ylim(0.0, 1.05)
    ax.set_ylabel("accuracy (known, right label)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_title(title, fontsize=10)
    fig.tight_layout()
    return _save(plt, fig, path)


# -- aging ----------------------------------------------------------------------------------------


def _format_p(p: float | None) -> str:
    if p is None:
        return "n/a"
    return f"{p:.2g}" if p >= 1e-3 else f"{p:.1e}"


def plot_distributions(
    records: Sequence[Mapping[str, Any]], path: str | Path, *, index: str = "carbonyl"
) -> Path:
    """A PNG of ``index`` per polymer, pristine beside environmental (box and strip plot).

    ``records`` are dicts with ``polymer``, ``group`` (:data:`PRISTINE` or
    :data:`ENVIRONMENTAL`) and the index value (``None`` when not applicable,
    left out). Each panel is one polymer with at least one value; it shows n per
    group and the Mann-Whitney p (one-sided environmental > pristine, and
    two-sided). Returns the path written.
    """
    from matplotlib.patches import Patch

    plt = _pyplot()

    if index not in INDICES:
        raise ValueError(f"unknown index {index!r}; choose one of {', '.join(INDICES)}")
    groups = (PRISTINE, ENVIRONMENTAL)
    colours = {PRISTINE: "#1f77b4", ENVIRONMENTAL: "#d95f02"}
    by_polymer: dict[str, dict[str, list[float | None]]] = {}
    for record in records:
        value = record.get(index)
        if value is None:
            continue
        per_group = by_polymer.setdefault(str(record["polymer"]), {g: [] for g in groups})
        per_group[str(record["group"])].append(value)
    polymers = sorted(by_polymer)
    out = Path(path)
    out.parent.mkdir(parents=True, exist_ok=True)
    n_panels = max(1, len(polymers))
    fig, axes = plt.subplots(1, n_panels, figsize=(4.6 * n_panels, 5.2), squeeze=False)
    rng = np.random.default_rng(0)
    for ax, polymer in zip(axes[0], polymers, strict=False):
        data = [np.asarray([v for v in by_polymer[polymer][g] if v is not None], dtype=float) for g in groups]
        stats = compare_groups(by_polymer[polymer][PRISTINE], by_polymer[polymer][ENVIRONMENTAL])
        non_empty = [i for i, d in enumerate(data) if d.size]
        boxes = ax.boxplot(
            [data[i] for i in non_empty],
            positions=non_empty,
            widths=0.5,
            showfliers=False,
            patch_artist=True,
            medianprops={"color": "black"},
        )
        for patch, i in zip(boxes["boxes"], non_empty, strict=True):
            patch.set_facecolor(colours[groups[i]])
            patch.set_alpha(0.35)
        for i, d in enumerate(data):
            jitter = rng.uniform(-0.15, 0.15, d.size)
            ax.scatter(i + jitter, d, s=14, color=colours[groups[i]], alpha=0.8, zorder=3)
        ax.set_xticks(range(len(groups)))
        ax.set_xticklabels([f"{g}\nn = {d.size}" for g, d in zip(groups, data, strict=True)])
        ax.axhline(0.0, color="grey", linewidth=0.6, linestyle=":")
        u_text = "n/a" if stats["u"] is None else f"{stats['u']:.0f}"
        ax.set_title(
            f"{polymer}\nMann-Whitney U = {u_text}, p(env > pristine) = {_format_p(stats['p_greater'])}\n"
            f"two-sided p = {_format_p(stats['p_two_sided'])}",
            fontsize=10,
        )
        ax.set_ylabel(f"{index} index (band area / reference band area)")
        ax.grid(axis="y", alpha=0.3)
    if not polymers:
        axes[0][0].text(0.5, 0.5, f"no particle has an applicable {index} index", ha="center", va="center")
        axes[0][0].set_axis_off()
    handles = [Patch(facecolor=colours[g], alpha=0.6, label=g) for g in groups]
    axes[0][0].legend(handles=handles, loc="upper left", fontsize=9)
    fig.suptitle(f"{index.capitalize()} index per polymer, pristine vs environmental particles (SAUB, FTIR)")
    fig.tight_layout()
    return _save(plt, fig, out, dpi=120)
