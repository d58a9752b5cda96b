"""The CNN member as a classifier: :class:`PolarCNN`, with scikit-learn's and river's API.

:class:`PolarCNN` draws each spectrum as images (:mod:`engine.models.cnn.encoding`)
and trains a :class:`~engine.models.cnn.net.SpectrumImageNet` on them with
AdamW on class-balanced batches, with early stopping on a stratified
validation split, on ``n_threads`` CPU threads (or a GPU with
``device="auto"``). It saves and loads checkpoints that hold only tensors and
plain values.

Defaults (64 px, 4 blocks of 16-128 channels, about 100k weights, AdamW at
3e-3, batches of 64, at most 30 epochs, patience 4) train on 2000 spectra of
20 classes in 0.5 to 1.5 minutes on one CPU thread (depending on what else
the machine runs) and classify a spectrum in 2 to 3.5 ms, encoding included;
see ``benchmarks/bench_cnn.py``.
"""

from __future__ import annotations

import copy
import io
import math
from collections.abc import Hashable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from sklearn.exceptions import NotFittedError
from torch import nn

from engine.core.augment import synthesize
from engine.core.storage import atomic_write_bytes
from engine.models.base import SpectrumClassifier, check_integer, check_option
from engine.models.cnn.encoding import ENCODINGS, encode_images
from engine.models.cnn.net import SpectrumImageNet, torch_session

__all__ = ["PolarCNN"]

FloatMatrix = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]

#: A validation loss must fall by this share of the best so far to count as an improvement.
MIN_IMPROVEMENT = 1e-3
#: Optimiser steps per epoch at least, however few rows there are (small libraries still train).
MIN_STEPS_PER_EPOCH = 10
#: Predictions for at most this many spectra run on one thread.
SINGLE_THREAD_ROWS = 8
#: Spectra encoded and classified per batch at prediction time.
PREDICT_BATCH = 256
#: Format tag of a checkpoint written by :meth:`PolarCNN.save`.
CHECKPOINT_FORMAT = "mpwatch.cnn.PolarCNN"
CHECKPOINT_VERSION = 1

_DEVICES = ("cpu", "cuda", "auto")


class PolarCNN(SpectrumClassifier):
    """CNN classifier on polar-coordinate images of spectra, with river's per-sample API.

    Parameters
    ----------
    encoding
        ``"polar"`` (:func:`~engine.models.cnn.encoding.polar_images`), ``"gasf"``
        (:func:`~engine.models.cnn.encoding.gramian_field`) or ``"polar+gasf"``
        (both, as two channels).
    image_size
        Side of the images, in pixels.
    inner_radius
        Radius of a row's minimum on the polar image (its maximum is at 1).
    width
        Channels of the first conv block; each further block doubles them.
    depth
        Conv blocks (each halves the image).
    dropout
        Dropout before the linear head.
    n_synthetic
        Synthetic spectra per class (:func:`engine.core.augment.synthesize`, seeded
        by ``seed``) added to the training rows inside :meth:`fit`; 0 trains
        on the rows given, which is what the caller does when it passes the
        library and its synthetic spectra itself.
    max_epochs
        Cap on training epochs. An epoch draws as many rows as are trained on,
        but at least ``MIN_STEPS_PER_EPOCH`` batches.
    patience
        Epochs without a lower validation loss before training stops; the
        weights of the best epoch are kept.
    validation_fraction
        Share of each class's rows held out for early stopping (classes with
        one row keep it for training; no validation rows means
        ``max_epochs`` epochs).
    batch_size
        Rows per optimiser step; batches are drawn class-balanced (every class
        equally likely, rows with replacement).
    learning_rate, weight_decay
        AdamW's.
    device
        ``"cpu"`` (default), ``"cuda"``, or ``"auto"``: a GPU when there is one.
    n_threads
        Torch CPU threads while training and predicting batches (the
        process-wide setting is restored after; a few spectra are predicted
        on one thread); ``None`` leaves torch's setting alone. One thread by
        default: the service trains beside the classifier, and on a busy
        machine a second OpenMP thread mostly waits.
    seed
        Seeds the split, the batches, the initial weights, dropout and the
        synthetic spectra: the same seed, data and ``n_threads`` give the same
        predictions (deterministic algorithms are used; a different thread
        count sums in another order, and the training drifts apart).

    Attributes
    ----------
    classes_
        Labels in order of first appearance; the columns of :meth:`predict_proba`.
    n_features_in_
        Points per spectrum.
    feature_names_in_
        The dict keys, in order, when the model first learned from a dict whose
        keys are not simply ``0 .. n - 1``; otherwise ``None``.
    training_spectra_, training_codes_
        Every row learned (by :meth:`fit` or :meth:`learn_one`, synthetic rows
        made inside :meth:`fit` excluded: they are regenerated) and its class
        position: what the next refit trains on.
    pending_spectra_, pending_codes_
        Rows from :meth:`learn_one` not yet trained on (joined to the
        training rows at the next retrain).
    network_
        The trained :class:`SpectrumImageNet` (``None`` until there is one).
    architecture_
        The network's constructor arguments.
    history_
        Per epoch: mean training loss, validation loss and accuracy (NaN
        without validation rows).
    best_epoch_, n_epochs_
        The epoch whose weights were kept (1-based) and the epochs run.
    stale_
        Rows were learned since the network was last trained.

    Notes
    -----
    :meth:`learn_one` *buffers*: it adds the spectrum to the training rows and
    marks the network stale; the next prediction (or :meth:`refit`) retrains
    from scratch on every row learned, so a stream of ``learn_one`` calls
    gives exactly the network that :meth:`fit` gives on the same rows in the
    same order. A retrain costs a full training run: in the service the CNN is
    a scheduled challenger retrained in its own process, not a per-spectrum
    learner.

    Examples
    --------
    Two polymers, told apart by where their band is:

    >>> import numpy as np
    >>> from engine.models.cnn import PolarCNN
    >>> wavenumbers = np.linspace(400.0, 4000.0, 200)
    >>> def band(centre):
    ...     return np.exp(-0.5 * ((wavenumbers - centre) / 60.0) ** 2)
    >>> rng = np.random.default_rng(0)
    >>> X = np.array([band(c + rng.normal(0, 20)) for c in [1000.0] * 12 + [2900.0] * 12])
    >>> y = ["PS"] * 12 + ["PE"] * 12
    >>> model = PolarCNN(image_size=24, width=8, depth=2, max_epochs=10, batch_size=16, seed=0).fit(X, y)
    >>> model.classes_
    ['PS', 'PE']
    >>> model.predict(np.array([band(1010.0), band(2890.0)])).tolist()
    ['PS', 'PE']
    >>> proba = model.predict_proba_one(band(2890.0))
    >>> max(proba, key=proba.get), round(sum(proba.values()), 6)
    ('PE', 1.0)
    """

    def __init__(
        self,
        *,
        encoding: str = "polar",
        image_size: int = 64,
        inner_radius: float = 0.15,
        width: int = 16,
        depth: int = 4,
        dropout: float = 0.1,
        n_synthetic: int = 0,
        max_epochs: int = 30,
        patience: int = 4,
        validation_fraction: float = 0.15,
        batch_size: int = 64,
        learning_rate: float = 3e-3,
        weight_decay: float = 1e-4,
        device: str = "cpu",
        n_threads: int | None = 1,
        seed: int = 0,
    ) -> None:
        self.encoding = encoding
        self.image_size = image_size
        self.inner_radius = inner_radius
        self.width = width
        self.depth = depth
        self.dropout = dropout
        self.n_synthetic = n_synthetic
        self.max_epochs = max_epochs
        self.patience = patience
        self.validation_fraction = validation_fraction
        self.batch_size = batch_size
        self.learning_rate = learning_rate
        self.weight_decay = weight_decay
        self.device = device
        self.n_threads = n_threads
        self.seed = seed

    # ------------------------------------------------------------------ parameters

    def _validate_params(self) -> None:
        def fraction(name: str, value: object, low: float, high: float, *, closed_high: bool) -> None:
            ok = isinstance(value, float | int) and not isinstance(value, bool)
            if ok:
                number = float(value)  # type: ignore[arg-type]
                ok = low <= number and (number <= high if closed_high else number < high)
            if not ok:
                bracket = "]" if closed_high else ")"
                raise ValueError(f"{name} must be in [{low}, {high}{bracket}, got {value!r}")

        check_option("encoding", self.encoding, ENCODINGS)
        check_integer("image_size", self.image_size, at_least=4)
        check_integer("width", self.width, at_least=1)
        check_integer("depth", self.depth, at_least=1)
        if int(self.image_size) < 2 ** int(self.depth):
            raise ValueError(f"image_size {self.image_size} is too small for {self.depth} pooling blocks")
        check_integer("n_synthetic", self.n_synthetic, at_least=0)
        check_integer("max_epochs", self.max_epochs, at_least=1)
        check_integer("patience", self.patience, at_least=1)
        check_integer("batch_size", self.batch_size, at_least=2)
        if self.n_threads is not None:
            check_integer("n_threads", self.n_threads, at_least=1)
        check_integer("seed", self.seed)
        fraction("inner_radius", self.inner_radius, 0.0, 1.0, closed_high=False)
        fraction("dropout", self.dropout, 0.0, 1.0, closed_high=False)
        fraction("validation_fraction", self.validation_fraction, 0.0, 1.0, closed_high=False)
        fraction("learning_rate", self.learning_rate, 0.0, math.inf, closed_high=False)
        fraction("weight_decay", self.weight_decay, 0.0, math.inf, closed_high=False)
        if not float(self.learning_rate) > 0.0:
            raise ValueError(f"learning_rate must be positive, got {self.learning_rate!r}")
        check_option("device", self.device, _DEVICES)

    def _torch_device(self) -> torch.device:
        if self.device == "auto":
            return torch.device("cuda" if torch.cuda.is_available() else "cpu")
        return torch.device(str(self.device))

    # ------------------------------------------------------------------ state

    def _is_fitted(self) -> bool:
        return hasattr(self, "classes_")

    def _initialise(self, n_features: int, feature_names: tuple[Hashable, ...] | None) -> None:
        """Empty learned state for spectra of ``n_features`` points."""
        self._validate_params()
        if n_features < 1:
            raise ValueError("spectra must have at least one point")
        self.n_features_in_ = n_features
        self.feature_names_in_ = feature_names
        self.classes_: list[Hashable] = []
        self.training_spectra_ = np.zeros((0, n_features), dtype=np.float32)
        self.training_codes_ = np.zeros(0, dtype=np.int64)
        self.pending_spectra_: list[FloatMatrix] = []
        self.pending_codes_: list[int] = []
        self.network_: SpectrumImageNet | None = None
        self.architecture_: dict[str, Any] = {}
        self.history_: list[dict[str, float]] = []
        self.best_epoch_ = 0
        self.n_epochs_ = 0
        self.stale_ = False

    # ------------------------------------------------------------------ inputs

    def _code(self, label: Hashable) -> int:
        """Class position of ``label``, appending a new class to ``classes_``."""
        if isinstance(label, np.generic):
            label = label.item()  # NumPy scalars become the equal Python value
        try:
            return self.classes_.index(label)
        except ValueError:
            self.classes_.append(label)
            return len(self.classes_) - 1

    def _encode_images(self, matrix: FloatMatrix) -> FloatMatrix:
        """The network's input for ``matrix``: ``(n, channels, size, size)`` float32.

        The training set's images are all held in memory: 16 KB per spectrum
        and channel at 64 px.
        """
        size = int(self.architecture_.get("image_size", self.image_size))
        encoding = str(self.architecture_.get("encoding", self.encoding))
        inner = float(self.architecture_.get("inner_radius", self.inner_radius))
        return encode_images(matrix, encoding=encoding, size=size, inner_radius=inner)

    # ------------------------------------------------------------------ learning

    def fit(self, X: npt.ArrayLike, y: Iterable[Hashable]) -> PolarCNN:
        """Train from scratch on spectra ``X`` (rows) and labels ``y`` (plus ``n_synthetic`` per class)."""
        self._validate_params()
        matrix = self._as_matrix(X, check_width=False)
        labels = list(y)
        if len(labels) != matrix.shape[0]:
            raise ValueError(f"{matrix.shape[0]} spectra but {len(labels)} labels")
        if matrix.shape[0] == 0:
            raise ValueError("cannot fit on no spectra")
        self._initialise(matrix.shape[1], None)
        codes = np.array([self._code(label) for label in labels], dtype=np.int64)
        self.training_spectra_ = matrix.copy()
        self.training_codes_ = codes
        self._train()
        return self

    def learn_one(self, x: Mapping[Hashable, float] | npt.ArrayLike, y: Hashable) -> None:
        """Add one spectrum ``x`` of class ``y`` to the training rows; the network retrains lazily.

        See the class notes: the next prediction (or :meth:`refit`) retrains
        from scratch on every row learned.
        """
        row, names = self._row(x)
        if not self._is_fitted():
            self._initialise(row.shape[1], names)
        self.pending_spectra_.append(row)
        self.pending_codes_.append(self._code(y))
        self.stale_ = True

    def refit(self) -> PolarCNN:
        """Retrain now on every row learned, if any arrived since the last training."""
        if self._is_fitted() and self.stale_:
            if self.pending_spectra_:
                self.training_spectra_, self.training_codes_ = self._learned_rows()
                self.pending_spectra_, self.pending_codes_ = [], []
            self._train()
        return self

    def _learned_rows(self) -> tuple[FloatMatrix, IntArray]:
        """Every row learned and its class position: the training rows, then those still pending."""
        spectra = np.concatenate([self.training_spectra_, *self.pending_spectra_])
        codes = np.concatenate([self.training_codes_, np.asarray(self.pending_codes_, dtype=np.int64)])
        return spectra, codes

    def _training_set(self) -> tuple[FloatMatrix, IntArray]:
        """The learned rows, plus ``n_synthetic`` mixtures per class when asked for."""
        X, codes = self.training_spectra_, self.training_codes_
        if int(self.n_synthetic) > 0:
            Xs, ys = synthesize(X, codes.tolist(), n_per_class=int(self.n_synthetic), seed=int(self.seed))
            X = np.concatenate([X, Xs])
            codes = np.concatenate([codes, np.asarray([int(c) for c in ys], dtype=np.int64)])
        return X, codes

    def _split(self, codes: IntArray, rng: np.random.Generator) -> tuple[IntArray, IntArray]:
        """Stratified (train, validation) row positions; classes of one row stay in training."""
        train, held = [], []
        for code in np.unique(codes):
            members = rng.permutation(np.flatnonzero(codes == code))
            n_held = min(members.size - 1, round(float(self.validation_fraction) * members.size))
            held.append(members[: max(n_held, 0)])
            train.append(members[max(n_held, 0) :])
        return np.sort(np.concatenate(train)), np.sort(np.concatenate(held))

    def _train(self) -> None:
        """Train a fresh network on the learned rows (early stopping, class-balanced batches)."""
        self._validate_params()
        seed = int(self.seed)
        rng = np.random.default_rng([seed, 7])
        X, codes = self._training_set()
        train_rows, valid_rows = self._split(codes, rng)
        device = self._torch_device()
        self.architecture_ = {
            "encoding": str(self.encoding),
            "image_size": int(self.image_size),
            "inner_radius": float(self.inner_radius),
            "in_channels": 2 if self.encoding == "polar+gasf" else 1,
            "coordinates": True,
            "n_classes": len(self.classes_),
            "width": int(self.width),
            "depth": int(self.depth),
            "dropout": float(self.dropout),
        }
        images = torch.from_numpy(self._encode_images(X))
        targets = torch.from_numpy(codes)
        counts = np.bincount(codes[train_rows], minlength=len(self.classes_)).astype(np.float64)
        row_weights = torch.from_numpy(1.0 / counts[codes[train_rows]])
        history: list[dict[str, float]] = []
        forked = [] if device.type != "cuda" else [device.index or torch.cuda.current_device()]
        with torch_session(self.n_threads, device=device), torch.random.fork_rng(devices=forked):
            torch.manual_seed(seed)
            generator = torch.Generator().manual_seed(seed)
            network = self._build_network().to(device)
            optimiser = torch.optim.AdamW(
                network.parameters(), lr=float(self.learning_rate), weight_decay=float(self.weight_decay)
            )
            loss_function = nn.CrossEntropyLoss()
            train_index = torch.from_numpy(train_rows)
            valid_images = images[torch.from_numpy(valid_rows)].to(device)
            valid_targets = targets[torch.from_numpy(valid_rows)].to(device)
            best_loss, best_epoch, best_state = math.inf, 0, copy.deepcopy(network.state_dict())
            batch = int(self.batch_size)
            for epoch in range(1, int(self.max_epochs) + 1):
                network.train()
                n_draws = max(train_rows.size, MIN_STEPS_PER_EPOCH * batch)
                draws = torch.multinomial(row_weights, n_draws, replacement=True, generator=generator)
                order = train_index[draws]
                total, seen = 0.0, 0
                for start in range(0, order.numel(), batch):
                    rows = order[start : start + batch]
                    if rows.numel() == 1:
                        rows = rows.repeat(2)  # batch statistics need two images
                    inputs, wanted = images[rows].to(device), targets[rows].to(device)
                    optimiser.zero_grad(set_to_none=True)
                    loss = loss_function(network(inputs), wanted)
                    loss.backward()
                    optimiser.step()
                    total += float(loss.detach()) * rows.numel()
                    seen += rows.numel()
                record = {"epoch": float(epoch), "train_loss": total / max(seen, 1)}
                if valid_rows.size:
                    valid_loss, valid_accuracy = self._evaluate(network, valid_images, valid_targets)
                    record.update(valid_loss=valid_loss, valid_accuracy=valid_accuracy)
                    if valid_loss < best_loss * (1.0 - MIN_IMPROVEMENT):
                        best_loss, best_epoch = valid_loss, epoch
                        best_state = copy.deepcopy(network.state_dict())
                else:
                    record.update(valid_loss=math.nan, valid_accuracy=math.nan)
                    best_epoch, best_state = epoch, network.state_dict()
                history.append(record)
                if valid_rows.size and epoch - best_epoch >= int(self.patience):
                    break
            network.load_state_dict(best_state)
            network.eval()
        self.network_ = network
        self.history_ = history
        self.best_epoch_ = best_epoch
        self.n_epochs_ = len(history)
        self.stale_ = False

    def _build_network(self) -> SpectrumImageNet:
        arch = self.architecture_
        return SpectrumImageNet(
            in_channels=int(arch["in_channels"]),
            n_classes=int(arch["n_classes"]),
            width=int(arch["width"]),
            depth=int(arch["depth"]),
            dropout=float(arch["dropout"]),
            coordinates=bool(arch["coordinates"]),
        )

    def _network_from(self, weights: Mapping[str, torch.Tensor]) -> SpectrumImageNet:
        """A network of ``architecture_`` holding ``weights``, in eval mode."""
        network = self._build_network()
        network.load_state_dict(weights)
        network.eval()
        return network

    @staticmethod
    def _evaluate(network: nn.Module, images: torch.Tensor, targets: torch.Tensor) -> tuple[float, float]:
        """Mean cross-entropy and accuracy of ``network`` on a validation set (eval mode)."""
        network.eval()
        with torch.inference_mode():
            logits = torch.cat(
                [network(images[i : i + PREDICT_BATCH]) for i in range(0, len(images), PREDICT_BATCH)]
            )
            loss = float(nn.functional.cross_entropy(logits, targets))
            accuracy = float((logits.argmax(dim=1) == targets).float().mean())
        return loss, accuracy

    # ------------------------------------------------------------------ prediction

    def predict_proba(self, X: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Softmax probability of each class in ``classes_``: ``(n, n_classes)``, rows sum to 1."""
        if not self._is_fitted() or not (self.training_codes_.size or self.pending_codes_):
            raise NotFittedError("this PolarCNN has learned nothing yet: call fit or learn_one first")
        matrix = self._as_matrix(X)
        self.refit()
        network = self.network_
        assert network is not None
        device = self._torch_device()
        proba = np.empty((matrix.shape[0], len(self.classes_)), dtype=np.float64)
        # A few spectra are too little work to share: extra threads would only wait on each other.
        threads = self.n_threads
        if threads is not None and matrix.shape[0] <= SINGLE_THREAD_ROWS:
            threads = 1
        with torch_session(threads, device=device), torch.inference_mode():
            if next(network.parameters()).device != device:
                network.to(device)
            network.eval()
            for start in range(0, matrix.shape[0], PREDICT_BATCH):
                chunk = matrix[start : start + PREDICT_BATCH]
                logits = network(torch.from_numpy(self._encode_images(chunk)).to(device))
                proba[start : start + chunk.shape[0]] = torch.softmax(logits.double(), dim=1).cpu().numpy()
        return proba

    def predict(self, X: npt.ArrayLike) -> npt.NDArray[np.object_]:
        """The most probable class for each spectrum."""
        proba = self.predict_proba(X)
        return self._labels(proba)

    # ------------------------------------------------------------------ persistence

    def __getstate__(self) -> dict[str, Any]:
        state = self.__dict__.copy()
        network = state.get("network_")
        if network is not None:
            state["network_"] = _cpu_weights(network)
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        weights = state.get("network_")
        self.__dict__.update(state)
        if weights is not None:
            self.network_ = self._network_from(weights)

    def save(self, path: str | Path) -> None:
        """Write a checkpoint (parameters, classes, training rows, weights) to ``path`` atomically.

        It is a :func:`torch.save` file that :meth:`load` reads with
        ``weights_only=True``, so it holds only tensors and plain values:
        labels (and dict point names) must be ``str``, ``int``, ``float``,
        ``bool`` or tuples of them. Rows still waiting for a retrain are saved
        with the network they have not yet changed; the loaded model retrains
        when it is next asked to predict, as this one would.
        """
        learned: dict[str, Any] = {}
        if self._is_fitted():
            for label in [*self.classes_, *(self.feature_names_in_ or ())]:
                _check_plain(label)
            spectra, codes = self._learned_rows()
            learned = {
                "n_features_in_": self.n_features_in_,
                "feature_names_in_": self.feature_names_in_,
                "classes_": list(self.classes_),
                "training_spectra_": torch.from_numpy(spectra),
                "training_codes_": torch.from_numpy(codes),
                "stale_": bool(self.stale_),
                "architecture_": dict(self.architecture_),
                "history_": [dict(record) for record in self.history_],
                "best_epoch_": self.best_epoch_,
                "n_epochs_": self.n_epochs_,
                "network_": None if self.network_ is None else _cpu_weights(self.network_),
            }
        buffer = io.BytesIO()
        torch.save(
            {
                "format": CHECKPOINT_FORMAT,
                "version": CHECKPOINT_VERSION,
                "params": self.get_params(),
                "learned": learned,
            },
            buffer,
        )
        atomic_write_bytes(path, buffer.getvalue())

    @classmethod
    def load(cls, path: str | Path) -> PolarCNN:
        """A model read back from a checkpoint written by :meth:`save` (on the CPU)."""
        with Path(path).open("rb") as handle:
            checkpoint = torch.load(handle, map_location="cpu", weights_only=True)
        if not isinstance(checkpoint, dict) or checkpoint.get("format") != CHECKPOINT_FORMAT:
            raise ValueError(f"{path} is not a PolarCNN checkpoint")
        if checkpoint.get("version") != CHECKPOINT_VERSION:
            raise ValueError(f"{path}: checkpoint version {checkpoint.get('version')} is not supported")
        model = cls(**checkpoint["params"])
        learned = checkpoint["learned"]
        if learned:
            model._initialise(int(learned["n_features_in_"]), learned["feature_names_in_"])
            model.classes_ = list(learned["classes_"])
            model.training_spectra_ = learned["training_spectra_"].numpy().copy()
            model.training_codes_ = learned["training_codes_"].numpy().copy()
            model.architecture_ = dict(learned["architecture_"])
            model.history_ = list(learned["history_"])
            model.best_epoch_ = int(learned["best_epoch_"])
            model.n_epochs_ = int(learned["n_epochs_"])
            model.stale_ = bool(learned["stale_"])
            if learned["network_"] is not None:
                model.network_ = model._network_from(learned["network_"])
        return model


def _cpu_weights(network: nn.Module) -> dict[str, torch.Tensor]:
    """A copy of ``network``'s weights and buffers on the CPU, detached: what is pickled or saved."""
    return {k: v.detach().cpu().clone() for k, v in network.state_dict().items()}


def _check_plain(label: object) -> None:
    """Raise ValueError for a label that a ``weights_only`` checkpoint cannot hold."""
    if isinstance(label, tuple):
        for part in label:
            _check_plain(part)
        return
    if type(label) not in (str, int, float, bool):
        raise ValueError(f"label {label!r} ({type(label).__name__}) cannot be saved: use str or int labels")
