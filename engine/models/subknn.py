"""Random-subspace k-nearest-neighbour ensemble ("subspace kNN") on exact FAISS indexes.

This is the classifier of Tian et al. (2023, KWR): an ensemble of kNN learners,
each of which sees a random half of the spectral points (MATLAB's
``fitcensemble(..., 'Method', 'Subspace')`` with kNN learners). The similarity
is Pearson's r, the hit quality FTIR analysts already use: a spectrum is
mean-centred and L2-normalised on each learner's points, so that an inner
product is r. A learner votes for the labels of its k most similar references;
the class probabilities are the learners' vote shares, averaged. The ids are
the reference library's ids: a bad confirmation can be removed again.
:meth:`SubspaceKNN.kneighbors` gives the evidence, the references most similar
over the whole spectrum, from one more exact index with the same ids.

Every spectrum is normalised once over the whole spectrum; a table of each
reference's mean and inverse norm on every learner's points turns a product of
whole-spectrum vectors restricted to a learner's points into that learner's r.

Two search modes:

- ``search="exact"`` (default) scores every reference in every learner. Each
  learner is an exact ``IndexIDMap2(IndexFlatIP)`` over its points; a batch is
  one BLAS product per learner and chunk (learners spread over ``n_threads``
  workers). One to four spectra are scored instead with one product of the
  whole-spectrum library and the spectra's per-learner weights, which reads
  the library once rather than once per learner. The cost is 30 x refs x 450
  multiply-adds per spectrum, so at 10^4 references a core classifies a few
  hundred spectra per second, and the learners' copies of the library take
  about 15 times the library's memory.
- ``search="shortlist"`` ranks the references by whole-spectrum r in a
  ``shortlist_dims``-dimensional principal subspace of the library, takes the
  ``shortlist_size`` best, and scores only those, exactly, in every learner. No
  per-learner copies are kept. At 10^4 references it is about 25 times faster
  (some 5,500 against 200 spectra per second on one core) and agrees with the
  exact mode on 99.7 % of held-out real spectra (``benchmarks/bench_subknn.py``):
  a learner's true neighbour that is not on the shortlist is the only way it
  can differ. The basis is fitted on a
  class-balanced sample; a new polymer outside it widens it by its own
  directions, and it is recomputed when the library doubles.

Adding a class appends to every index (capacity is reserved, so nothing is
copied) and extends the tables; removing by id compacts them. Models pickle
through ``faiss.serialize_index``.

Threads: work runs on a process-wide pool of ``n_threads`` workers. While it
runs, BLAS is limited to one thread per worker and FAISS's switch to BLAS for
batch searches is lowered (both process-wide settings, restored after). A model
may be read by several threads at once, but not read while it learns.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Hashable, Iterable, Iterator, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from typing import Any, TypeVar

import faiss
import numpy as np
import numpy.typing as npt
from sklearn.exceptions import NotFittedError
from threadpoolctl import ThreadpoolController

from engine.models.base import SpectrumClassifier, check_integer, check_option

__all__ = ["SubspaceKNN"]

FloatMatrix = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]
_T = TypeVar("_T")

#: Query rows per chunk of an exact FAISS search (bounds the per-learner copies of a batch).
EXACT_CHUNK_ROWS = 2048
#: Query rows per work item of a shortlist search (the gathered candidates stay in cache).
SHORTLIST_CHUNK_ROWS = 32
#: Batches of at most this many spectra are scored with one product over the whole library.
DENSE_MAX_QUERIES = 4
#: Multiply-adds above which the few-spectra product uses ``n_threads`` BLAS threads (else one).
DENSE_THREADS_WORK = 50_000_000
#: Reference rows normalised at a time when building or extending the indexes.
BUILD_CHUNK_ROWS = 1024
#: Fewer new references than this are added to the learners inline (a pool round trip costs more).
PARALLEL_MIN_ROWS = 64
#: Rows per learner block while building (a block stays in the core's cache).
BLOCK_ROWS = 512
#: Rows reserved in every flat index beyond what it holds (an eighth, within these bounds), so that
#: adding a class copies nothing.
HEADROOM_MIN_ROWS = 256
HEADROOM_MAX_ROWS = 4096
#: Block width of the two-stage top-k selection.
TOP_K_BLOCK = 16
#: A spectrum whose norm on a learner's points is below this is constant there: similarity 0.
NORM_FLOOR = 1e-6
#: Correlation distance (1 - r) below which ``weights="distance"`` treats two spectra as identical.
DISTANCE_FLOOR = 1e-6
#: Library rows (spread over the classes) used to compute the shortlist basis.
BASIS_SAMPLE_ROWS = 4096
#: New references whose energy outside the shortlist basis exceeds this many times the
#: library's own, and at least ``BASIS_MIN_RESIDUAL``, trigger a new basis.
BASIS_REFRESH_FACTOR = 3.0
BASIS_MIN_RESIDUAL = 0.01
#: Directions a new polymer may add to the shortlist basis (up to twice ``shortlist_dims`` in all).
BASIS_EXTRA_DIMS = 16
#: FAISS's switch to BLAS for exact searches (nq x d); its default keeps batches below ~300 spectra
#: on a slow path that reads the whole library once per spectrum.
FAISS_BLAS_THRESHOLD = 20

_WEIGHTS = ("uniform", "distance")
_SEARCHES = ("exact", "shortlist")

_pools: dict[int, ThreadPoolExecutor] = {}
_pools_lock = threading.Lock()
_controller: ThreadpoolController | None = None


def _pool(workers: int) -> ThreadPoolExecutor:
    """A process-wide pool per worker count whose threads run FAISS single-threaded."""
    with _pools_lock:
        pool = _pools.get(workers)
        if pool is None:
            pool = ThreadPoolExecutor(
                max_workers=workers,
                thread_name_prefix="subknn",
                initializer=faiss.omp_set_num_threads,
                initargs=(1,),
            )
            _pools[workers] = pool
        return pool


def _parallel_map(func: Callable[[int], _T], items: Sequence[int], workers: int) -> list[_T]:
    """``[func(i) for i in items]``, on the worker pool when there is more than one worker and item."""
    if workers <= 1 or len(items) <= 1:
        return [func(i) for i in items]
    return list(_pool(workers).map(func, items))


@contextmanager
def _blas_threads(count: int | None) -> Iterator[None]:
    """Limit BLAS (NumPy's and FAISS's) to ``count`` threads for the duration; ``None`` leaves it alone.

    The limit is process-wide while it lasts; it is taken around the products
    that the pool's workers run side by side, so that they do not oversubscribe
    the cores.
    """
    global _controller
    if count is None:
        yield
        return
    if _controller is None:
        _controller = ThreadpoolController()
    with _controller.limit(limits=count, user_api="blas"):
        yield


@contextmanager
def _faiss_threads(count: int | None) -> Iterator[None]:
    """Run FAISS calls of this thread with ``count`` OpenMP threads, restoring the setting after."""
    if count is None:
        yield
        return
    before = faiss.omp_get_max_threads()
    faiss.omp_set_num_threads(count)
    try:
        yield
    finally:
        faiss.omp_set_num_threads(before)


@contextmanager
def _faiss_blas_searches() -> Iterator[None]:
    """Let FAISS use BLAS for every batch search (a process-wide setting, restored after)."""
    before = faiss.cvar.distance_compute_blas_threshold
    faiss.cvar.distance_compute_blas_threshold = min(before, FAISS_BLAS_THRESHOLD)
    try:
        yield
    finally:
        faiss.cvar.distance_compute_blas_threshold = before


def _centre_normalise(block: FloatMatrix) -> None:
    """Mean-centre and L2-normalise each row in place (a constant row becomes zeros)."""
    block -= block.mean(axis=1, keepdims=True)
    faiss.normalize_L2(block)


def _flat(index: Any) -> Any:
    """The ``IndexFlatIP`` inside an ``IndexIDMap2``: it searches by position."""
    return faiss.downcast_index(index.index)


def _new_index(dim: int) -> Any:
    return faiss.IndexIDMap2(faiss.IndexFlatIP(dim))


def _reserve(index: Any, rows: int) -> None:
    """Make room for ``rows`` vectors in a flat index without changing what it holds.

    FAISS keeps the vectors in a ``std::vector``; growing it and shrinking it
    again keeps its capacity, so later adds up to ``rows`` copy nothing.
    """
    flat = _flat(index)
    used = flat.ntotal * flat.code_size
    wanted = rows * flat.code_size
    if wanted > used:
        flat.codes.resize(wanted)
        flat.codes.resize(used)


def _stored_vectors(index: Any) -> FloatMatrix:
    """A read-only view (no copy) of the vectors of a flat index, valid until the index next changes."""
    flat = _flat(index)
    if flat.ntotal == 0:
        return np.zeros((0, flat.d), dtype=np.float32)
    view: FloatMatrix = faiss.rev_swig_ptr(flat.get_xb(), flat.ntotal * flat.d).reshape(flat.ntotal, flat.d)
    view.flags.writeable = False
    return view


def _top_k(scores: FloatMatrix, k: int) -> tuple[FloatMatrix, IntArray]:
    """The ``k`` largest values of each column of ``scores`` and their rows: two ``(k, columns)`` arrays.

    Long columns are split into ``TOP_K_BLOCK`` interleaved blocks (rows
    ``b, b + m, b + 2m, ...``): the k largest values lie in the k blocks with
    the largest maxima, so only those are searched. The result is that of a
    full ``argpartition`` (in no particular order), several times faster.
    """
    width, columns = scores.shape
    if k >= width:
        rows = np.broadcast_to(np.arange(width, dtype=np.int64)[:, np.newaxis], (width, columns))
        return scores, np.ascontiguousarray(rows)
    blocks, tail = divmod(width, TOP_K_BLOCK)
    if blocks <= 4 * k:
        rows = np.argpartition(-scores, k - 1, axis=0)[:k]
        return np.take_along_axis(scores, rows, axis=0), rows.astype(np.int64, copy=False)
    maxima = scores[: blocks * TOP_K_BLOCK].reshape(TOP_K_BLOCK, blocks, columns).max(axis=0)
    if tail:
        maxima = np.concatenate([maxima, scores[blocks * TOP_K_BLOCK :].max(axis=0, keepdims=True)])
    best = np.argpartition(-maxima, k - 1, axis=0)[np.newaxis, :k]
    offsets = np.arange(TOP_K_BLOCK, dtype=np.int64)[:, np.newaxis, np.newaxis]
    candidates = np.where(best < blocks, best + offsets * blocks, blocks * TOP_K_BLOCK + offsets)
    candidates = candidates.reshape(TOP_K_BLOCK * k, columns)
    outside = candidates >= width
    candidates[outside] = width - 1
    values = np.take_along_axis(scores, candidates, axis=0)
    values[outside] = -np.inf
    chosen = np.argpartition(-values, k - 1, axis=0)[:k]
    return np.take_along_axis(values, chosen, axis=0), np.take_along_axis(candidates, chosen, axis=0)


def _principal_directions(sample: FloatMatrix, dims: int, rng: np.random.Generator) -> FloatMatrix:
    """The ``dims`` leading right singular vectors of ``sample`` (uncentred), by subspace iteration.

    Three power iterations with 16 extra directions are plenty for a basis
    that only ranks candidates: the scores themselves never depend on it.
    """
    width = min(sample.shape[1], dims + 16)
    basis = rng.standard_normal((sample.shape[1], width)).astype(np.float32)
    for _ in range(3):
        basis, _ = np.linalg.qr(sample.T @ (sample @ basis))
    projected = (sample @ basis).astype(np.float64)
    values, vectors = np.linalg.eigh(projected.T @ projected)
    leading = vectors[:, np.argsort(values)[::-1][:dims]]
    return np.ascontiguousarray((basis.astype(np.float64) @ leading).astype(np.float32))


class SubspaceKNN(SpectrumClassifier):
    """Random-subspace kNN ensemble with Pearson similarity, on exact FAISS indexes.

    Parameters
    ----------
    n_learners
        Number of kNN learners, each on its own random subset of spectral points.
    subspace_fraction
        Fraction of the points each learner sees (rounded, at least one point).
    n_neighbors
        References each learner votes with (k).
    weights
        ``"uniform"``: each of a learner's k neighbours has an equal vote.
        ``"distance"``: votes are weighted by the inverse correlation distance
        ``1 / max(1 - r, 1e-6)``, so a near-identical reference dominates.
        Either way each learner's votes sum to one.
    search
        ``"exact"`` scores every reference; ``"shortlist"`` scores, exactly, only
        the ``shortlist_size`` references most similar over the whole spectrum
        in a ``shortlist_dims``-dimensional principal subspace (see the module
        docstring).
    shortlist_size
        Candidates per spectrum in the shortlist mode.
    shortlist_dims
        Dimensions of the principal subspace that ranks the shortlist.
    seed
        Seed of the random subspaces (and of the shortlist basis's sample): the
        same seed and data give the same subspaces and predictions.
    n_threads
        Threads for searches and index builds; ``None`` uses FAISS's default
        (the OpenMP thread count).

    Attributes
    ----------
    classes_
        Labels in order of first appearance; the columns of :meth:`predict_proba`.
        A class whose last reference is removed is dropped.
    n_features_in_
        Spectral points per spectrum.
    feature_names_in_
        The dict keys, in order, when the model first learned from a dict whose
        keys are not simply ``0 .. n - 1``; otherwise ``None``.
    subspaces_
        ``(n_learners, subspace size)`` sorted point indices of each learner.
    subspace_mask_
        ``(points, n_learners)`` 0/1 float32: column l marks learner l's points.
    indexes_
        One ``IndexIDMap2(IndexFlatIP)`` per learner over its points, holding
        the references centred and normalised on those points (exact mode;
        empty in the shortlist mode, which does not need them).
    reference_index_
        ``IndexIDMap2(IndexFlatIP)`` of the references centred and normalised
        over the whole spectrum: :meth:`kneighbors`, and the vectors that the
        few-spectra and shortlist searches score.
    reference_ids_, reference_codes_
        Each stored reference's id and class position, in index order (the
        same order in every index).
    subspace_means_, subspace_scales_
        ``(n_references, n_learners)``: each reference's mean on a learner's
        points and the inverse of its norm after centring there (0 where it is
        constant), from its whole-spectrum normalised vector.
    shortlist_basis_, shortlist_projections_
        Shortlist mode: the ``(points, shortlist_dims)`` principal directions
        and each reference's coordinates on them (``None`` otherwise).

    Examples
    --------
    Two polymers, told apart by where their band is:

    >>> import numpy as np
    >>> from engine.models.subknn import SubspaceKNN
    >>> wavenumbers = np.linspace(400.0, 4000.0, 300)
    >>> def band(centre):
    ...     return np.exp(-0.5 * ((wavenumbers - centre) / 40.0) ** 2)
    >>> rng = np.random.default_rng(0)
    >>> X = np.array([band(c) + 0.02 * rng.standard_normal(300) for c in [1000.0] * 8 + [2900.0] * 8])
    >>> y = ["PS"] * 8 + ["PE"] * 8
    >>> model = SubspaceKNN(n_learners=10, n_neighbors=3, weights="distance", seed=1).fit(X, y)
    >>> model.classes_
    ['PS', 'PE']
    >>> model.predict(np.array([band(1010.0), band(2890.0)])).tolist()
    ['PS', 'PE']
    >>> model.predict_proba_one(band(2890.0))
    {'PS': 0.0, 'PE': 1.0}

    An analyst confirms a new polymer; one spectrum is enough to learn it:

    >>> model.learn_one(band(1730.0), "PET")
    >>> model.predict_one(band(1730.0) + 0.01 * rng.standard_normal(300))
    'PET'

    The evidence: the most similar references over the whole spectrum, by Pearson's r.

    >>> r, ids = model.kneighbors(band(1730.0)[np.newaxis], k=1)
    >>> ids.tolist(), round(float(r[0, 0]), 3), model.reference_labels(ids[0])
    ([[16]], 1.0, ['PET'])
    >>> model.remove([16])
    1
    >>> model.classes_
    ['PS', 'PE']
    """

    def __init__(
        self,
        *,
        n_learners: int = 30,
        subspace_fraction: float = 0.5,
        n_neighbors: int = 3,
        weights: str = "uniform",
        search: str = "exact",
        shortlist_size: int = 32,
        shortlist_dims: int = 64,
        seed: int = 0,
        n_threads: int | None = None,
    ) -> None:
        self.n_learners = n_learners
        self.subspace_fraction = subspace_fraction
        self.n_neighbors = n_neighbors
        self.weights = weights
        self.search = search
        self.shortlist_size = shortlist_size
        self.shortlist_dims = shortlist_dims
        self.seed = seed
        self.n_threads = n_threads

    # ------------------------------------------------------------------ parameters

    def _validate_params(self) -> None:
        check_integer("n_learners", self.n_learners, positive=True)
        check_integer("n_neighbors", self.n_neighbors, positive=True)
        check_integer("shortlist_size", self.shortlist_size, positive=True)
        check_integer("shortlist_dims", self.shortlist_dims, positive=True)
        if self.n_threads is not None:
            check_integer("n_threads", self.n_threads, positive=True)
        check_integer("seed", self.seed)
        if not (isinstance(self.subspace_fraction, float | int) and 0.0 < self.subspace_fraction <= 1.0):
            raise ValueError(f"subspace_fraction must be in (0, 1], got {self.subspace_fraction!r}")
        check_option("weights", self.weights, _WEIGHTS)
        check_option("search", self.search, _SEARCHES)

    def _workers(self) -> int:
        return int(self.n_threads) if self.n_threads is not None else max(1, faiss.omp_get_max_threads())

    # ------------------------------------------------------------------ state

    def _is_fitted(self) -> bool:
        return hasattr(self, "indexes_")

    def _check_fitted(self) -> None:
        if not self._is_fitted():
            raise NotFittedError("this SubspaceKNN has learned nothing yet: call fit, add or learn_one first")

    def _initialise(self, n_features: int, feature_names: tuple[Hashable, ...] | None) -> None:
        """Empty learned state for spectra of ``n_features`` points: subspaces drawn, indexes empty."""
        self._validate_params()
        if n_features < 1:
            raise ValueError("spectra must have at least one point")
        n_learners = int(self.n_learners)
        rng = np.random.default_rng(int(self.seed))
        size = min(n_features, max(1, round(self.subspace_fraction * n_features)))
        subspaces = np.empty((n_learners, size), dtype=np.int64)
        for learner in range(n_learners):
            subspaces[learner] = np.sort(rng.choice(n_features, size=size, replace=False))
        mask = np.zeros((n_features, n_learners), dtype=np.float32)
        for learner, points in enumerate(subspaces):
            mask[points, learner] = 1.0

        self.n_features_in_ = n_features
        self.feature_names_in_ = feature_names
        self.classes_: list[Hashable] = []
        self.subspaces_ = subspaces
        self.subspace_mask_ = mask
        # The shortlist mode scores learners from the whole-spectrum index and its tables alone.
        self.indexes_ = [_new_index(size) for _ in range(n_learners)] if self.search == "exact" else []
        self.reference_index_ = _new_index(n_features)
        self.reference_ids_ = np.zeros(0, dtype=np.int64)
        self.reference_codes_ = np.zeros(0, dtype=np.int64)
        self.subspace_means_ = np.zeros((0, n_learners), dtype=np.float32)
        self.subspace_scales_ = np.zeros((0, n_learners), dtype=np.float32)
        self.capacity_rows_ = 0
        self.next_id_ = 0
        self.shortlist_basis_: FloatMatrix | None = None
        self.shortlist_projections_: FloatMatrix | None = None
        self.basis_size_ = 0
        self.basis_residual_ = 0.0

    # ------------------------------------------------------------------ inputs

    def _ids_for(self, n: int, ids: npt.ArrayLike | None) -> IntArray:
        if ids is None:
            return np.arange(self.next_id_, self.next_id_ + n, dtype=np.int64)
        new = np.asarray(ids)
        if new.ndim != 1 or new.shape[0] != n:
            raise ValueError(f"ids must be 1-D with one id per spectrum ({n}), got shape {new.shape}")
        if new.size and not np.issubdtype(new.dtype, np.integer):
            raise ValueError(f"ids must be integers, got dtype {new.dtype}")
        new = new.astype(np.int64)
        if np.unique(new).size != n:
            raise ValueError("ids must be unique")
        if new.size and np.isin(new, self.reference_ids_).any():
            raise ValueError("some ids are already in the library; remove them first")
        return new

    def _encode(self, labels: Sequence[Hashable]) -> IntArray:
        """Class positions of ``labels``, appending new classes to ``classes_`` (all or nothing)."""
        lookup = {label: code for code, label in enumerate(self.classes_)}
        new_classes: list[Hashable] = []
        codes = np.empty(len(labels), dtype=np.int64)
        for row, label in enumerate(labels):
            code = lookup.get(label)
            if code is None:
                code = lookup[label] = len(self.classes_) + len(new_classes)
                new_classes.append(label)
            codes[row] = code
        self.classes_.extend(new_classes)
        return codes

    # ------------------------------------------------------------------ learning

    def fit(self, X: npt.ArrayLike, y: Iterable[Hashable], ids: npt.ArrayLike | None = None) -> SubspaceKNN:
        """Build the model from scratch on reference spectra ``X`` with labels ``y``.

        ``ids`` (unique integers) name the references for :meth:`remove` and
        :meth:`kneighbors`; by default they are ``0 .. n - 1``.
        """
        self._validate_params()
        matrix = self._as_matrix(X, check_width=False)
        labels = list(y)
        if len(labels) != matrix.shape[0]:
            raise ValueError(f"{matrix.shape[0]} spectra but {len(labels)} labels")
        self._initialise(matrix.shape[1], None)
        self._learn(matrix, labels, ids)
        return self

    def add(self, X: npt.ArrayLike, y: Iterable[Hashable], ids: npt.ArrayLike | None = None) -> IntArray:
        """Add reference spectra (of known or brand-new classes) and return their ids.

        Nothing already stored is rebuilt: every index gets the new rows
        appended, and a new label is appended to ``classes_``. On an unfitted
        model this is :meth:`fit`.
        """
        matrix = self._as_matrix(X)
        labels = list(y)
        if not self._is_fitted():
            self._initialise(matrix.shape[1], None)
        else:
            self._validate_params()
        return self._learn(matrix, labels, ids)

    def learn_one(self, x: Mapping[Hashable, float] | npt.ArrayLike, y: Hashable) -> None:
        """Add one reference spectrum ``x`` (a dict of point -> value or a 1-D array) of class ``y``.

        On an unfitted model the first spectrum fixes the number of points (and,
        for a dict with other keys than ``0 .. n - 1``, their names).
        """
        row, names = self._row(x)
        if not self._is_fitted():
            self._initialise(row.shape[1], names)
        self._learn(row, [y], None)

    def _learn(self, matrix: FloatMatrix, labels: list[Hashable], ids: npt.ArrayLike | None) -> IntArray:
        n = matrix.shape[0]
        if len(labels) != n:
            raise ValueError(f"{n} spectra but {len(labels)} labels")
        new_ids = self._ids_for(n, ids)
        if n == 0:
            return new_ids
        codes = self._encode(labels)
        with _blas_threads(1):  # the products are per chunk and small; the learners run on the workers
            self._append(matrix, codes, new_ids)
        self.next_id_ = max(self.next_id_, int(new_ids.max()) + 1)
        return new_ids

    def _normalise(self, matrix: FloatMatrix) -> tuple[FloatMatrix, FloatMatrix, FloatMatrix]:
        """Whole-spectrum Pearson rows of ``matrix``, with each learner's mean and scale of them.

        ``(row[points] - mean[learner]) * scale[learner]`` is the row centred and
        normalised on the learner's points; ``scale`` is 0 where the row is
        constant on them. Means and scales are ``(rows, learners)``.
        """
        full = matrix.copy()
        _centre_normalise(full)
        size = self.subspaces_.shape[1]
        means = np.asarray(full @ self.subspace_mask_, dtype=np.float32) / np.float32(size)
        squares = np.asarray((full * full) @ self.subspace_mask_, dtype=np.float32)
        norms = np.sqrt(np.maximum(squares - size * means * means, 0.0))
        scales = np.zeros_like(norms)
        np.divide(1.0, norms, out=scales, where=norms > NORM_FLOOR)
        return full, means, scales

    def _append(self, matrix: FloatMatrix, codes: IntArray, ids: IntArray) -> None:
        """Append rows to every index and the per-reference tables; nothing stored is rebuilt."""
        total = self.reference_ids_.size + matrix.shape[0]
        grow = total > self.capacity_rows_
        headroom = min(max(total // 8, HEADROOM_MIN_ROWS), HEADROOM_MAX_ROWS)
        capacity = total + headroom if grow else self.capacity_rows_
        workers = self._workers() if matrix.shape[0] >= PARALLEL_MIN_ROWS or grow else 1
        if grow:  # once per growth, each learner on a worker: the new pages are touched side by side
            _parallel_map(
                lambda learner: _reserve(self.indexes_[learner], capacity), range(len(self.indexes_)), workers
            )
            _reserve(self.reference_index_, capacity)
        means: list[FloatMatrix] = []
        scales: list[FloatMatrix] = []
        for start in range(0, matrix.shape[0], BUILD_CHUNK_ROWS):
            chunk_ids = ids[start : start + BUILD_CHUNK_ROWS]
            full, chunk_means, chunk_scales = self._normalise(matrix[start : start + BUILD_CHUNK_ROWS])

            def add_learner(
                learner: int,
                full: FloatMatrix = full,
                chunk_means: FloatMatrix = chunk_means,
                chunk_scales: FloatMatrix = chunk_scales,
                chunk_ids: IntArray = chunk_ids,
            ) -> None:
                index = self.indexes_[learner]
                for row in range(0, full.shape[0], BLOCK_ROWS):
                    rows = slice(row, row + BLOCK_ROWS)
                    block = np.take(full[rows], self.subspaces_[learner], axis=1, mode="clip")
                    block -= chunk_means[rows, learner, np.newaxis]
                    block *= chunk_scales[rows, learner, np.newaxis]
                    index.add_with_ids(block, chunk_ids[rows])

            _parallel_map(add_learner, range(len(self.indexes_)), workers)
            self.reference_index_.add_with_ids(full, chunk_ids)
            means.append(chunk_means)
            scales.append(chunk_scales)
        self.capacity_rows_ = capacity
        self.reference_ids_ = np.concatenate([self.reference_ids_, ids])
        self.reference_codes_ = np.concatenate([self.reference_codes_, codes])
        self.subspace_means_ = np.concatenate([self.subspace_means_, *means])
        self.subspace_scales_ = np.concatenate([self.subspace_scales_, *scales])
        if self.search == "shortlist":
            self._extend_shortlist(matrix.shape[0])

    def remove(self, ids: npt.ArrayLike) -> int:
        """Remove references by id and return how many were removed (unknown ids are ignored).

        A class left with no reference is dropped from ``classes_``, so it can
        no longer be predicted and its column disappears.
        """
        self._check_fitted()
        wanted = np.unique(np.asarray(ids, dtype=np.int64).ravel())
        gone = np.isin(self.reference_ids_, wanted)
        count = int(gone.sum())
        if count == 0:
            return 0
        present = self.reference_ids_[gone]
        for index in [self.reference_index_, *self.indexes_]:
            removed = index.remove_ids(present)
            if removed != count:
                raise RuntimeError(f"an index removed {removed} of {count} references: the model is corrupt")
        keep = ~gone
        self.reference_ids_ = self.reference_ids_[keep]
        self.subspace_means_ = self.subspace_means_[keep]
        self.subspace_scales_ = self.subspace_scales_[keep]
        if self.shortlist_projections_ is not None:
            self.shortlist_projections_ = self.shortlist_projections_[keep]
        codes = self.reference_codes_[keep]
        used = np.unique(codes)
        if used.size < len(self.classes_):
            remap = np.full(len(self.classes_), -1, dtype=np.int64)
            remap[used] = np.arange(used.size)
            self.classes_ = [self.classes_[int(code)] for code in used]
            codes = remap[codes]
        self.reference_codes_ = codes
        return count

    # ------------------------------------------------------------------ shortlist basis

    def _extend_shortlist(self, added: int) -> None:
        """Project the ``added`` newest references onto the shortlist basis, widening it if they lie outside.

        New references whose energy outside the basis is well above the
        library's (a polymer the basis has not seen) add up to
        ``BASIS_EXTRA_DIMS`` directions from their residuals: the old
        references only need their coordinates on those. The basis is computed
        afresh when the library has doubled, or has widened to twice
        ``shortlist_dims``.
        """
        total = self.reference_ids_.size
        basis, projections = self.shortlist_basis_, self.shortlist_projections_
        if basis is None or projections is None:
            if total > self.shortlist_size:
                self._refresh_basis()
            return
        if total >= 2 * self.basis_size_:
            self._refresh_basis()
            return
        vectors = _stored_vectors(self.reference_index_)
        new_rows = vectors[total - added :]
        new = new_rows @ basis
        energy = np.einsum("ij,ij->i", new_rows, new_rows)
        informative = energy > 0.5  # constant spectra are all zeros
        residual = np.where(informative, 1.0 - np.einsum("ij,ij->i", new, new), 0.0)
        limit = max(BASIS_REFRESH_FACTOR * self.basis_residual_, BASIS_MIN_RESIDUAL)
        if not informative.any() or float(residual[informative].mean()) <= limit:
            self.shortlist_projections_ = np.concatenate([projections, new])
            return
        if basis.shape[1] + BASIS_EXTRA_DIMS > 2 * int(self.shortlist_dims):
            self._refresh_basis()
            return
        outside = (new_rows - new @ basis.T)[informative]
        rng = np.random.default_rng([int(self.seed), 2, total])
        with _blas_threads(1):
            extra = _principal_directions(outside, min(BASIS_EXTRA_DIMS, outside.shape[0]), rng)
            extra -= basis @ (basis.T @ extra)  # orthogonal to the basis in exact arithmetic; make it so
            extra = np.linalg.qr(extra)[0].astype(np.float32)
        old = vectors[: total - added]
        widened = np.concatenate(
            [
                old[start : start + BUILD_CHUNK_ROWS] @ extra
                for start in range(0, old.shape[0], BUILD_CHUNK_ROWS)
            ]
        )
        self.shortlist_basis_ = np.ascontiguousarray(np.concatenate([basis, extra], axis=1))
        self.shortlist_projections_ = np.concatenate(
            [np.concatenate([projections, widened], axis=1), new_rows @ self.shortlist_basis_]
        )

    def _refresh_basis(self) -> None:
        """Principal directions of a class-balanced sample of the library; every reference re-projected."""
        vectors = _stored_vectors(self.reference_index_)
        total = vectors.shape[0]
        rng = np.random.default_rng([int(self.seed), 1, total])
        n_classes = max(1, len(self.classes_))
        per_class = max(8, BASIS_SAMPLE_ROWS // n_classes)
        order = np.argsort(self.reference_codes_, kind="stable")
        bounds = np.searchsorted(self.reference_codes_[order], np.arange(n_classes + 1))
        picks = []
        for code in range(n_classes):
            members = order[bounds[code] : bounds[code + 1]]
            if members.size > per_class:
                members = rng.choice(members, size=per_class, replace=False)
            picks.append(members)
        sample = vectors[np.sort(np.concatenate(picks))]
        sample = sample[np.einsum("ij,ij->i", sample, sample) > 0.5]  # constant spectra are zeros
        dims = min(int(self.shortlist_dims), sample.shape[0], self.n_features_in_)
        if dims < 1:
            return
        with _blas_threads(1):  # small factorisations: extra BLAS threads only wait on each other
            basis = _principal_directions(sample, dims, rng)
        projected = sample @ basis
        self.basis_residual_ = float(np.mean(1.0 - np.einsum("ij,ij->i", projected, projected)))
        self.shortlist_basis_ = basis
        self.shortlist_projections_ = np.concatenate(
            [vectors[start : start + BUILD_CHUNK_ROWS] @ basis for start in range(0, total, BUILD_CHUNK_ROWS)]
        )
        self.basis_size_ = total

    # ------------------------------------------------------------------ prediction

    def predict_proba(self, X: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Vote share of each class in ``classes_`` for each spectrum: ``(n, n_classes)``, rows sum to 1."""
        self._check_fitted()
        matrix = self._as_matrix(X)
        n_spectra, total = matrix.shape[0], self.reference_ids_.size
        if total == 0 or n_spectra == 0:
            return np.zeros((n_spectra, len(self.classes_)), dtype=np.float64)
        k = min(int(self.n_neighbors), total)
        workers = self._workers()
        vectors = _stored_vectors(self.reference_index_)
        if self.search == "shortlist" and self.shortlist_projections_ is not None:
            starts = list(range(0, n_spectra, SHORTLIST_CHUNK_ROWS))

            def shortlist_chunk(start: int) -> npt.NDArray[np.float64]:
                chunk = matrix[start : start + SHORTLIST_CHUNK_ROWS]
                return self._vote(*self._search_shortlist(chunk, k, vectors))

            # Each chunk's products are small: one BLAS thread each, chunks side by side on the workers.
            with _blas_threads(1):
                return np.concatenate(_parallel_map(shortlist_chunk, starts, workers))
        if n_spectra <= DENSE_MAX_QUERIES or len(self.indexes_) != self.subspaces_.shape[0]:
            # A few spectra (or a model built for the shortlist mode, asked for an exact search).
            proba = np.empty((n_spectra, len(self.classes_)), dtype=np.float64)
            small = (
                vectors.size * self.subspaces_.shape[0] * min(n_spectra, DENSE_MAX_QUERIES)
                < DENSE_THREADS_WORK
            )
            with _blas_threads(1 if small else self.n_threads):
                for start in range(0, n_spectra, DENSE_MAX_QUERIES):
                    chunk = matrix[start : start + DENSE_MAX_QUERIES]
                    proba[start : start + chunk.shape[0]] = self._vote(*self._search_dense(chunk, k, vectors))
            return proba
        proba = np.empty((n_spectra, len(self.classes_)), dtype=np.float64)
        with _blas_threads(1):  # NumPy's products here are small; FAISS runs the big ones on the workers
            for start in range(0, n_spectra, EXACT_CHUNK_ROWS):
                chunk = matrix[start : start + EXACT_CHUNK_ROWS]
                proba[start : start + chunk.shape[0]] = self._vote(*self._search_exact(chunk, k, workers))
        return proba

    def predict(self, X: npt.ArrayLike) -> npt.NDArray[np.object_]:
        """The class with the largest vote share for each spectrum (the first of ``classes_`` on ties)."""
        proba = self.predict_proba(X)
        if proba.shape[1] == 0 and proba.shape[0]:
            raise NotFittedError("the library is empty: there is no class to predict")
        return self._labels(proba)

    def kneighbors(self, X: npt.ArrayLike, k: int | None = None) -> tuple[FloatMatrix, IntArray]:
        """The ``k`` references most similar over the whole spectrum: ``(r, ids)``, best first.

        ``r`` is Pearson's correlation coefficient between each spectrum and the
        reference ``ids``; both are ``(n, min(k, n_references))``. ``k``
        defaults to ``n_neighbors``.
        """
        self._check_fitted()
        matrix = self._as_matrix(X)
        k = int(self.n_neighbors if k is None else k)
        if k < 1:
            raise ValueError(f"k must be a positive integer, got {k}")
        k = min(k, self.reference_ids_.size)
        r = np.zeros((matrix.shape[0], k), dtype=np.float32)
        ids = np.zeros((matrix.shape[0], k), dtype=np.int64)
        if k == 0:
            return r, ids
        flat = _flat(self.reference_index_)
        with _faiss_threads(self.n_threads), _faiss_blas_searches():
            for start in range(0, matrix.shape[0], EXACT_CHUNK_ROWS):
                chunk = matrix[start : start + EXACT_CHUNK_ROWS].copy()
                _centre_normalise(chunk)
                sims, positions = flat.search(chunk, k)
                r[start : start + chunk.shape[0]] = sims
                ids[start : start + chunk.shape[0]] = self.reference_ids_[positions]
        return r, ids

    def reference_labels(self, ids: npt.ArrayLike) -> list[Hashable]:
        """The label of each reference id (``KeyError`` for an id not in the library)."""
        self._check_fitted()
        wanted = np.asarray(ids, dtype=np.int64).ravel()
        stored = self.reference_ids_
        ascending = bool((stored[1:] > stored[:-1]).all())  # ids are usually added in increasing order
        order = np.arange(stored.size) if ascending else np.argsort(stored, kind="stable")
        where = np.minimum(np.searchsorted(stored[order], wanted), max(stored.size - 1, 0))
        positions = order[where] if stored.size else where
        found = stored[positions] == wanted if stored.size else np.zeros(wanted.size, dtype=bool)
        if not found.all():
            raise KeyError(f"ids not in the library: {wanted[~found][:10].tolist()}")
        return [self.classes_[int(code)] for code in self.reference_codes_[positions]]

    # ------------------------------------------------------------------ search back-ends
    #
    # Each returns ``(similarities, positions)``, both ``(spectra, learners, k)``:
    # every learner's k best references (index positions) and their Pearson r.

    def _vote(self, sims: FloatMatrix, positions: IntArray) -> npt.NDArray[np.float64]:
        """Average over the learners of each learner's vote share."""
        n, _, k = positions.shape
        n_classes = len(self.classes_)
        codes = self.reference_codes_[positions]
        if self.weights == "uniform":
            weight = np.full(positions.shape, 1.0 / k)
        else:
            weight = 1.0 / np.maximum(1.0 - sims.astype(np.float64), DISTANCE_FLOOR)
            weight /= weight.sum(axis=2, keepdims=True)
        cells = codes + n_classes * np.arange(n, dtype=np.int64)[:, np.newaxis, np.newaxis]
        votes = np.bincount(cells.ravel(), weights=weight.ravel(), minlength=n * n_classes)
        proba = np.asarray(votes, dtype=np.float64).reshape(n, n_classes)
        proba /= proba.sum(axis=1, keepdims=True)
        return proba

    def _search_exact(self, chunk: FloatMatrix, k: int, workers: int) -> tuple[FloatMatrix, IntArray]:
        """One FAISS search per learner for the whole chunk; learners spread over the workers."""
        full, means, scales = self._normalise(chunk)
        n_learners = self.subspaces_.shape[0]
        sims = np.empty((chunk.shape[0], n_learners, k), dtype=np.float32)
        positions = np.empty((chunk.shape[0], n_learners, k), dtype=np.int64)

        def search_learner(learner: int) -> None:
            block = np.take(full, self.subspaces_[learner], axis=1, mode="clip")
            block -= means[:, learner, np.newaxis]
            block *= scales[:, learner, np.newaxis]
            sims[:, learner], positions[:, learner] = _flat(self.indexes_[learner]).search(block, k)

        with _faiss_threads(self.n_threads if workers == 1 else None), _faiss_blas_searches():
            _parallel_map(search_learner, range(n_learners), workers)
        return sims, positions

    def _learner_dots_to_scores(
        self,
        dots: FloatMatrix,
        means: FloatMatrix,
        scales: FloatMatrix,
        ref_means: FloatMatrix,
        ref_scales: FloatMatrix,
    ) -> FloatMatrix:
        """Pearson r, in place, from raw products on each learner's points.

        ``dots``, ``means`` and ``scales`` (the spectra's) and ``ref_means`` and
        ``ref_scales`` (the references') all broadcast to one shape whose last
        axis is the learners.
        """
        size = np.float32(self.subspaces_.shape[1])
        dots -= (size * means) * ref_means
        dots *= scales * ref_scales
        return dots

    def _search_dense(
        self, matrix: FloatMatrix, k: int, vectors: FloatMatrix
    ) -> tuple[FloatMatrix, IntArray]:
        """Exact scores of all references in all learners for a few spectra: the library is read once."""
        full, means, scales = self._normalise(matrix)
        n, points = full.shape
        n_learners = self.subspaces_.shape[0]
        weights = (
            full.T[:, :, np.newaxis] * self.subspace_mask_[:, np.newaxis, :]
        )  # points x spectra x learners
        dots = np.asarray(vectors @ weights.reshape(points, -1), dtype=np.float32).reshape(-1, n, n_learners)
        scores = self._learner_dots_to_scores(
            dots,
            means,
            scales,
            self.subspace_means_[:, np.newaxis, :],
            self.subspace_scales_[:, np.newaxis, :],
        )  # references x spectra x learners
        sims, positions = _top_k(scores.reshape(-1, n * n_learners), k)
        return (
            np.ascontiguousarray(sims.T).reshape(n, n_learners, k),
            np.ascontiguousarray(positions.T).reshape(n, n_learners, k),
        )

    def _search_shortlist(
        self, matrix: FloatMatrix, k: int, vectors: FloatMatrix
    ) -> tuple[FloatMatrix, IntArray]:
        """Exact scores, in every learner, of each spectrum's shortlist of candidates."""
        assert self.shortlist_basis_ is not None and self.shortlist_projections_ is not None
        full, means, scales = self._normalise(matrix)
        n, points = full.shape
        n_learners = self.subspaces_.shape[0]
        size = min(int(self.shortlist_size), self.reference_ids_.size)
        ranking = self.shortlist_projections_ @ (full @ self.shortlist_basis_).T  # references x spectra
        candidates = np.ascontiguousarray(_top_k(np.asarray(ranking, dtype=np.float32), size)[1].T)
        gathered = np.take(vectors, candidates.ravel(), axis=0, mode="clip").reshape(n, size, points)
        gathered *= full[:, np.newaxis, :]
        dots = np.asarray(gathered.reshape(n * size, points) @ self.subspace_mask_, dtype=np.float32)
        scores = self._learner_dots_to_scores(
            dots.reshape(n, size, n_learners),
            means[:, np.newaxis, :],
            scales[:, np.newaxis, :],
            self.subspace_means_[candidates],
            self.subspace_scales_[candidates],
        )  # spectra x candidates x learners
        k = min(k, size)
        best = np.argpartition(-scores, k - 1, axis=1)[:, :k] if k < size else np.arange(size)[:, np.newaxis]
        best = np.broadcast_to(best, (n, k, n_learners))
        sims = np.take_along_axis(scores, best, axis=1)
        positions = np.take_along_axis(candidates[:, :, np.newaxis], best, axis=1)
        return np.ascontiguousarray(sims.transpose(0, 2, 1)), np.ascontiguousarray(
            positions.transpose(0, 2, 1)
        )

    # ------------------------------------------------------------------ pickling

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        if "indexes_" in state:
            state["indexes_"] = [faiss.serialize_index(index) for index in self.indexes_]
            state["reference_index_"] = faiss.serialize_index(self.reference_index_)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        if "indexes_" in state:
            state["indexes_"] = [faiss.deserialize_index(blob) for blob in state["indexes_"]]
            state["reference_index_"] = faiss.deserialize_index(state["reference_index_"])
            state["capacity_rows_"] = int(state["reference_index_"].ntotal)
        self.__dict__.update(state)
