"""The filter's pixels: background by low signal, or by likeness to the filter spectrum learned from the map.

A particle sits on a filter; most of a map is that filter. Its pixels are
background, never ``unknown``: they are set apart before any pixel is
identified. Two tests, both cheap per pixel (see :class:`engine.maps.MapConfig`):

- **low signal**: the standard deviation of a pixel's absorbance over its bands
  is below ``background_snr`` times its own noise (the robust spread of its
  second differences) or below ``background_fraction`` of the map's bright level;
- **the learned filter**: the mean absorbance of the dimmest sampled pixels is
  the filter's spectrum. When that mean carries a spectrum (its own signal
  clears its noise, as a polycarbonate or cellulose filter's does), a pixel
  whose features correlate with the filter's at ``background_r`` or more is
  background too.

>>> rng = np.random.default_rng(0)
>>> flat = rng.normal(0.0, 0.01, (3, 200)).astype(np.float32)
>>> band = flat[:1] + np.exp(-((np.arange(200) - 100) / 5.0) ** 2).astype(np.float32)
>>> signal, noise = signal_and_noise(np.vstack([flat, band]))
>>> (signal > 5 * noise).tolist()
[False, False, False, True]
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt

from engine.maps.config import MapConfig
from engine.models.openset import pearson_rows

__all__ = ["Background", "learn_background", "signal_and_noise"]

FloatMatrix = npt.NDArray[np.float32]
FloatVector = npt.NDArray[np.float64]

#: The noise of a second difference is sqrt(6) times the noise of a point, and the mean absolute value of
#: normal noise is sqrt(2 / pi) sigma.
_NOISE_SCALE = float(np.sqrt(np.pi / 2.0) / np.sqrt(6.0))

#: The 99th percentile of the sampled pixels' signal is the map's bright level.
BRIGHT_PERCENTILE = 99.0

#: Fewest sampled pixels from which a filter spectrum is learned.
MIN_FILTER_PIXELS = 8


def signal_and_noise(absorbance: FloatMatrix) -> tuple[FloatVector, FloatVector]:
    """Per row: its signal (standard deviation over the bands) and noise level (from second differences).

    The noise level is the mean absolute second difference, scaled to one standard deviation of
    white noise. A band's curvature raises it a little, so it errs on the side of more noise: a
    pixel is called a particle only when its signal clears the noise with room to spare.
    """
    signal = absorbance.std(axis=1).astype(np.float64)
    if absorbance.shape[1] < 3:
        return signal, np.zeros(len(absorbance))
    second = absorbance[:, 2:] - 2 * absorbance[:, 1:-1] + absorbance[:, :-2]
    noise = _NOISE_SCALE * np.abs(second).mean(axis=1).astype(np.float64)
    return signal, noise


@dataclass(frozen=True)
class Background:
    """A map's background model: the low-signal levels and, when the filter has a spectrum, its features."""

    bright: float
    snr: float
    fraction: float
    filter_features: FloatMatrix | None
    r: float | None

    def low_signal(self, signal: FloatVector, noise: FloatVector) -> npt.NDArray[np.bool_]:
        """Pixels too weak to be a particle."""
        return (signal < self.snr * noise) | (signal < self.fraction * self.bright) | (signal <= 0)

    def like_filter(self, features: FloatMatrix) -> npt.NDArray[np.bool_]:
        """Pixels whose features correlate with the learned filter spectrum's at ``r`` or more."""
        if self.filter_features is None or self.r is None or len(features) == 0:
            return np.zeros(len(features), dtype=bool)
        return np.asarray((pearson_rows(features) @ self.filter_features.T)[:, 0] >= self.r)

    def as_dict(self) -> dict[str, Any]:
        """What a map's metadata records of its background model."""
        return {
            "bright_level": round(self.bright, 6),
            "snr": self.snr,
            "fraction": self.fraction,
            "filter_spectrum": self.filter_features is not None,
            "filter_r": self.r if self.filter_features is not None else None,
        }


def learn_background(
    absorbance: FloatMatrix,
    features: Callable[[FloatMatrix], FloatMatrix],
    config: MapConfig,
) -> Background:
    """The background model of a map from a sample of its pixels (``absorbance``, finite rows).

    ``features`` turns absorbance rows into the model's features (the map's preprocessor).
    """
    if len(absorbance) == 0:
        return Background(0.0, config.background_snr, config.background_fraction, None, None)
    signal = signal_and_noise(absorbance)[0]
    bright = float(np.percentile(signal, BRIGHT_PERCENTILE))
    filter_features = None
    if config.background_r is not None:
        n_dim = max(1, int(np.ceil(config.background_quantile * len(absorbance))))
        if n_dim >= MIN_FILTER_PIXELS:
            dimmest = np.argsort(signal, kind="stable")[:n_dim]
            mean = absorbance[dimmest].mean(axis=0, keepdims=True)
            mean_signal, mean_noise = signal_and_noise(mean)
            if mean_signal[0] >= config.background_snr * max(float(mean_noise[0]), 1e-12):
                filter_features = pearson_rows(features(mean))
    return Background(
        bright=bright,
        snr=config.background_snr,
        fraction=config.background_fraction,
        filter_features=filter_features,
        r=config.background_r,
    )
