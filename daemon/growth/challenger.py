"""The CNN member as a scheduled challenger: trained in its own process, promoted only when no worse.

:func:`train_challenger` trains a :class:`~engine.models.cnn.PolarCNN` on the
library's preprocessed spectra plus synthetic spectra (the study's generator,
for classes with at least two training references). A stratified 20 % of the
*real* references of every class with at least five of them is held out and
never trained on; the report gives the CNN's accuracy and macro-F1 on those,
and the subspace kNN's (same training rows, same synthetic spectra, same
held-out references) for comparison. The checkpoint is written atomically by
:meth:`PolarCNN.save`, the report as JSON.

``python -m daemon.growth.challenger --library DIR --out FILE --report FILE`` runs it
in a separate process at nice 10 on one torch thread, so the daemon's
classifier keeps its CPU.

:class:`ChallengerScheduler` is what the daemon's main loop drives: it starts
that process every ``cnn.retrain_hours`` hours, after
``cnn.retrain_after_confirmations`` confirmed spectra, or when the drift watch
asks for a retrain (one process at a time, :class:`subprocess.Popen`, never
waited on), polls it each tick, and on exit compares the challenger with the
champion: promote iff the challenger's held-out accuracy is at least the
champion's. The champion is the served CNN's own report; while no CNN is
served it is the subspace kNN's accuracy on the same held-out references.
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
from engine.core.library import ReferenceLibrary
from engine.core.storage import atomic_write_bytes
from engine.models.served import ModelConfig, subspace_knn

__all__ = ["CHALLENGER", "CHAMPION", "ChallengerScheduler", "heldout_split", "train_challenger"]

logger = logging.getLogger(__name__)

HELDOUT_FRACTION = 0.2
MIN_REFS_FOR_HELDOUT = 5
CHAMPION = "champion.pt"
CHALLENGER = "challenger.pt"


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


def train_challenger(
    library_dir: str | Path,
    out_path: str | Path,
    *,
    config: ModelConfig | None = None,
    seed: int = 0,
    n_threads: int = 1,
    report_path: str | Path | None = None,
    **cnn_params: Any,
) -> dict[str, Any]:
    """Train a CNN challenger on the library, write its checkpoint (and report); return the report.

    ``cnn_params`` set the network (``max_epochs``, ``image_size``, ``width``, ``depth``);
    the others keep :class:`~engine.models.cnn.PolarCNN`'s defaults.
    """
    from engine.models.cnn import PolarCNN  # torch is imported only where a CNN is trained

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
        "n_train": int(X_fit.shape[0]),
        "n_references_train": int(train.size),
        "n_heldout": int(heldout.size),
        "library_version": library.version,
        "epochs": int(cnn.n_epochs_),
        "seed": seed,
        "config": {key: params[key] for key in ("max_epochs", "image_size", "width", "depth")},
    }
    if heldout.size:
        report["accuracy"], report["macro_f1"] = _scores(y_held, [str(v) for v in cnn.predict(X[heldout])])
        knn = subspace_knn(cfg)
        knn.fit(X_fit, y_fit)
        knn_pred = [str(v) for v in knn.predict(X[heldout])]
        report["subknn_accuracy"], report["subknn_macro_f1"] = _scores(y_held, knn_pred)
    cnn.save(out_path)
    report["seconds"] = round(time.perf_counter() - started, 3)
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
    """Starts, watches and judges challenger trainings for the daemon; :meth:`poll` once per tick.

    ``command`` builds the process's argument list from (library, checkpoint,
    report); by default it is ``python -m daemon.growth.challenger`` with the
    settings. ``confirmations`` reads the running count of confirmed
    spectra; ``retrain_requested`` is the drift watch's event.
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
        self._load_champion()

    def _default_command(self, library: Path, out: Path, report: Path) -> list[str]:
        s = self.settings
        return [
            sys.executable, "-m", "daemon.growth.challenger",
            "--library", str(library), "--out", str(out), "--report", str(report),
            "--cnn-params", json.dumps(s.estimator_params()),
            "--model-config", json.dumps(asdict(self.model_config)),
        ]  # fmt: skip

    # -- the champion -----------------------------------------------------------------------

    def _load_champion(self) -> None:
        """A champion kept from an earlier run is served again at start."""
        if not (self.champion_path.exists() and self.champion_report_path.exists()):
            return
        try:
            from engine.models.cnn import PolarCNN

            self.champion_cnn = PolarCNN.load(self.champion_path)
        except Exception:
            logger.exception("cannot load the CNN champion %s; serving without it", self.champion_path)
            return
        self.attach(self.get_model())
        logger.info("CNN champion %s loaded", self.champion_path)

    @classmethod
    def for_daemon(cls, daemon: Any) -> ChallengerScheduler:
        """The scheduler of a running daemon: its CNN settings, library growth, model, metrics and drift."""
        growth, models = daemon.growth, daemon.models
        return cls(
            settings=daemon.config.cnn,
            work_dir=daemon.config.state_dir / "cnn",
            library_dir=lambda: growth.library_dir,
            model_config=growth.model_config,
            get_model=models.get,
            lock=models.lock,
            metrics=daemon.metrics,
            confirmations=lambda: growth.confirmations,
            retrain_requested=daemon.drift.retrain_requested,
            clock=daemon.clock,
        )

    def attach(self, model: Any) -> None:
        """Serve the champion (if any) on ``model``, e.g. after a rebuilt model was swapped in."""
        if self.champion_cnn is not None and model is not None and getattr(model, "cnn_", None) is None:
            with self.lock:
                model.set_cnn(self.champion_cnn)

    def champion_accuracy(self, report: dict[str, Any]) -> float:
        """What a challenger must reach: the served CNN's held-out accuracy, else the kNN's on its split."""
        model = self.get_model()
        if getattr(model, "cnn_", None) is not None and self.champion_report_path.exists():
            return float(json.loads(self.champion_report_path.read_text())["accuracy"])
        return float(report["subknn_accuracy"])

    # -- the loop -----------------------------------------------------------------------------

    @property
    def running(self) -> bool:
        return self.process is not None

    def due(self) -> str | None:
        """Why a challenger should start now, or ``None``."""
        if self.clock() - self._last_start >= self.settings.retrain_hours * 3600.0:
            return "schedule"
        if self.confirmations() - self._confirmations_base >= self.settings.retrain_after_confirmations:
            return "confirmations"
        if self.retrain_requested is not None and self.retrain_requested.is_set():
            return "drift"
        return None

    def poll(self) -> str | None:
        """Start a due challenger or judge a finished one; return the outcome when one finished."""
        if self.process is not None:
            if self.process.poll() is None:
                return None
            return self._finish()
        reason = self.due()
        if reason is not None:
            self.start(reason)
        return None

    def start(self, reason: str = "asked") -> None:
        if self.process is not None:
            return
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
            self.metrics.retrain_finished("failed", seconds=0.0)
            self.last_outcome = "failed"
            return
        finally:
            log.close()
        self._started_at = time.monotonic()
        logger.info("CNN challenger started (%s), pid %d", reason, self.process.pid)

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
            accuracy = float(report["accuracy"])
            bar = self.champion_accuracy(report)
            if np.isfinite(accuracy) and np.isfinite(bar) and accuracy >= bar:
                self._promote(report)
                outcome = "promoted"
            else:
                outcome = "kept_champion"
            logger.info(
                "CNN challenger %s: held-out accuracy %.3f vs champion %.3f (%d held out)",
                outcome, accuracy, bar, int(report.get("n_heldout", 0)),
            )  # fmt: skip
        except Exception:
            logger.exception("CNN challenger failed; the daemon goes on with the served model")
            outcome = "failed"
        self.metrics.retrain_finished(outcome, seconds=float(seconds))
        self.last_outcome = outcome
        return outcome

    def _promote(self, report: dict[str, Any]) -> None:
        from engine.models.cnn import PolarCNN

        cnn = PolarCNN.load(self.challenger_path)
        self.challenger_path.replace(self.champion_path)
        atomic_write_bytes(self.champion_report_path, json.dumps(report, indent=2).encode("utf-8"))
        self.champion_cnn = cnn
        with self.lock:
            self.get_model().set_cnn(cnn)
        self.metrics.set_member_accuracy("cnn", float(report["accuracy"]))
        if np.isfinite(float(report.get("subknn_accuracy", float("nan")))):
            self.metrics.set_member_accuracy("subknn", float(report["subknn_accuracy"]))

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
        **json.loads(args.cnn_params),
    )
    logger.info("challenger: %s", json.dumps(report))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
