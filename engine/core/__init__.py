"""The core every other part of the engine stands on: spectra, their conventions, preprocessing, the library.

- :mod:`engine.core.spectrum`: the Spectrum type and SpectrumError;
- :mod:`engine.core.conventions`: each spectrum's technique and y unit, declared or inferred;
- :mod:`engine.core.preprocess`: scikit-learn transformers and the named pipelines;
- :mod:`engine.core.labels`: canonical polymer abbreviations;
- :mod:`engine.core.augment`: synthetic spectra from the library's references;
- :mod:`engine.core.library`: the versioned reference library (one technique each);
- :mod:`engine.core.storage`: atomic writes of the state the engine keeps on disk;
- :mod:`engine.core.aging`: a particle's aging indices (carbonyl, hydroxyl ...).
"""
