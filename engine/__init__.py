"""mpwatch's science, as a library: spectra in, preprocessing, reference library, models.

No threads, no file watching and no HTTP live here; the daemon package wraps
this one. The modules are small and single-purpose:

- :mod:`engine.core.spectrum`: the Spectrum type and SpectrumError
- :mod:`engine.io`: one reader per instrument format
- :mod:`engine.core.conventions`: each spectrum's technique and y unit, declared or inferred
- :mod:`engine.core.preprocess`: scikit-learn transformers and the named pipelines
- :mod:`engine.core.labels`: canonical polymer abbreviations
- :mod:`engine.core.library`: the versioned reference library (one technique each)
- :mod:`engine.models.ranges`: routing by acquisition range and the cache of range models
- :mod:`engine.models.served`: the served identification model (see docs/ARCHITECTURE.md for the rest)
- :mod:`engine.analysis.robustness`: the robustness matrix over other labs' conventions
"""

from __future__ import annotations

from engine.core.spectrum import Spectrum, SpectrumError

__all__ = ["Spectrum", "SpectrumError"]
__version__ = "0.1.0"
