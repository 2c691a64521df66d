"""Our adapters against AdapterHub's, on the same tiny BERT with the same weights -> ``results/adapters/adapterhub_check.csv``.

AdapterHub's ``adapters`` package pins an older transformers and shares our package's import name, so it
lives in its own virtual environment, never in ours:

    python3 -m venv /path/ahvenv && /path/ahvenv/bin/pip install torch==2.13.0 adapters==1.3.0
    python -m adapters.adapterhub_check --python /path/ahvenv/bin/python

This side builds a tiny random BERT, inserts our adapters with random (non-zero) weights for each case, and
writes the backbone, the adapter tensors, a batch and our last hidden states to a folder. The other side
(``_adapterhub_side.py``, run by that environment's Python in isolated mode so it imports AdapterHub, not us)
loads the same backbone into transformers' BertModel, adds AdapterHub's ``seq_bn`` / ``double_seq_bn`` /
``Fuse`` with the same weights, and reports the largest absolute difference of the last hidden states.
``base`` (no adapters) measures the floor that two transformers versions leave on their own.
"""
from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tempfile
from pathlib import Path

import pandas as pd
import torch

from common.paths import RESULTS_DIR

# case -> (our method config, AdapterHub config name, fusion) ; reduction factor 4 on hidden 32 -> m = 8
CASES = {
    "base": None,
    "pfeiffer_vs_seq_bn": ({"config": "pfeiffer", "non_linearity": "relu"}, "seq_bn", None),
    "houlsby_vs_double_seq_bn": ({"config": "houlsby", "non_linearity": "swish"}, "double_seq_bn", None),
    "fusion_dynamic_vs_Fuse": ({"config": "pfeiffer", "non_linearity": "relu"}, "seq_bn", "dynamic"),
    "fusion_static_vs_Fuse": ({"config": "pfeiffer", "non_linearity": "relu"}, "seq_bn", "static"),
}
REDUCTION_FACTOR = 4
N_FUSED = 3  # adapters under fusion
CONFIG_KEYS = ("vocab_size", "hidden_size", "num_hidden_layers", "num_attention_heads", "intermediate_size",
               "max_position_embeddings", "pad_token_id", "layer_norm_eps", "hidden_act", "type_vocab_size")


def _randomise(module: torch.nn.Module, std: float = 0.2) -> None:
    """Every parameter random and non-trivial (a zero up-projection would hide placement errors)."""
    with torch.no_grad():
        for p in module.parameters():
            p.normal_(0.0, std)


def build_case(name: str, folder: Path) -> None:
    """Our side of one case: backbone, adapter tensors (our names) and our last hidden states, in ``folder``."""
    from safetensors.torch import save_file

    from adapters.fusion import FusionLayer, add_fusion
    from adapters.methods import AdapterConfig, add_adapters
    from common.models import load_backbone, load_tokenizer

    tok = load_tokenizer("tiny-bert")
    backbone = load_backbone("tiny-bert", tok=tok).eval()
    base_state = {k: v.clone() for k, v in backbone.state_dict().items()}
    torch.manual_seed(1)
    spec = CASES[name]
    meta = {"case": name, "config": {k: getattr(backbone.config, k) for k in CONFIG_KEYS}}
    if spec is not None:
        ours, theirs, fusion = spec
        cfg = AdapterConfig(reduction_factor=REDUCTION_FACTOR, init="bert", **ours)
        meta.update(adapterhub_config=theirs, fusion=fusion, non_linearity=cfg.non_linearity,
                    reduction_factor=REDUCTION_FACTOR, n_adapters=N_FUSED if fusion else 1)
        if fusion is None:
            for a in add_adapters(backbone, cfg):
                _randomise(a)
        else:
            states = []
            for _ in range(N_FUSED):
                donor = load_backbone("tiny-bert", tok=tok)
                for a in add_adapters(donor, cfg):
                    _randomise(a)
                states.append({k: v for k, v in donor.state_dict().items() if ".adapter." in k})
            for f in add_fusion(backbone, states, cfg, dynamic=fusion == "dynamic"):
                _randomise(f, std=0.5)  # V far from I, Q and K large enough that the weights are not uniform
                assert isinstance(f, FusionLayer)
    backbone.eval()
    enc = tok(["the cat sat on the mat", "adapters are small", "a longer sentence with more tokens in it"],
              padding=True, return_tensors="pt")
    with torch.no_grad():
        hidden = backbone(input_ids=enc["input_ids"], attention_mask=enc["attention_mask"]).last_hidden_state
    # the method's own tensors (wrapped modules' weights reappear under new names: those are the backbone's)
    extra = {k: v for k, v in backbone.state_dict().items() if re.search(r"\.(adapter|adapters|fusion)\.", k)}
    folder.mkdir(parents=True, exist_ok=True)
    save_file({k: v.contiguous() for k, v in base_state.items()}, str(folder / "backbone.safetensors"))
    save_file({k: v.contiguous() for k, v in extra.items()} or {"none": torch.zeros(1)}, str(folder / "ours.safetensors"))
    save_file({"input_ids": enc["input_ids"].contiguous(), "attention_mask": enc["attention_mask"].contiguous(),
               "hidden": hidden.contiguous()}, str(folder / "io.safetensors"))
    (folder / "meta.json").write_text(json.dumps(meta, indent=1))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--python", required=True, help="Python of the virtual environment that has AdapterHub's adapters")
    ap.add_argument("--out", type=Path, default=RESULTS_DIR / "adapters" / "adapterhub_check.csv")
    a = ap.parse_args(argv)
    if not Path(a.python).is_file():
        print(f"error: no Python at {a.python}; build the AdapterHub environment first (see the module docstring)",
              file=sys.stderr)
        return 2
    from common.bench import write_csv

    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in CASES:
            build_case(name, Path(tmp) / name)
        side = Path(__file__).with_name("_adapterhub_side.py")
        # -I: isolated mode, so neither our repository nor our site-packages are importable over there
        res = subprocess.run([a.python, "-I", str(side), tmp, *CASES], capture_output=True, text=True)
        if res.returncode != 0:
            print(res.stderr[-3000:], file=sys.stderr)
            print("error: the AdapterHub side failed (above)", file=sys.stderr)
            return 1
        for line in res.stdout.splitlines():
            if line.startswith("{"):
                rows.append(json.loads(line))
    write_csv(rows, a.out)
    from common.plots import markdown
    from common.records import write_atomic

    table = pd.DataFrame(rows)[["case", "max_abs_diff", "max_abs_effect", "params_compared", "adapters_version",
                                  "their_transformers"]]
    table = table.assign(max_abs_diff=[f"{v:.1e}" for v in table.max_abs_diff],
                         max_abs_effect=[f"{v:.2f}" for v in table.max_abs_effect],
                         params_compared=[f"{v:.0f}" if pd.notna(v) else "—" for v in table.params_compared])
    write_atomic(a.out.with_suffix(".md"), markdown(table) + "\n\nmax_abs_diff: largest |ours − AdapterHub| over the "
                 "last hidden states (non-padding positions); max_abs_effect: how far the adapters move the output "
                 "from the base model's (the size of what is compared).\n")
    for r in rows:
        print(f"{r['case']:28s} max |ours - AdapterHub| = {r['max_abs_diff']:.2e}   (adapters move the output by "
              f"{r['max_abs_effect']:.2e})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
