"""LoRA: low-rank updates of frozen weight matrices (Hu et al., ICLR 2022, §4; https://arxiv.org/abs/2106.09685).

``h = W0 x + (alpha / r) B A x`` with ``A (r, d_in)`` random and ``B (d_out, r) = 0`` at the start, so
training starts from the pretrained model. Built on peft's LoRA layers (what users already trust);
this module maps the paper's weight names to each architecture (``lora/targets.py``), merges
``B A`` into ``W0`` for inference, and exports adapters peft can load.

    python -m common.train task=rte method=lora method.r=8 method.alpha=16 method.weights=[Wq,Wv]

    model, tok = build_task_model("minilm", "classification", 2)
    attach_method(model, {"name": "lora", "r": 8, "weights": ["Wq", "Wv"]})
    ...train...
    merge(model)                           # W <- W0 + (alpha/r) B A: no inference overhead
    export_adapter(model, "out/adapter")   # PeftModel.from_pretrained(base, "out/adapter")
"""
from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path

import torch
from torch import nn

from common import arch
from common.errors import UserError
from common.methods import MethodConfig, register_method, train_only
from common.models import TaskModel

from . import targets as T


@dataclass
class LoRAConfig(MethodConfig):
    name: str = "lora"
    lr: float = 5e-4  # the paper's RoBERTa-base GLUE range is 4e-4..5e-4
    r: int = 8  # rank of each update
    alpha: float = 16.0  # the update is scaled by alpha / r (the paper: alpha 16 with r 8 on GLUE)
    dropout: float = 0.1  # dropout on LoRA's input (the paper's E2E setting)
    weights: list[str] = field(default_factory=lambda: ["Wq", "Wv"])  # Wq Wk Wv Wo (attention), W1 W2 (FFN)
    init: str = "kaiming"  # A's init: kaiming (peft's default) | gaussian (N(0, 1/r)); B is always 0


def _lora_layers(module: nn.Module):
    from peft.tuners.lora import LoraLayer

    return [(n, m) for n, m in module.named_modules() if isinstance(m, LoraLayer)]


# ----------------------------------------------------------------------------- merge (the inference form)
def merge(model: nn.Module) -> None:
    """Fold ``(alpha/r) B A`` into each adapted weight; forward then costs what the base model costs."""
    for _, m in _lora_layers(model):
        if not m.merged:
            m.merge()


def unmerge(model: nn.Module) -> None:
    for _, m in _lora_layers(model):
        if m.merged:
            m.unmerge()


@register_method("lora", LoRAConfig, for_inference=merge)
def attach_lora(model: TaskModel, cfg: LoRAConfig) -> None:
    from peft import LoraConfig, inject_adapter_in_model

    if cfg.r < 1:
        raise UserError(f"lora: r must be >= 1, got {cfg.r}")
    if cfg.init not in ("kaiming", "gaussian"):
        raise UserError(f"lora: init={cfg.init!r} is not one of ['kaiming', 'gaussian']")
    weights = T.parse_weights(cfg.weights)
    bb = model.backbone
    if arch.family(bb) == "gpt2":
        T.split_gpt2(bb, weights)  # fused c_attn -> q, k, v linear maps; Conv1D -> nn.Linear
    modules = [n for names in T.resolve(bb, weights).values() for n in names]
    pcfg = LoraConfig(r=cfg.r, lora_alpha=cfg.alpha, lora_dropout=cfg.dropout, target_modules=modules,
                      init_lora_weights=True if cfg.init == "kaiming" else "gaussian", bias="none")
    inject_adapter_in_model(pcfg, bb)
    train_only(model, lambda n, p: ".lora_A." in n or ".lora_B." in n)
    model.lora_weights = weights  # plain attribute (not a module): written beside exported adapters


def lora_factors(model: nn.Module) -> dict[str, tuple[torch.Tensor, torch.Tensor]]:
    """``{module name: (A (r, d_in), B (d_out, r))}``."""
    return {n: (m.lora_A["default"].weight.detach(), m.lora_B["default"].weight.detach())
            for n, m in _lora_layers(model)}


def merged_backbone(model: TaskModel) -> nn.Module:
    """A copy of the backbone with LoRA merged in and removed: the stock architecture again."""
    import copy

    bb = copy.deepcopy(model.backbone)
    for name, m in _lora_layers(bb):
        m.merge()
        T._set(bb, name, m.get_base_layer())
    if hasattr(bb, "peft_config"):
        del bb.peft_config
    if arch.family(bb) == "gpt2":
        T.join_gpt2(bb)
    return bb


def export_merged(model: TaskModel, folder: str | Path) -> Path:
    """``save_pretrained`` of the merged backbone (loads with transformers alone; the head is not included)."""
    folder = Path(folder)
    merged_backbone(model).save_pretrained(folder)
    return folder


# ----------------------------------------------------------------------------- export for peft
def export_adapter(model: TaskModel, folder: str | Path, base_model_name_or_path: str | None = None) -> Path:
    """Write ``adapter_config.json`` + ``adapter_model.safetensors`` in peft's format, for the stock
    (unsplit) architecture, so ``PeftModel.from_pretrained(base, folder)`` reproduces the adapted model.

    GPT-2: LoRA on k of {q, k, v} with rank r each is written as one LoRA on the fused ``c_attn`` with
    rank k*r, ``A = [A_q; A_v]`` and block-structured ``B`` (zero rows for the unadapted parts), and
    alpha k*alpha so that alpha / r is unchanged: exactly the same ΔW.
    """
    from peft import LoraConfig
    from safetensors.torch import save_file

    cfg = model.backbone.peft_config["default"]
    folder = Path(folder)
    folder.mkdir(parents=True, exist_ok=True)
    factors = lora_factors(model.backbone)
    state, modules = {}, []
    rank_pattern, alpha_pattern = {}, {}
    fused: dict[str, dict[str, tuple]] = {}
    for name, (A, B) in factors.items():
        m = re.fullmatch(r"(.*attn\.c_attn)\.([qkv])", name)
        if m:
            fused.setdefault(m.group(1), {})[m.group(2)] = (A, B)
            continue
        modules.append(name)
        state[f"base_model.model.{name}.lora_A.weight"] = A
        state[f"base_model.model.{name}.lora_B.weight"] = B
    for name, parts in fused.items():
        r = cfg.r
        H = next(iter(parts.values()))[0].shape[1]
        k = len(parts)
        A = torch.cat([parts[p][0] for p in "qkv" if p in parts], 0)  # (k*r, H)
        B = A.new_zeros(3 * H, k * r)  # (3H, k*r)
        for j, p in enumerate(p for p in "qkv" if p in parts):
            i = "qkv".index(p)
            B[i * H:(i + 1) * H, j * r:(j + 1) * r] = parts[p][1]
        modules.append(name)
        state[f"base_model.model.{name}.lora_A.weight"] = A
        state[f"base_model.model.{name}.lora_B.weight"] = B
        rank_pattern[re.escape(name)] = k * r
        alpha_pattern[re.escape(name)] = k * cfg.lora_alpha
    gpt2 = arch.family(model.backbone) == "gpt2"
    out = LoraConfig(r=cfg.r, lora_alpha=cfg.lora_alpha, lora_dropout=cfg.lora_dropout, target_modules=modules,
                     rank_pattern=rank_pattern, alpha_pattern=alpha_pattern, fan_in_fan_out=gpt2, bias="none",
                     base_model_name_or_path=base_model_name_or_path)
    out.save_pretrained(str(folder))
    save_file({k: v.contiguous().clone().cpu() for k, v in state.items()}, str(folder / "adapter_model.safetensors"),
              metadata={"format": "pt"})
    (folder / "lora_weights.json").write_text(json.dumps({"weights": model.lora_weights, "r": cfg.r}))
    return folder
