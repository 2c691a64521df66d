"""Adapters (Houlsby et al. 2019) and AdapterFusion (Pfeiffer et al. 2021): ``adapters.methods`` registers
``method=adapter`` (Houlsby / Pfeiffer placement).

Note: this import name is the same as AdapterHub's `adapters` package; do not install both in one environment.
"""
