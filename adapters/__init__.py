"""Adapters (Houlsby et al. 2019) and AdapterFusion (Pfeiffer et al. 2021). Paper code arrives in its own issue.

Note: this import name is the same as AdapterHub's `adapters` package; do not install both in one environment.
"""
