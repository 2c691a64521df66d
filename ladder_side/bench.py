"""Benchmark: LST's two performance targets, measured in one run. Writes ``results/bench/ladder_side.csv``.

    python -m ladder_side.bench [--batches 8] [--repeats 2]

1. Training memory (``common.memory``: parameters + gradients + AdamW state + saved activations) of LST
   (r 8) over full fine-tuning's, MiniLM, batch 32, length 128. Target <= 0.25 (paper: 0.31 on T5-base). Also
   with the side's attention dropout at the backbone's 0.1 (``lst_attn_dropout``), where the side keeps its
   attention maps for backward.
2. Epoch time of LST with ``cache_backbone`` after the first epoch, over full fine-tuning's epoch time, on the
   same ``--batches`` batches of 32 x 128. Target <= 0.2.

Each configuration runs in a fresh process; repeats are interleaved and summarised by their median.
"""
from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

from common.bench import in_subprocess, minilm_batch, write_csv
from common.paths import RESULTS_DIR

CONFIGS = {"full_ft": {"name": "full_ft"}, "lst": {"name": "lst", "init": "random"},
           "lst_cached": {"name": "lst", "init": "random", "cache_backbone": True},
           # the side's attention dropout at the backbone's 0.1 (the paper's): SDPA's math path keeps the L x L maps
           "lst_attn_dropout": {"name": "lst", "init": "random", "side_attention_dropout": None}}


def measure(name: str, seq_len: int, batch_size: int, n_batches: int) -> dict:
    import torch

    from common.memory import training_memory
    from common.methods import attach_method, load_plugins
    from common.models import build_task_model

    load_plugins()
    torch.manual_seed(0)
    model, tok = build_task_model("minilm", "classification", 2)
    attach_method(model, CONFIGS[name], max_seq_len=seq_len)
    base = minilm_batch(tok, batch_size * n_batches, seq_len)
    batches = [{k: v[i * batch_size:(i + 1) * batch_size] for k, v in base.items()} for i in range(n_batches)]
    out = training_memory(model, batches[0])
    trainable = [p for p in model.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(trainable, lr=1e-5)
    model.train()
    for epoch in (1, 2):
        t0 = time.perf_counter()
        for b in batches:
            model(b)["loss"].backward()
            opt.step()
            opt.zero_grad(set_to_none=True)
        out[f"epoch{epoch}_s"] = time.perf_counter() - t0
    if name == "lst_cached":
        out["cache_mb"] = model.token_encoder.cache_bytes() / 2**20
    out["threads"] = torch.get_num_threads()
    return out


def table(df) -> str:
    """The ratios against their targets, and the medians they come from (MiB, s), as markdown."""
    import pandas as pd

    from common.plots import markdown

    r = df[df.method == "ratio"]
    first = r.iloc[0]
    lines = [f"MiniLM, batch {int(first.batch_size)} x length {int(first.seq_len)}, commit {first.commit}, "
             f"1-minute load average {first.loadavg_1m:.1f} on {first.platform.split('-')[0]}:", "",
             "| ratio | measured | target | met |", "|---|---:|---:|---|"]
    for row in r.itertuples():
        lines.append(f"| {row.metric} | {row.value:.3f} | {row.target:g} | {'yes' if row.value <= row.target else 'no'} |")
    runs = df[df.method != "ratio"]
    med = runs.groupby(["method", "metric"])["value"].median().unstack()
    cols = [c for c in ("total_bytes", "activation_bytes", "epoch1_s", "epoch2_s") if c in med]
    med = med[cols].copy()
    for c in cols:
        med[c] = [f"{v / 2**20:.0f}" if c.endswith("bytes") else f"{v:.1f}" for v in med[c]]
    med.columns = [c.replace("_bytes", " MiB").replace("_s", " s") for c in cols]
    lines += ["", markdown(pd.DataFrame(med).reset_index())]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    import pandas as pd

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seq-len", type=int, default=128)
    ap.add_argument("--batch-size", type=int, default=32)
    ap.add_argument("--batches", type=int, default=8)
    ap.add_argument("--repeats", type=int, default=2)
    ap.add_argument("--out", type=Path, default=RESULTS_DIR / "bench" / "ladder_side.csv")
    ap.add_argument("--one", metavar="CONFIG", choices=list(CONFIGS), help=argparse.SUPPRESS)
    ap.add_argument("--table-only", action="store_true", help="only rewrite the .md table from the CSV at --out")
    a = ap.parse_args(argv)
    if a.table_only:
        from common.records import write_atomic

        write_atomic(a.out.with_suffix(".md"), table(pd.read_csv(a.out)) + "\n")
        return 0
    if a.one:
        print(json.dumps(measure(a.one, a.seq_len, a.batch_size, a.batches)))
        return 0
    rows = []
    for rep in range(a.repeats):
        for name in CONFIGS:
            r = in_subprocess("ladder_side.bench", [name, "--seq-len", str(a.seq_len), "--batch-size",
                                                    str(a.batch_size), "--batches", str(a.batches)])
            rows += [{"method": name, "seq_len": a.seq_len, "batch_size": a.batch_size, "repeat": rep, "metric": k,
                      "value": v, "threads": r["threads"]} for k, v in r.items() if k != "threads"]
    df = pd.DataFrame(rows)
    med = df.groupby(["method", "metric"])["value"].median()
    ratios = [("memory_ratio_lst_over_ft", med[("lst", "total_bytes")] / med[("full_ft", "total_bytes")], 0.25),
              ("memory_ratio_lst_attn_dropout_over_ft",
               med[("lst_attn_dropout", "total_bytes")] / med[("full_ft", "total_bytes")], 0.25),
              ("epoch_time_ratio_lst_cached_over_ft", med[("lst_cached", "epoch2_s")] / med[("full_ft", "epoch2_s")], 0.2)]
    for metric, value, target in ratios:
        print(f"{metric}: {value:.3f} (target <= {target})")
        rows.append({"method": "ratio", "seq_len": a.seq_len, "batch_size": a.batch_size, "repeat": -1,
                     "metric": metric, "value": value, "target": target})
    write_csv(rows, a.out)
    from common.records import write_atomic

    write_atomic(a.out.with_suffix(".md"), table(pd.read_csv(a.out)) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
