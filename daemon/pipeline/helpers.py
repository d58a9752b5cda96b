"""Reading files and computing aging indices in helper processes, so every core works.

The model stays in the daemon's process: it is changed in place when the
library grows and the console reads it. What needs no model runs in helper
processes, a batch split into one chunk per helper:

- parsing each instrument file (:func:`engine.io.read_spectra`);
- a known particle's aging indices (:func:`engine.core.aging.aging_indices`), whose
  arPLS baseline costs more than identifying the particle.

Python runs one thread at a time per process, so threads could not do this.
A batch of one file goes to a helper too: the daemon's own interpreter, which
classifies, is the scarcest resource, and a round trip costs less than a baseline.
The helpers are started with ``spawn`` (never ``fork`` from a process with
threads), ignore SIGINT (a Ctrl-C reaches the whole process group; the daemon
stops them itself, after its last batch) and exit on their own if the daemon
dies. They do obey SIGTERM, which the pool uses to stop them.

One file's problem stays with that file: every outcome comes back per item,
an exception as a value. If a helper dies (killed for memory, say), the pool
is started afresh and the batch in hand is done in the daemon's own process.
With ``processes=0`` everything runs in the daemon's process.

>>> from contextlib import closing
>>> with closing(HelperPool(0)) as pool:
...     outcome = pool.read(["no-such-file.csv"])[0]
>>> type(outcome).__name__
'SpectrumError'
"""

from __future__ import annotations

import importlib
import logging
import multiprocessing
import os
import signal
import threading
import time
from collections.abc import Callable, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from pathlib import Path
from typing import Any, TypeVar

from threadpoolctl import threadpool_limits

from engine.core.aging import aging_indices
from engine.core.spectrum import Spectrum
from engine.io import read_spectra

__all__ = ["HelperPool", "ReadOutcome", "default_processes"]

logger = logging.getLogger(__name__)

#: What reading one file gives: its spectra, or the error that stays with it.
ReadOutcome = list[Spectrum] | Exception

#: A particle's aging indices as a JSON-ready dict, or the error computing them raised.
AgingOutcome = dict[str, Any] | Exception

_In = TypeVar("_In")
_Out = TypeVar("_Out")

#: How often an orphaned helper checks that the daemon is still there, in seconds.
PARENT_CHECK_SECONDS = 1.0


def default_processes() -> int:
    """One helper per core this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def read_one(path: str) -> ReadOutcome:
    """The spectra of one file, or the exception reading it raised (never raises)."""
    try:
        return read_spectra(Path(path))
    except Exception as exc:
        return exc


def aging_one(spectrum: Spectrum, label: str) -> AgingOutcome:
    """A particle's aging indices as a dict, or the exception computing them raised (never raises)."""
    try:
        return aging_indices(spectrum, label).as_dict()
    except Exception as exc:
        return exc


def _warm_up() -> None:
    """Import what aging indices need (about 2 s), so the first batch does not pay for it."""
    importlib.import_module("pybaselines")


def _read_chunk(paths: list[str]) -> list[ReadOutcome]:
    return [read_one(path) for path in paths]


def _aging_chunk(pairs: list[tuple[Spectrum, str]]) -> list[AgingOutcome]:
    return [aging_one(spectrum, label) for spectrum, label in pairs]


def _watch_parent(parent: int) -> None:
    while os.getppid() == parent:
        time.sleep(PARENT_CHECK_SECONDS)
    os._exit(0)


def _start_helper(parent: int) -> None:
    """In each helper: one BLAS thread, Ctrl-C left to the daemon, exit when orphaned.

    A helper is itself one of several processes on the cores; idle BLAS threads
    spinning beside it made the arPLS baseline 1.5x slower in CPU and wall time.
    """
    threadpool_limits(1)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    threading.Thread(target=_watch_parent, args=(parent,), name="parent-watch", daemon=True).start()


def _chunks(items: Sequence[_In], n: int) -> list[list[_In]]:
    """``items`` in ``n`` contiguous chunks of near-equal size (fewer when there are fewer items).

    >>> _chunks([1, 2, 3, 4, 5], 2)
    [[1, 2, 3], [4, 5]]
    """
    n = max(1, min(n, len(items)))
    size, extra = divmod(len(items), n)
    out, start = [], 0
    for i in range(n):
        end = start + size + (1 if i < extra else 0)
        out.append(list(items[start:end]))
        start = end
    return out


class HelperPool:
    """Helper processes for the model-free work of a batch; ``processes=0`` runs it in-process."""

    def __init__(self, processes: int) -> None:
        if processes < 0:
            raise ValueError(f"processes must be >= 0, got {processes}")
        self.processes = processes
        self._executor: ProcessPoolExecutor | None = None
        self._lock = threading.Lock()
        self._warmup: list[Future[None]] = []

    def start(self) -> None:
        """Start and warm the helpers now rather than at the first batch (seconds of imports).

        The daemon's own process is warmed too: it does single files itself.
        """
        if self.processes:
            executor = self._pool()
            self._warmup = [executor.submit(_warm_up) for _ in range(self.processes)]
        _warm_up()

    @property
    def ready(self) -> bool:
        """Whether the helpers have started (always true with no helpers); for /readyz."""
        if not self.processes:
            return True
        return bool(self._warmup) and all(f.done() and f.exception() is None for f in self._warmup)

    def read(self, paths: Sequence[str]) -> list[ReadOutcome]:
        """One outcome per path, in order."""
        return self._map(_read_chunk, list(paths))

    def aging(self, pairs: Sequence[tuple[Spectrum, str]]) -> list[AgingOutcome]:
        """One outcome per (spectrum, polymer label), in order."""
        return self._map(_aging_chunk, list(pairs))

    def _pool(self) -> ProcessPoolExecutor:
        with self._lock:
            if self._executor is None:
                self._executor = ProcessPoolExecutor(
                    max_workers=self.processes,
                    mp_context=multiprocessing.get_context("spawn"),
                    initializer=_start_helper,
                    initargs=(os.getpid(),),
                )
            return self._executor

    def _map(self, chunk_fn: Callable[[list[_In]], list[_Out]], items: list[_In]) -> list[_Out]:
        if not items:
            return []
        if self.processes == 0:
            return chunk_fn(items)
        chunks = _chunks(items, self.processes)
        executor = self._pool()
        try:
            futures: list[Future[list[_Out]]] = [executor.submit(chunk_fn, chunk) for chunk in chunks]
            return [out for future in futures for out in future.result()]
        except BrokenProcessPool:
            logger.error("a helper process died; restarting the helpers and doing this batch in-process")
            if self._discard(executor):  # the other stage may have restarted them already
                self.start()
            return chunk_fn(items)

    def _discard(self, broken: ProcessPoolExecutor) -> bool:
        """Drop ``broken`` if it is still the pool in use; whether it was."""
        with self._lock:
            if self._executor is not broken:
                return False
            self._executor = None
        broken.shutdown(wait=False, cancel_futures=True)
        return True

    def close(self) -> None:
        """Stop the helpers (after the work they hold)."""
        with self._lock:
            executor, self._executor = self._executor, None
        if executor is not None:
            executor.shutdown(wait=True, cancel_futures=True)
