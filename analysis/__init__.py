"""Scripts that regenerate the documentation's measured tables and figures.

Run from the repository, e.g. ``python analysis/make_offloading_docs.py``. They use the
analysis library, which ships with the simulator as ``fedsim.analysis`` (it loads run and
sweep folders and needs neither Ray nor torch). This folder is not part of the package.
"""
