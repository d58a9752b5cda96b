"""A CNN member on polar-coordinate images of spectra (the KWR study's challenger).

A spectrum is drawn as an image, a 2-D CNN learns the images, and the
classifier around it offers the same per-sample API as the subspace kNN:

- :mod:`engine.models.cnn.encoding`: the image encodings, :func:`polar_images`
  (the spectrum as a curve on polar axes) and :func:`gramian_field` (its
  Gramian angular summation field);
- :mod:`engine.models.cnn.net`: the torch network :class:`SpectrumImageNet`
  and the torch settings (threads, deterministic algorithms) that training
  and prediction run under;
- :mod:`engine.models.cnn.estimator`: :class:`PolarCNN`, the classifier:
  training with early stopping, prediction, checkpoints;
- :mod:`engine.models.cnn.runtime`: the trained network as an ONNX file and
  :class:`ServedCNN`, which answers with ONNX Runtime (what the daemon serves).

Names are imported on first use: the encodings and :class:`ServedCNN` need no
torch, so a process that only serves a CNN never imports it.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from engine.models.cnn.encoding import gramian_field, polar_images
    from engine.models.cnn.estimator import PolarCNN
    from engine.models.cnn.net import SpectrumImageNet
    from engine.models.cnn.runtime import ServedCNN, cnn_for, export_onnx

__all__ = [
    "PolarCNN",
    "ServedCNN",
    "SpectrumImageNet",
    "cnn_for",
    "export_onnx",
    "gramian_field",
    "polar_images",
]

_HOMES = {
    "gramian_field": "encoding",
    "polar_images": "encoding",
    "PolarCNN": "estimator",
    "SpectrumImageNet": "net",
    "ServedCNN": "runtime",
    "cnn_for": "runtime",
    "export_onnx": "runtime",
}


def __getattr__(name: str) -> Any:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{home}"), name)
