"""AdapterFusion's attention (Fig. 5 analogue): per layer, the mean fusion weight each adapter gets over the
real tokens of a task's dev set, from a saved fusion run."""
from __future__ import annotations

from collections.abc import Callable

import pandas as pd
import torch

from common.methods import load_trainable
from common.records import record_path
from common.run import checkpoint_dir, prepare
from common.trainer import loader

from .fusion import fusion_weights


@torch.no_grad()
def mean_weights(model, items: list[dict], spec, pad_id: int, batch_size: int = 32) -> torch.Tensor:
    """(layers, N): each layer's fusion weights averaged over every non-padding position of ``items``."""
    total, count = None, None
    model.eval()
    for batch in loader(items, spec, pad_id, batch_size, shuffle=False):
        ws = fusion_weights(model, batch)  # per layer (B, L_l, N)
        mask = batch["attention_mask"].bool()
        # encoder layers: real tokens only; decoder layers (another length) see no padding
        sums = torch.stack([w[mask].sum(0) if w.size(1) == mask.size(1) else w.sum((0, 1)) for w in ws])  # (layers, N)
        n = torch.tensor([float(mask.sum()) if w.size(1) == mask.size(1) else float(w.size(0) * w.size(1))
                          for w in ws])
        total = sums if total is None else total + sums
        count = n if count is None else count + n
    return total / count[:, None]


ATTENTION_COLUMNS = ["task", "seed", "run_id", "layer", "adapter", "weight"]


def fusion_attention(cfg: dict, rerun: Callable[[dict], object]) -> pd.DataFrame:
    """Rows (task, seed, run_id, layer, adapter, weight) for the fusion run ``cfg`` (re-run when its checkpoint is
    gone)."""
    run = record_path(cfg).stem
    ckpt = checkpoint_dir(run) / "trainable.safetensors"
    if not ckpt.is_file():
        rerun({**cfg, "trainer": {**cfg["trainer"], "save_checkpoint": True}})
    spec, model, tok, items, _, method_cfg = prepare(cfg)
    load_trainable(model, ckpt)
    w = mean_weights(model, items["dev"], spec, tok.pad_token_id)
    return pd.DataFrame([(spec.name, cfg["seed"], run, i, a, float(w[i, j]))
                         for i in range(w.size(0)) for j, a in enumerate(method_cfg.adapters)],
                        columns=ATTENTION_COLUMNS)
