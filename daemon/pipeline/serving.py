"""The served model: which libraries it is built from, and the hot swap.

The daemon serves one :class:`~engine.models.served.IdentificationModel` for IR
spectra with the Raman library's model attached. :class:`ModelHolder` swaps it
atomically: a batch is classified with one model from start to end, and an
incremental change (a confirmed new class) happens under the same lock. Work
that takes far longer than a batch (a whole imaging map) runs on a
:meth:`~ModelHolder.snapshot` instead, so it holds no one up.
"""

from __future__ import annotations

import pickle
import threading
from pathlib import Path

from daemon.config import LIBRARY_KEYS, Config, ConfigError
from daemon.web.metrics import Metrics
from engine.core.conventions import TECHNIQUES
from engine.core.library import DEFAULT_LIBRARIES, HEAD, ReferenceLibrary
from engine.models.served import IdentificationModel

__all__ = ["ModelHolder", "load_model", "publish_model", "served_library_dir", "served_library_dirs"]


class ModelHolder:
    """The model being served, swapped atomically under a lock."""

    def __init__(self, model: IdentificationModel) -> None:
        self._model = model
        #: Held while a batch is classified and while the model is changed in place
        #: (an incremental confirmation), so a batch never sees half an update.
        self.lock = threading.RLock()

    def get(self) -> IdentificationModel:
        with self.lock:
            return self._model

    def snapshot(self) -> IdentificationModel:
        """A private copy of the served model, for work too long to hold :attr:`lock` through.

        A 1000 x 1000 map takes about 25 s; under the lock, every other file and every
        confirmation would wait that long. The copy is serialised under the lock, so it is
        one whole version (about 0.05 s and 40 MB for the bundled libraries), and rebuilt
        outside it; a confirmation made meanwhile serves the next file, not this one.
        """
        with self.lock:
            frozen = pickle.dumps(self._model, protocol=pickle.HIGHEST_PROTOCOL)
        copy: IdentificationModel = pickle.loads(frozen)
        return copy

    def swap(self, model: IdentificationModel) -> IdentificationModel:
        """Serve ``model`` from the next batch on; return the old one."""
        with self.lock:
            old, self._model = self._model, model
        return old


#: Where the copy of each bundled library lives under the state folder.
BUNDLED_COPY = {"ir": "library", "raman": "library-raman"}


def served_library_dir(config: Config, technique: str = "ir") -> Path:
    """The library of ``technique`` the daemon serves and grows.

    The configured library, or, when none is configured, a copy of the bundled
    one under the state folder (the bundled one is read-only package data).
    """
    configured = config.library_for(technique)
    if configured is not None:
        return configured
    target = config.state_dir / BUNDLED_COPY[technique]
    if not (target / HEAD).exists():
        bundled = ReferenceLibrary.load(DEFAULT_LIBRARIES[technique])
        bundled.save(target, message=f"copy of the bundled default {technique} library")
    return target


def served_library_dirs(config: Config) -> dict[str, Path]:
    """The library folder of every technique, IR first."""
    return {technique: served_library_dir(config, technique) for technique in TECHNIQUES}


def load_library(path: Path, technique: str) -> ReferenceLibrary:
    """The library at ``path``, refused with one clear line when it holds another technique."""
    library = ReferenceLibrary.load(path)
    if library.technique != technique:
        raise ConfigError(
            f"{LIBRARY_KEYS[technique]}: {path} is a {library.technique} library, "
            f"but it is configured for {technique} spectra"
        )
    return library


def load_model(config: Config) -> IdentificationModel:
    """The served model: the IR library's, with the Raman library's model attached for Raman spectra."""
    settings = config.engine_model_config()
    dirs = served_library_dirs(config)
    model = IdentificationModel(load_library(dirs["ir"], "ir"), settings)
    for technique, path in dirs.items():
        if technique != model.technique:
            model.attach(IdentificationModel(load_library(path, technique), settings))
    return model


def publish_model(model: IdentificationModel, metrics: Metrics, *, members: list[str]) -> None:
    """Say in the metrics which model and library are served, and which labels they know."""
    counts, version = model.library.class_counts(), model.library.version or 0
    metrics.set_known_labels(counts)
    metrics.set_library(counts, version=version)
    metrics.set_model(model_version=model.version, library_version=version, members=members)
