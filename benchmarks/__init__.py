"""Benchmarks of the engine, each runnable as ``python -m benchmarks.<name>``.

They measure speed and memory on the real labelled sets beside the repository
(``../shared/data``, or ``MPWATCH_SHARED_DATA``), print a table and write a
JSON file; they are not tests and assert nothing about timings.
"""
