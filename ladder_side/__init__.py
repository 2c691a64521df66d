"""Ladder Side-Tuning (Sung, Cho, Bansal, NeurIPS 2022). Paper code arrives in its own issue."""
