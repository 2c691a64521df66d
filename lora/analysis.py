"""LoRA's analysis of the learned updates (Hu et al. 2022, §7).

Subspace similarity (§7.2, Figures 3 and 4): with ``U_A`` the right singular vectors of ``A (r, d)``,
ordered by singular value,

    phi(A1, A2, i, j) = ||U_A1[:, :i]^T U_A2[:, :j]||_F^2 / min(i, j)   in [0, 1]

Amplification (§7.3, Table 7): project ``W`` onto the top-r singular directions ``U, V`` of ΔW
(or of W itself, or random ones): ``||U^T W V||_F``; the amplification factor is
``||ΔW||_F / ||U^T W V||_F`` with ΔW's directions.
"""
from __future__ import annotations

import re

import pandas as pd
import torch

ANALYSIS_LAYER = 3  # 1-based; the paper shows the middle layer (48 of GPT-3's 96), MiniLM has 6
_KEY = re.compile(r".*layer\.(\d+)\..*\.(query|value)\.lora_([AB])\.default\.weight")
MATRIX = {"query": "Wq", "value": "Wv"}


def factors_by_layer(state: dict[str, torch.Tensor]) -> dict[tuple[str, int], dict[str, torch.Tensor]]:
    """Checkpoint tensors -> ``{("Wq", layer 1-based): {"A": (r, d), "B": (d, r)}}``."""
    out: dict = {}
    for k, v in state.items():
        m = _KEY.fullmatch(k)
        if m:
            out.setdefault((MATRIX[m.group(2)], int(m.group(1)) + 1), {})[m.group(3)] = v.double()
    if not out:
        raise ValueError("no LoRA factors of Wq / Wv found in the checkpoint")
    return out


def right_singular(A: torch.Tensor) -> torch.Tensor:
    """(r, d) -> (d, r): right singular vectors, by decreasing singular value."""
    _, _, Vh = torch.linalg.svd(A.double(), full_matrices=False)
    return Vh.T


def phi_grid(U1: torch.Tensor, U2: torch.Tensor) -> torch.Tensor:
    """``phi[i-1, j-1]`` for all i <= U1's columns, j <= U2's: cumulative sums of squared overlaps."""
    sq = (U1.T @ U2).pow(2)  # (r1, r2)
    cum = sq.cumsum(0).cumsum(1)
    i = torch.arange(1, sq.shape[0] + 1, dtype=sq.dtype)[:, None]
    j = torch.arange(1, sq.shape[1] + 1, dtype=sq.dtype)[None, :]
    return cum / torch.minimum(i, j)


def _rows(grid: torch.Tensor, **keys) -> list[dict]:
    r1, r2 = grid.shape
    return [{**keys, "i": i + 1, "j": j + 1, "phi": round(float(grid[i, j]), 5)} for i in range(r1) for j in range(r2)]


def _directions(ab: dict[str, torch.Tensor], factor: str) -> torch.Tensor:
    """(d, r): right singular vectors of A, or the top-r ones of ΔW = B A (A's directions weighted by B)."""
    if factor == "A":
        return right_singular(ab["A"])
    return right_singular(ab["B"] @ ab["A"])[:, : ab["A"].shape[0]]


def subspace_table(states: dict[tuple[int, int], dict[str, torch.Tensor]], seed: int = 0,
                   layer: int = ANALYSIS_LAYER) -> pd.DataFrame:
    """``states``: ``{(r, k): checkpoint}`` with (8, 1), (64, 1), (64, 2), k numbering the seeds (the first
    and second reported seed). Rows for ``layer`` and for the mean over layers: r 8 vs r 64 (first seed) and
    r 64 first vs second seed, from A (the paper's
    Figures 3 / 4) and from ΔW = B A; and the same two shapes for random Gaussian matrices."""
    f = {k: factors_by_layer(v) for k, v in states.items()}
    gen = torch.Generator().manual_seed(seed)
    rows = []
    for matrix in ("Wq", "Wv"):
        layers = sorted(l for (m, l) in f[(64, 1)] if m == matrix)
        d = f[(64, 1)][(matrix, layers[0])]["A"].shape[1]
        pairs = {}  # (factor, comparison) -> layer -> (U1, U2)
        for factor in ("A", "dW"):
            pairs[(factor, "r8_vs_r64")] = {l: (_directions(f[(8, 1)][(matrix, l)], factor),
                                                _directions(f[(64, 1)][(matrix, l)], factor)) for l in layers}
            pairs[(factor, "two_seeds_r64")] = {l: (_directions(f[(64, 1)][(matrix, l)], factor),
                                                         _directions(f[(64, 2)][(matrix, l)], factor)) for l in layers}
        for comp, (r1, r2) in {"r8_vs_r64": (8, 64), "two_seeds_r64": (64, 64)}.items():
            pairs[("gaussian", comp)] = {l: (right_singular(torch.randn(r1, d, generator=gen, dtype=torch.float64)),
                                             right_singular(torch.randn(r2, d, generator=gen, dtype=torch.float64)))
                                         for l in layers}
        for (factor, comp), by_layer in pairs.items():
            grids = {l: phi_grid(*u) for l, u in by_layer.items()}
            keys = dict(matrix=matrix, factor=factor, comparison=comp)
            rows += _rows(grids[layer], layer=str(layer), **keys)
            rows += _rows(torch.stack(list(grids.values())).mean(0), layer="mean", **keys)
    return pd.DataFrame(rows, columns=["matrix", "factor", "layer", "comparison", "i", "j", "phi"])


def top_directions(M: torch.Tensor, r: int) -> tuple[torch.Tensor, torch.Tensor]:
    U, _, Vh = torch.linalg.svd(M.double(), full_matrices=False)
    return U[:, :r], Vh[:r].T  # (d_out, r), (d_in, r)


def amplification_table(runs: dict[int, tuple[dict, float]], layer: int = ANALYSIS_LAYER, seed: int = 0,
                        base_weights: dict[tuple[str, int], torch.Tensor] | None = None,
                        n_random: int = 100) -> pd.DataFrame:
    """``runs``: ``{r: (checkpoint, alpha)}``. Per matrix and r, ``||U^T W V||_F`` for the top-r
    directions of ΔW, of W and random ones (root mean square over ``n_random`` orthonormal draws, so
    one draw's luck does not set the baseline), with ``||W||_F``, ``||ΔW||_F`` and their ratio."""
    if base_weights is None:
        base_weights = minilm_weights()
    gen = torch.Generator().manual_seed(seed)
    rows = []
    for r, (state, alpha) in sorted(runs.items()):
        for (matrix, l), ab in sorted(factors_by_layer(state).items()):
            if l != layer:
                continue
            W = base_weights[(matrix, l)].double()  # (d_out, d_in)
            dW = (alpha / r) * ab["B"] @ ab["A"]  # (d_out, d_in)
            rand_u = torch.linalg.qr(torch.randn(n_random, W.shape[0], r, generator=gen, dtype=torch.float64))[0]
            rand_v = torch.linalg.qr(torch.randn(n_random, W.shape[1], r, generator=gen, dtype=torch.float64))[0]
            dirs = {"delta_w": top_directions(dW, r), "w": top_directions(W, r), "random": (rand_u, rand_v)}
            dw_norm = float(dW.norm())
            for name, (U, V) in dirs.items():  # U (.., d_out, r), V (.., d_in, r)
                proj = float((U.mT @ W @ V).square().sum((-2, -1)).mean().sqrt())  # one draw: ||U^T W V||_F
                rows.append({"matrix": matrix, "layer": l, "r": r, "directions": name, "proj_norm": proj,
                             "w_norm": float(W.norm()), "delta_w_norm": dw_norm,
                             "amplification": dw_norm / proj if name == "delta_w" else None})
    return pd.DataFrame(rows)


def minilm_weights() -> dict[tuple[str, int], torch.Tensor]:
    from common.models import load_backbone

    bb = load_backbone("minilm")
    return {(MATRIX[m.group(2)], int(m.group(1)) + 1): p.detach()
            for n, p in bb.named_parameters()
            if (m := re.fullmatch(r"encoder\.layer\.(\d+)\.attention\.self\.(query|value)\.weight", n))}
