"""Analysis kept off the hot path: cross-source evaluation, the conventions matrix, the aging report, plots.

Nothing in the daemon imports these modules; ``mpwatch evaluate`` and
``mpwatch aging`` do.
"""
