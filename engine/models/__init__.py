"""The classifiers, and the served model that puts them together.

- :mod:`engine.models.base`: what the classifiers share (checked inputs, river's per-sample API);
- :mod:`engine.models.subknn`: the FAISS-backed random-subspace kNN ensemble;
- :mod:`engine.models.cnn`: the CNN on polar images (encoding, net, estimator);
- :mod:`engine.models.openset`: the quality gate and the open-set decision (known, unknown, low quality);
- :mod:`engine.models.calibration`: confidence, the probability that a label is right, from held-out evidence;
- :mod:`engine.models.ranges`: routing by acquisition range, and the cache of range models;
- :mod:`engine.models.served`: the served identification model, one result per spectrum;
- :mod:`engine.models.result`: that result and its evidence hits.
"""
