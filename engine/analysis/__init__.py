"""Analysis kept off the hot path: cross-source evaluation, the conventions matrix, the aging report, plots.

- :mod:`engine.analysis.evaluate`: cross-source scoring, leave-one-class-out rejection, the study protocol;
- :mod:`engine.analysis.renderings`: other labs' conventions, and spectra written as files in them;
- :mod:`engine.analysis.robustness`: the robustness matrix, every rendering identified and scored;
- :mod:`engine.analysis.aging_report`: aging indices of a labelled set, pristine against environmental;
- :mod:`engine.analysis.reliability`: whether a confidence means what it says (reliability bins, ECE);
- :mod:`engine.analysis.plots`: the figures of all of these (matplotlib).

Nothing in the daemon imports these modules; ``mpwatch evaluate`` does.
"""
