"""Ladder side-tuning (Sung, Cho, Bansal 2022): ``ladder_side.methods`` registers ``method=lst``."""
