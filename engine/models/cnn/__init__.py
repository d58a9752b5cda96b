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
  training with early stopping, prediction, checkpoints.

Importing this package imports torch.
"""

from engine.models.cnn.encoding import gramian_field, polar_images
from engine.models.cnn.estimator import PolarCNN
from engine.models.cnn.net import SpectrumImageNet

__all__ = ["PolarCNN", "SpectrumImageNet", "gramian_field", "polar_images"]
