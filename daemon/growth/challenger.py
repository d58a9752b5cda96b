"""The CNN member as a scheduled challenger: trained in its own process, promoted only when no worse.

:func:`train_challenger` trains a :class:`~engine.models.cnn.PolarCNN` on the
library's preprocessed spectra plus synthetic spectra (the study's generator,
for classes with at least two training references). A stratified 20 % of the
*real* references of every class with at least five of them is held out and
never trained on. On those the report gives the CNN's accuracy and macro-F1,
the subspace kNN's (same training rows, same synthetic spectra), and the
**weight the CNN earns**: the smallest ``w`` of 0, 0.1, ..., 1 whose fusion
``(1 - w) * kNN + w * CNN`` is the most accurate (:func:`fusion_weight`; 0
when the CNN makes nothing better). The network is written as an ONNX file
(:func:`~engine.models.cnn.runtime.export_onnx`) that holds its classes, its
weight and the report, with the library's content hash; the report also as JSON.

``python -m daemon.growth.challenger --library DIR --out FILE --report FILE`` runs it
in a separate process at nice 10 on one torch thread, so the daemon's
classifier keeps its CPU.

:class:`ChallengerScheduler` is what the daemon's main loop drives for one
library: it starts that process every ``cnn.retrain_hours`` hours, after
``cnn.retrain_after_confirmations`` confirmed spectra, when the drift watch
asks for a retrain, or at once when no CNN is served (one process at a time,
:class:`subprocess.Popen`, never waited on), polls it each tick, and on exit
judges it: promote iff the challenger's fused held-out accuracy (at its
weight) is at least the served CNN's on the same held-out references (the
challenger process scores the champion there too); with no CNN served the bar
is the subspace kNN's alone, which a weight of 0 always reaches. The CNN
kept in the library's folder or shipped beside the bundled library (``cnn.onnx``,
``make cnn``) is served at start when it was trained on the served library's content.
:class:`Challengers` holds one scheduler per library (the IR one, the Raman
one), one training at a time.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any, Protocol

import numpy as np
import numpy.typing as npt

from engine.core.augment import class_seed, synthesize_class
from engine.core.library import DEFAULT_LIBRARIES, ReferenceLibrary
from engine.core.storage import atomic_write_bytes
from engine.models.cnn.runtime import BESIDE_LIBRARY
from engine.models.served import ModelConfig, align_columns, subspace_knn

__all__ = [
    "CHALLENGER",
    "CHAMPION",
    "ChallengerScheduler",
    "Challengers",
    "fusion_weight",
    "heldout_split",
    "train_challenger",
]

logger = logging.getLogger(__name__)

HELDOUT_FRACTION = 0.2
MIN_REFS_FOR_HELDOUT = 5
#: The weights of the CNN in the fusion that held-out evaluation tries (:func:`fusion_weight`).
FUSION_WEIGHTS = tuple(i / 10 for i in range(11))
CHAMPION = "champion.onnx"
CHALLENGER = "challenger.onnx"


def heldout_split(labels: Sequence[str], *, seed: int) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.int64]]:
    """(train, held-out) row indices: 20 % (at least one) of each class with >= 5 references held out."""
    rng = np.random.default_rng(seed)
    y = np.asarray(labels)
    held: list[int] = []
    for label in dict.fromkeys(y.tolist()):
        rows = np.flatnonzero(y == label)
        if rows.size >= MIN_REFS_FOR_HELDOUT:
            n = max(1, round(HELDOUT_FRACTION * rows.size))
            held.extend(rng.choice(rows, size=n, replace=False).tolist())
    heldout = np.sort(np.asarray(held, dtype=np.int64))
    train = np.setdiff1d(np.arange(y.size, dtype=np.int64), heldout)
    return train, heldout


def _scores(y_true: Sequence[str], y_pred: Sequence[str]) -> tuple[float, float]:
    """Accuracy and macro-F1 over the true classes."""
    t, p = np.asarray(y_true, dtype=object), np.asarray(y_pred, dtype=object)
    if t.size == 0:
        return float("nan"), float("nan")
    accuracy = float(np.mean(t == p))
    f1s = []
    for label in dict.fromkeys(t.tolist()):
        tp = float(np.sum((t == label) & (p == label)))
        fp = float(np.sum((t != label) & (p == label)))
        fn = float(np.sum((t == label) & (p != label)))
        f1s.append(0.0 if tp == 0 else 2 * tp / (2 * tp + fp + fn))
    return accuracy, float(np.mean(f1s))


def fusion_weight(
    knn_proba: npt.NDArray[np.float64],
    cnn_proba: npt.NDArray[np.float64],
    classes: Sequence[str],
    y_true: Sequence[str],
) -> tuple[float, dict[str, float]]:
    """The weight the CNN earns on held-out spectra, and the accuracy of each weight tried.

    ``cnn_proba`` has ``knn_proba``'s columns (:func:`~engine.models.served.align_columns`).
    Of the weights 0, 0.1, ..., 1, the smallest whose fusion ``(1 - w) * knn + w * cnn`` is the
    most accurate: a CNN that changes nothing for the better gets 0.

    >>> knn = np.array([[0.6, 0.4], [0.6, 0.4]]); cnn = np.array([[0.0, 1.0], [1.0, 0.0]])
    >>> fusion_weight(knn, cnn, ["PE", "PP"], ["PP", "PE"])[0]
    0.2
    >>> fusion_weight(knn, cnn, ["PE", "PP"], ["PE", "PE"])[0]
    0.0
    """
    labels, truth = np.asarray(classes, dtype=object), np.asarray(y_true, dtype=object)
    scored = {}
    for w in FUSION_WEIGHTS:
        fused = (1.0 - w) * knn_proba + w * cnn_proba
        scored[f"{w:.1f}"] = float(np.mean(labels[np.argmax(fused, axis=1)] == truth))
    best = max(scored.values())
    return next(float(w) for w in scored if scored[w] == best), scored


def train_challenger(
    library_dir: str | Path,
    out_path: str | Path,
    *,
    config: ModelConfig | None = None,
    seed: int = 0,
    n_threads: int = 1,
    report_path: str | Path | None = None,
    champion: str | Path | None = None,
    **cnn_params: Any,
) -> dict[str, Any]:
    """Train a CNN challenger on the library, write it as ONNX (and its report); return the report.

    ``champion``: the served CNN's ONNX file, scored on the same held-out references
    (``champion_fused_accuracy``). ``cnn_params`` set the network (``max_epochs``,
    ``image_size``, ``width``, ``depth``); the others keep :class:`~engine.models.cnn.PolarCNN`'s
    defaults.
    """
    from engine.models.cnn import PolarCNN, ServedCNN, export_onnx  # torch only where a CNN is trained

    started = time.perf_counter()
    cfg = config or ModelConfig()
    library = ReferenceLibrary.load(library_dir)
    X = np.asarray(library.preprocessed, dtype=np.float32)
    y = [str(label) for label in library.labels]
    train, heldout = heldout_split(y, seed=seed)
    X_train, y_train = X[train], [y[i] for i in train]
    blocks, synthetic_labels = [], []
    y_train_arr = np.asarray(y_train)
    for label in dict.fromkeys(y_train):
        rows = X_train[y_train_arr == label]
        if rows.shape[0] >= 2 and cfg.n_synthetic > 0:
            blocks.append(synthesize_class(rows, cfg.n_synthetic, seed=class_seed(seed, label)))
            synthetic_labels.extend([label] * cfg.n_synthetic)
    X_fit = np.vstack([X_train, *blocks]) if blocks else X_train
    y_fit = [*y_train, *synthetic_labels]
    cnn = PolarCNN(**cnn_params, n_synthetic=0, n_threads=n_threads, seed=seed).fit(X_fit, y_fit)
    params = cnn.get_params()
    y_held = [y[i] for i in heldout]
    report: dict[str, Any] = {
        "accuracy": float("nan"),
        "macro_f1": float("nan"),
        "subknn_accuracy": float("nan"),
        "subknn_macro_f1": float("nan"),
        "weight": 0.0,
        "fused_accuracy": float("nan"),
        "n_train": int(X_fit.shape[0]),
        "n_references_train": int(train.size),
        "n_heldout": int(heldout.size),
        "library_version": library.version,
        "library_hash": library.content_hash,
        "technique": library.technique,
        "epochs": int(cnn.n_epochs_),
        "seed": seed,
        "config": {key: params[key] for key in ("max_epochs", "image_size", "width", "depth")},
    }
    if heldout.size:
        knn = subspace_knn(cfg)
        knn.fit(X_fit, y_fit)
        classes = [str(c) for c in knn.classes_]
        knn_proba = knn.predict_proba(X[heldout])
        cnn_proba = align_columns(cnn.predict_proba(X[heldout]), [str(c) for c in cnn.classes_], classes)
        report["accuracy"], report["macro_f1"] = _scores(y_held, [str(v) for v in cnn.predict(X[heldout])])
        knn_pred = [classes[i] for i in np.argmax(knn_proba, axis=1)]
        report["subknn_accuracy"], report["subknn_macro_f1"] = _scores(y_held, knn_pred)
        report["weight"], report["weights"] = fusion_weight(knn_proba, cnn_proba, classes, y_held)
        report["fused_accuracy"] = report["weights"][f"{report['weight']:.1f}"]
        if champion is not None and Path(champion).exists():
            served = ServedCNN.load(champion)
            champion_proba = align_columns(served.predict_proba(X[heldout]), served.classes_, classes)
            fused = (1.0 - served.weight) * knn_proba + served.weight * champion_proba
            report["champion_fused_accuracy"] = _scores(y_held, [classes[i] for i in np.argmax(fused, 1)])[0]
    report["seconds"] = round(time.perf_counter() - started, 3)
    export_onnx(cnn, out_path, metadata={"weight": report["weight"], "report": report})
    if report_path is not None:
        atomic_write_bytes(report_path, json.dumps(report, indent=2).encode("utf-8"))
    return report


# ---------------------------------------------------------------------------------------------- scheduling


class _Settings(Protocol):
    @property
    def retrain_hours(self) -> float: ...
    @property
    def retrain_after_confirmations(self) -> int: ...
    def estimator_params(self) -> dict[str, int]: ...


class ChallengerScheduler:
    """Starts, watches and judges challenger trainings for one library; :meth:`poll` once per tick.

    ``command`` builds the process's argument list from (library, checkpoint,
    report); by default it is ``python -m daemon.growth.challenger`` with the
    settings (and ``--champion`` when a CNN is served). ``get_model`` returns the
    model of this scheduler's library (``None`` when there is none).
    ``confirmations`` reads the running count of confirmed spectra;
    ``retrain_requested`` is the drift watch's event. ``shipped``: CNN files
    kept beside libraries (``cnn.onnx``); the first trained on the served
    library's content becomes the champion at once (:func:`~engine.models.cnn.cnn_for`).
    """

    def __init__(
        self,
        *,
        settings: _Settings,
        work_dir: Path,
        library_dir: Callable[[], Path],
        model_config: ModelConfig,
        get_model: Callable[[], Any],
        lock: Any,
        metrics: Any,
        confirmations: Callable[[], int],
        retrain_requested: Any = None,
        clock: Callable[[], float] = time.time,
        command: Callable[[Path, Path, Path], list[str]] | None = None,
        shipped: Sequence[Path] = (),
        technique: str = "ir",
    ) -> None:
        self.settings = settings
        self.work_dir = Path(work_dir)
        self.work_dir.mkdir(parents=True, exist_ok=True)
        self.library_dir = library_dir
        self.model_config = model_config
        self.get_model = get_model
        self.lock = lock
        self.metrics = metrics
        self.confirmations = confirmations
        self.retrain_requested = retrain_requested
        self.clock = clock
        self.command = command or self._default_command
        self.technique = technique
        self.process: subprocess.Popen[bytes] | None = None
        self._started_at = 0.0
        self._last_start = clock()
        self._confirmations_base = confirmations()
        self.last_outcome: str | None = None
        self.last_report: dict[str, Any] | None = None
        self.champion_cnn: Any = None
        #: The served CNN and the one in training, each with its report.
        self.champion_path, self.challenger_path = self.work_dir / CHAMPION, self.work_dir / CHALLENGER
        self.champion_report_path = self.work_dir / "champion.json"
        self.challenger_report_path = self.work_dir / "challenger.json"
        if not self.champion_path.exists():
            self._load_champion(self._seed_from(shipped))
        else:
            self._load_champion()
        #: A library with no CNN gets its first one trained at the first tick.
        self._wants_first = self.champion_cnn is None

    def _default_command(self, library: Path, out: Path, report: Path) -> list[str]:
        s = self.settings
        champion = ["--champion", str(self.champion_path)] if self.champion_cnn is not None else []
        return [
            sys.executable, "-m", "daemon.growth.challenger",
            "--library", str(library), "--out", str(out), "--report", str(report),
            "--cnn-params", json.dumps(s.estimator_params()),
            "--model-config", json.dumps(asdict(self.model_config)),
            *champion,
        ]  # fmt: skip

    # -- the champion -----------------------------------------------------------------------

    def _seed_from(self, shipped: Sequence[Path]) -> Any:
        """Make a shipped CNN the champion when it was trained on the served library's content;
        return it (None when none was)."""
        model = self.get_model()
        if model is None:
            return None
        try:
            from engine.models.cnn import cnn_for

            found = cnn_for(model.library, shipped)
            if found is None:
                return None
            found.save(self.champion_path)
            report = json.dumps(found.metadata["report"], indent=2).encode("utf-8")
            atomic_write_bytes(self.champion_report_path, report)
        except Exception:
            logger.exception("cannot use the shipped CNN among %s", [str(p) for p in shipped])
            return None
        return found

    def _load_champion(self, seeded: Any = None) -> None:
        """A champion kept from an earlier run, or ``seeded`` from the shipped CNN, is served at start."""
        if not (self.champion_path.exists() and self.champion_report_path.exists()):
            return
        try:
            from engine.models.cnn import ServedCNN

            self.champion_cnn = seeded if seeded is not None else ServedCNN.load(self.champion_path)
        except Exception:
            logger.exception("cannot load the CNN champion %s; serving without it", self.champion_path)
            return
        self.attach(self.get_model())
        with contextlib.suppress(OSError, ValueError, KeyError):
            self._publish_accuracy(json.loads(self.champion_report_path.read_text()))
        logger.info("CNN champion %s loaded (weight %.1f)", self.champion_path, self.champion_cnn.weight)

    def _publish_accuracy(self, report: dict[str, Any]) -> None:
        """The members' held-out accuracy (the served library's scheduler only: one gauge per member)."""
        if self.metrics is None:
            return
        self.metrics.set_member_accuracy("cnn", float(report["accuracy"]))
        if np.isfinite(float(report.get("subknn_accuracy", float("nan")))):
            self.metrics.set_member_accuracy("subknn", float(report["subknn_accuracy"]))

    @classmethod
    def for_daemon(cls, daemon: Any, technique: str = "ir") -> ChallengerScheduler:
        """The scheduler of a running daemon's ``technique`` library: its CNN settings, growth and model."""
        growth, models = daemon.growth, daemon.models
        served = technique == models.get().technique
        folder = "cnn" if served else f"cnn-{technique}"

        def library_dir() -> Path:
            return Path(growth.library_dir if served else growth.companion_dirs[technique])

        return cls(
            settings=daemon.config.cnn,
            work_dir=daemon.config.state_dir / folder,
            library_dir=library_dir,
            model_config=growth.model_config,
            get_model=lambda: models.get().model_for(technique),
            lock=models.lock,
            metrics=daemon.metrics if served else None,
            confirmations=lambda: growth.confirmations,
            retrain_requested=daemon.drift.retrain_requested if served else None,
            clock=daemon.clock,
            shipped=[library_dir() / BESIDE_LIBRARY, DEFAULT_LIBRARIES[technique] / BESIDE_LIBRARY],
            technique=technique,
        )

    def attach(self, model: Any) -> None:
        """Serve the champion (if any) on ``model``, e.g. after a rebuilt model was swapped in."""
        if self.champion_cnn is not None and model is not None and getattr(model, "cnn_", None) is None:
            try:
                with self.lock:
                    model.set_cnn(self.champion_cnn)
            except ValueError:
                logger.exception("the CNN champion %s does not fit the served library", self.champion_path)

    def champion_accuracy(self, report: dict[str, Any]) -> float:
        """What a challenger must reach: the served CNN's fused accuracy on the challenger's held-out
        references, else (no CNN served) the kNN's alone there."""
        model = self.get_model()
        if getattr(model, "cnn_", None) is not None and "champion_fused_accuracy" in report:
            return float(report["champion_fused_accuracy"])
        return float(report["subknn_accuracy"])

    # -- the loop -----------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self.process is not None

    def due(self) -> str | None:
        """Why a challenger should start now, or ``None``."""
        if self._wants_first:
            return "no_champion"
        if self.clock() - self._last_start >= self.settings.retrain_hours * 3600.0:
            return "schedule"
        if self.confirmations() - self._confirmations_base >= self.settings.retrain_after_confirmations:
            return "confirmations"
        if self.retrain_requested is not None and self.retrain_requested.is_set():
            return "drift"
        return None

    def poll(self, *, may_start: bool = True) -> str | None:
        """Start a due challenger (if ``may_start``) or judge a finished one; return the outcome when
        one finished."""
        if self.process is not None:
            if self.process.poll() is None:
                return None
            return self._finish()
        reason = self.due() if may_start else None
        if reason is not None:
            self.start(reason)
        return None

    def start(self, reason: str = "asked") -> None:
        if self.process is not None:
            return
        self._wants_first = False
        self._last_start = self.clock()
        self._confirmations_base = self.confirmations()
        if self.retrain_requested is not None:
            self.retrain_requested.clear()
        for path in (self.challenger_path, self.challenger_report_path):
            path.unlink(missing_ok=True)
        argv = self.command(self.library_dir(), self.challenger_path, self.challenger_report_path)
        log = (self.work_dir / "challenger.log").open("wb")
        try:
            self.process = subprocess.Popen(
                argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL, cwd=_repo_root()
            )
        except OSError:
            logger.exception("cannot start the CNN challenger")
            self._count("failed", seconds=0.0)
            self.last_outcome = "failed"
            return
        finally:
            log.close()
        self._started_at = time.monotonic()
        logger.info("CNN challenger (%s) started (%s), pid %d", self.technique, reason, self.process.pid)

    def _count(self, outcome: str, *, seconds: float) -> None:
        if self.metrics is not None:
            self.metrics.retrain_finished(outcome, seconds=seconds)

    def _finish(self) -> str:
        assert self.process is not None
        rc = self.process.returncode
        self.process = None
        seconds = time.monotonic() - self._started_at
        try:
            if rc != 0:
                log = self.work_dir / "challenger.log"
                raise RuntimeError(f"challenger process exited with {rc}; see {log}")
            report = json.loads(self.challenger_report_path.read_text())
            self.last_report = report
            accuracy = float(report.get("fused_accuracy", report["accuracy"]))
            bar = self.champion_accuracy(report)
            if np.isfinite(accuracy) and np.isfinite(bar) and accuracy >= bar:
                self._promote(report)
                outcome = "promoted"
            else:
                outcome = "kept_champion"
            logger.info(
                "CNN challenger (%s) %s: held-out accuracy %.3f at weight %.1f, champion %.3f (%d held out)",
                self.technique, outcome, accuracy, float(report.get("weight", 0.0)), bar,
                int(report.get("n_heldout", 0)),
            )  # fmt: skip
        except Exception:
            logger.exception("CNN challenger failed; the daemon goes on with the served model")
            outcome = "failed"
        self._count(outcome, seconds=float(seconds))
        self.last_outcome = outcome
        return outcome

    def _promote(self, report: dict[str, Any]) -> None:
        from engine.models.cnn import ServedCNN

        cnn = ServedCNN.load(self.challenger_path)
        model = self.get_model()
        if model is not None:
            with self.lock:
                model.set_cnn(cnn)  # ValueError (another width) leaves the champion served
        self.challenger_path.replace(self.champion_path)
        atomic_write_bytes(self.champion_report_path, json.dumps(report, indent=2).encode("utf-8"))
        self.champion_cnn = cnn
        self._publish_accuracy(report)

    def close(self, timeout: float = 10.0) -> None:
        """Stop a running challenger (the daemon is stopping)."""
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
        self.process = None


class Challengers:
    """The daemon's challenger schedulers, one per library (technique): one training at a time."""

    def __init__(self, schedulers: Sequence[ChallengerScheduler]) -> None:
        self.schedulers = list(schedulers)

    @classmethod
    def for_daemon(cls, daemon: Any) -> Challengers:
        techniques = [daemon.models.get().technique, *daemon.models.get().companions]
        return cls([ChallengerScheduler.for_daemon(daemon, technique) for technique in techniques])

    def of(self, technique: str) -> ChallengerScheduler:
        return next(s for s in self.schedulers if s.technique == technique)

    @property
    def running(self) -> bool:
        return any(s.running for s in self.schedulers)

    def attach(self, model: Any) -> None:
        """Serve each champion on ``model`` (the served model, or its companion of that technique)."""
        for scheduler in self.schedulers:
            scheduler.attach(model.model_for(scheduler.technique))

    def poll(self) -> None:
        for scheduler in self.schedulers:
            scheduler.poll(may_start=not self.running)

    def close(self) -> None:
        for scheduler in self.schedulers:
            scheduler.close()


def _repo_root() -> Path:
    return Path(__file__).resolve().parents[2]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m daemon.growth.challenger", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--library", required=True, type=Path)
    parser.add_argument("--out", required=True, type=Path)
    parser.add_argument("--report", required=True, type=Path)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cnn-params", default="{}", help="PolarCNN settings as JSON, e.g. max_epochs")
    parser.add_argument("--model-config", default="{}", help="ModelConfig fields as JSON")
    parser.add_argument("--champion", type=Path, help="the served CNN (ONNX), scored on the same held-out")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    with contextlib.suppress(OSError):
        os.nice(10)  # the classifier comes first
    import torch

    torch.set_num_threads(1)
    config = ModelConfig(**json.loads(args.model_config))
    report = train_challenger(
        args.library,
        args.out,
        config=config,
        seed=args.seed if args.seed else config.seed,
        report_path=args.report,
        champion=args.champion,
        **json.loads(args.cnn_params),
    )
    logger.info("challenger: %s", json.dumps(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
