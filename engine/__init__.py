"""mpwatch's science, as a library: spectra in, preprocessing, reference library, models.

No threads, no file watching and no HTTP live here; the daemon package wraps
this one, and this one imports nothing from it.

- :mod:`engine.core`: the Spectrum type, conventions (unit, technique), preprocessing, the library;
- :mod:`engine.io`: one reader per instrument format, chosen by one registry;
- :mod:`engine.models`: the subspace kNN, the CNN, the open-set decision and the served model;
- :mod:`engine.analysis`: evaluation, the conventions matrix, the aging report and plots (off the hot path);
- :mod:`engine.cli`: the commands that need only the engine.
"""

from __future__ import annotations

from engine.core.spectrum import Spectrum, SpectrumError

__all__ = ["Spectrum", "SpectrumError"]
__version__ = "0.1.0"
