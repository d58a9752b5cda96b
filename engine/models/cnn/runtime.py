"""The CNN member as it is served: an ONNX file run by ONNX Runtime, with no torch in the process.

Training needs torch; answering does not. :func:`export_onnx` writes a trained
:class:`~engine.models.cnn.PolarCNN`'s network as one ONNX file (torch's
exporter), with everything needed to use it in the file's metadata: the
classes, the image encoding, the points per spectrum, and whatever the caller
adds (the fusion weight that held-out evaluation gave it, the library it was
trained on). :class:`ServedCNN` reads that file with ONNX Runtime on one
thread and offers ``classes_`` and ``predict_proba`` like the estimator.

Why not serve the torch network: importing torch adds about 200 MB to a
process and 1.5 s to its start; ONNX Runtime adds about 40 MB (in calls of
:data:`BATCH` spectra), and runs the default network on a spectrum in about
0.1 ms (the image encoding, shared with training, about as much again). The file of the default network is
about 0.5 MB, small enough to ship beside a library.
"""

from __future__ import annotations

import json
import logging
import warnings
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
import numpy.typing as npt

from engine.core.library import ReferenceLibrary
from engine.core.storage import atomic_write_bytes
from engine.models.base import finite_matrix
from engine.models.cnn.encoding import encode_images

if TYPE_CHECKING:
    from engine.models.cnn.estimator import PolarCNN

logger = logging.getLogger(__name__)

__all__ = ["BESIDE_LIBRARY", "METADATA_KEY", "ServedCNN", "cnn_for", "export_onnx"]

#: The key of the model's metadata entry that holds mpwatch's JSON.
METADATA_KEY = "mpwatch"
FORMAT = "mpwatch.cnn.onnx"
FORMAT_VERSION = 1
#: Spectra encoded and run per call of the session: small calls keep ONNX Runtime's buffers small
#: (a daemon batch of 64 in calls of 16 holds 15 MB, in one call 33 MB) at the same speed.
BATCH = 16
#: The name of a CNN kept in a library's folder (each bundled library ships one: ``make cnn``).
BESIDE_LIBRARY = "cnn.onnx"


def export_onnx(cnn: PolarCNN, path: str | Path, *, metadata: Mapping[str, Any] | None = None) -> None:
    """Write ``cnn``'s network to ``path`` as ONNX, atomically, with ``metadata`` beside its own.

    The batch axis is dynamic. Raises ValueError when ``cnn`` has no trained network.
    """
    import onnx  # the exporter's dependencies: only where a CNN is trained
    import torch

    network = cnn.refit().network_ if hasattr(cnn, "classes_") else None
    if network is None:
        raise ValueError("this PolarCNN has no trained network to export")
    architecture = cnn.architecture_
    size, channels = int(architecture["image_size"]), int(architecture["in_channels"])
    network = network.to("cpu").eval()
    example = torch.zeros((2, channels, size, size), dtype=torch.float32)
    with _exporter_quiet():
        program = torch.onnx.export(
            network,
            (example,),
            dynamo=True,
            input_names=["images"],
            output_names=["logits"],
            dynamic_shapes={"images": {0: torch.export.Dim("batch")}},
            verbose=False,
        )
    assert program is not None
    proto = program.model_proto
    described = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "classes": [str(c) for c in cnn.classes_],
        "n_features": int(cnn.n_features_in_),
        "encoding": str(architecture["encoding"]),
        "image_size": size,
        "inner_radius": float(architecture["inner_radius"]),
        **dict(metadata or {}),
    }
    onnx.helper.set_model_props(proto, {METADATA_KEY: json.dumps(described)})
    atomic_write_bytes(path, proto.SerializeToString())


@contextmanager
def _exporter_quiet() -> Iterator[None]:
    """The exporter's passes log each rewrite at INFO, and warn of operators of packages not
    installed (torchvision's) and of their own deprecations: none of it is the user's concern."""
    loggers = [logging.getLogger(name) for name in ("torch.onnx", "onnxscript", "onnx_ir")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", FutureWarning)
            warnings.simplefilter("ignore", DeprecationWarning)
            yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.setLevel(level)


class ServedCNN:
    """A CNN member read from an ONNX file written by :func:`export_onnx`, run by ONNX Runtime.

    Attributes
    ----------
    classes_
        The network's classes, in the order of its outputs.
    n_features_in_
        Points per spectrum it was trained on; other widths are refused.
    metadata
        Everything the file says about itself (see :func:`export_onnx`).
    weight
        The fusion weight that held-out evaluation gave it (``metadata["weight"]``, 0 when absent).
    """

    def __init__(self, model: bytes) -> None:
        self._model = bytes(model)
        self._open()

    def _open(self) -> None:
        import onnxruntime as ort

        options = ort.SessionOptions()
        # One thread: the daemon classifies beside its helpers, and a batch is a few ms of work.
        options.intra_op_num_threads = 1
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        options.enable_mem_pattern = False  # planned buffers for every batch size seen: memory for nothing
        self._session = ort.InferenceSession(self._model, options, providers=["CPUExecutionProvider"])
        found = self._session.get_modelmeta().custom_metadata_map.get(METADATA_KEY)
        if found is None:
            raise ValueError("this ONNX file carries no mpwatch metadata: it was not written by export_onnx")
        metadata = json.loads(found)
        if metadata.get("format") != FORMAT or metadata.get("format_version") != FORMAT_VERSION:
            found_format = f"{metadata.get('format')} {metadata.get('format_version')}"
            raise ValueError(f"unsupported CNN file: {found_format}, not {FORMAT} {FORMAT_VERSION}")
        self.metadata: dict[str, Any] = metadata
        self.classes_: list[str] = [str(c) for c in metadata["classes"]]
        self.n_features_in_ = int(metadata["n_features"])

    @classmethod
    def load(cls, path: str | Path) -> ServedCNN:
        return cls(Path(path).read_bytes())

    @property
    def weight(self) -> float:
        return float(self.metadata.get("weight", 0.0))

    def predict_proba(self, X: npt.ArrayLike) -> npt.NDArray[np.float64]:
        """Softmax probability of each class in ``classes_``: ``(n, n_classes)``, rows sum to 1."""
        matrix = finite_matrix(X)
        if matrix.shape[1] != self.n_features_in_:
            raise ValueError(f"spectra have {matrix.shape[1]} points; the CNN reads {self.n_features_in_}")
        meta = self.metadata
        proba = np.empty((matrix.shape[0], len(self.classes_)), dtype=np.float64)
        for start in range(0, matrix.shape[0], BATCH):
            chunk = matrix[start : start + BATCH]
            size, inner = int(meta["image_size"]), float(meta["inner_radius"])
            images = encode_images(chunk, encoding=meta["encoding"], size=size, inner_radius=inner)
            logits = np.asarray(self._session.run(None, {"images": images})[0], dtype=np.float64)
            logits -= logits.max(axis=1, keepdims=True)
            odds = np.exp(logits)
            proba[start : start + chunk.shape[0]] = odds / odds.sum(axis=1, keepdims=True)
        return proba

    def save(self, path: str | Path) -> None:
        """Write the ONNX file back, atomically (a copy of what was loaded)."""
        atomic_write_bytes(path, self._model)

    def __getstate__(self) -> dict[str, Any]:
        return {"model": self._model}  # a session cannot be pickled; the bytes rebuild it

    def __setstate__(self, state: dict[str, Any]) -> None:
        self._model = state["model"]
        self._open()


def cnn_for(library: ReferenceLibrary, candidates: Iterable[str | Path]) -> ServedCNN | None:
    """The first of the ``candidates`` (ONNX files) that exists and was trained on ``library``'s
    content (its report's ``library_hash``), or ``None``.

    A CNN trained on another version of the library is not used: its classes and
    weight were measured on other references.
    """
    for candidate in candidates:
        path = Path(candidate)
        if not path.is_file():
            continue
        cnn = ServedCNN.load(path)
        if cnn.metadata.get("report", {}).get("library_hash") == library.content_hash:
            return cnn
        logger.info("the CNN %s was trained on another library than the one served", path)
    return None
