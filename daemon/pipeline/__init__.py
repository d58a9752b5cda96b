"""The pipeline: pending work claimed into a bounded queue, read and classified, recorded.

A worker thread classifies batches with the served model (:mod:`daemon.pipeline.serving`),
a finisher thread records them, and the helper processes do the model-free work.
A batch that fails is given up file by file (``give_up``), never silently dropped.
"""
