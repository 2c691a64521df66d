"""AdapterHub's side of ``adapters.adapterhub_check`` (run by the AdapterHub environment's Python with ``-I``;
imports AdapterHub's ``adapters`` and that environment's transformers, never this repository).

    <ahvenv>/bin/python -I adapters/_adapterhub_side.py <folder written by our side> <case> ...

Prints one JSON line per case: the largest absolute difference between AdapterHub's last hidden states and ours.
"""
import json
import re
import sys
from pathlib import Path

import torch
from safetensors.torch import load_file


def their_name(ours: str, fusion_name: str) -> str:
    """Our parameter name -> AdapterHub's (BERT)."""
    m = re.fullmatch(r"(encoder\.layer\.\d+\.(?:attention\.output|output))\.(?:dense|LayerNorm)\."
                     r"(adapter|adapters\.(\d+)|fusion)\.(.+)", ours)
    if m is None:
        raise KeyError(f"no AdapterHub counterpart for {ours}")
    site, kind, n, rest = m.groups()
    if kind == "fusion":
        return f"{site}.adapter_fusion_layer.{fusion_name}.{rest}"
    rest = re.sub(r"^down\.", "adapter_down.0.", re.sub(r"^up\.", "adapter_up.", rest))
    return f"{site}.adapters.a{n or 0}.{rest}"


def run_case(folder: Path) -> dict:
    from transformers import BertConfig, BertModel

    import adapters
    from adapters import Fuse

    meta = json.loads((folder / "meta.json").read_text())
    torch.manual_seed(0)
    model = BertModel(BertConfig(**meta["config"], attn_implementation="eager"), add_pooling_layer=False)
    missing, unexpected = model.load_state_dict(load_file(str(folder / "backbone.safetensors")), strict=False)
    if missing or unexpected:
        raise RuntimeError(f"backbone does not fit: missing {missing}, unexpected {unexpected}")
    io = load_file(str(folder / "io.safetensors"))
    from importlib.metadata import version

    row = {"case": meta["case"], "adapters_version": version("adapters"), "their_transformers": version("transformers")}
    if meta.get("adapterhub_config"):
        adapters.init(model)
        names = [f"a{i}" for i in range(meta["n_adapters"])]
        config = adapters.AdapterConfig.load(meta["adapterhub_config"], reduction_factor=meta["reduction_factor"],
                                             non_linearity=meta["non_linearity"])
        for n in names:
            model.add_adapter(n, config=config)
        fusion_name = ",".join(names)
        if meta["fusion"]:
            model.add_adapter_fusion(Fuse(*names), config=meta["fusion"])
            model.set_active_adapters(Fuse(*names))
        else:
            model.set_active_adapters(names[0])
        params = dict(model.named_parameters())
        ours = load_file(str(folder / "ours.safetensors"))
        filled = set()
        with torch.no_grad():
            for k, v in ours.items():
                t = their_name(k, fusion_name)
                params[t].copy_(v)
                filled.add(t)
        left = [n for n in params if (".adapters." in n or ".adapter_fusion_layer." in n) and n not in filled]
        if left:
            raise RuntimeError(f"AdapterHub parameters with no counterpart in ours: {left[:6]}")
        row["params_compared"] = len(filled)
    model.eval()
    with torch.no_grad():
        hidden = model(input_ids=io["input_ids"], attention_mask=io["attention_mask"]).last_hidden_state
    mask = io["attention_mask"].bool()  # padded positions are not part of any output that is used
    row["max_abs_diff"] = float((hidden - io["hidden"])[mask].abs().max())
    base = json.loads((folder.parent / "base" / "hidden.json").read_text()) if (folder.parent / "base" / "hidden.json").exists() else None
    if meta["case"] == "base":
        (folder / "hidden.json").write_text(json.dumps(hidden.tolist()))
    elif base is not None:
        row["max_abs_effect"] = float((hidden - torch.tensor(base))[mask].abs().max())
    row.setdefault("max_abs_effect", 0.0)
    return row


def main() -> None:
    root = Path(sys.argv[1])
    for case in sys.argv[2:]:
        print(json.dumps(run_case(root / case)), flush=True)


if __name__ == "__main__":
    main()
