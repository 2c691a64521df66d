"""The one method interface, and the baselines every paper compares against.

A method is a config dataclass plus an ``attach(model, cfg)`` function, registered by name::

    @register_method("bitfit", BitFitConfig)
    def attach_bitfit(model: TaskModel, cfg: BitFitConfig) -> None:
        train_only(model, lambda name, p: name.endswith(".bias"))

``attach`` freezes what the method freezes and adds the method's parameters; the task head is
always trained. :func:`attach_method` calls it, checks positions, and reports parameter counts.
Only the trainable state is saved (safetensors). Paper packages register their own methods the
same way (they are imported by :func:`load_plugins`).

Baselines: ``full_ft``; ``head_only`` (linear probe); ``bitfit`` (Ben Zaken et al. 2022, biases only);
``layernorm`` (LayerNorm parameters only, Houlsby et al. 2019 Fig. 4); ``top_k`` (fine-tune the top k
blocks, Houlsby et al. 2019 Fig. 4); ``prompt_tuning`` (Lester et al. 2021: soft tokens at the input of a
frozen model).
"""
from __future__ import annotations

import importlib
import json
import logging
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any, Callable

import torch
from torch import nn

from . import arch
from .errors import UserError, unknown
from .models import TaskModel

log = logging.getLogger(__name__)
PLUGINS = ("ptuning_v2", "adapters", "lora", "ladder_side", "ipt")  # paper packages that may add methods


@dataclass
class MethodConfig:
    name: str = "full_ft"
    lr: float = 5e-5  # learning rate: a nuisance parameter, tuned per method on the dev split


@dataclass
class MethodSpec:
    config_cls: type
    attach: Callable[[TaskModel, Any], None]
    extra_positions: Callable[[Any], int] = lambda cfg: 0  # input positions the method adds (prompts)
    for_inference: Callable[[TaskModel], None] = lambda model: None  # e.g. LoRA merges B A into W


METHODS: dict[str, MethodSpec] = {}


def register_method(name: str, config_cls: type, extra_positions: Callable[[Any], int] | None = None,
                    for_inference: Callable[[TaskModel], None] | None = None):
    def deco(fn):
        METHODS[name] = MethodSpec(config_cls, fn, extra_positions or (lambda cfg: 0),
                                   for_inference or (lambda model: None))
        return fn
    return deco


def prepare_inference(model: TaskModel, cfg: Any) -> None:
    """After training: put the model in its inference form (a no-op for most methods; LoRA merges)."""
    METHODS[to_config(cfg).name].for_inference(model)


def load_plugins() -> None:
    """Import each paper package's ``methods`` module so its methods register themselves."""
    for pkg in PLUGINS:
        try:
            importlib.import_module(f"{pkg}.methods")
        except ModuleNotFoundError as e:
            if e.name not in (pkg, f"{pkg}.methods"):
                raise


# ----------------------------------------------------------------------------- helpers
def train_only(model: TaskModel, predicate: Callable[[str, nn.Parameter], bool]) -> None:
    """Freeze the backbone except parameters matching ``predicate(name, param)``; keep the head trainable."""
    for name, p in model.backbone.named_parameters():
        p.requires_grad_(bool(predicate(name, p)))
    if model.head is not None:
        model.head.requires_grad_(True)


def count_params(model: nn.Module) -> tuple[int, int]:
    """(trainable, total), each shared tensor counted once."""
    seen, trainable, total = set(), 0, 0
    for p in model.parameters():
        if id(p) in seen:
            continue
        seen.add(id(p))
        total += p.numel()
        trainable += p.numel() if p.requires_grad else 0
    return trainable, total


def to_config(cfg: Any) -> Any:
    """A method's dataclass from a dict / DictConfig (unknown keys -> error listing the valid ones)."""
    from omegaconf import DictConfig, OmegaConf

    if isinstance(cfg, DictConfig):
        cfg = OmegaConf.to_container(cfg, resolve=True)
    if not isinstance(cfg, dict):
        return cfg
    name = cfg.get("name")
    if name not in METHODS:
        load_plugins()  # a fresh process (e.g. a joblib worker) may not have imported the paper packages yet
    if name not in METHODS:
        raise unknown("method", name, METHODS)
    cls = METHODS[name].config_cls
    valid = {f.name for f in fields(cls)}
    bad = set(cfg) - valid
    if bad:
        raise UserError(f"method {name!r} has no option(s) {sorted(bad)}; its options: {sorted(valid)}")
    return cls(**cfg)


def attach_method(model: TaskModel, cfg: Any, max_seq_len: int | None = None) -> dict:
    """Attach the method named in ``cfg``; returns ``{"trainable_params", "total_params"}``."""
    cfg = to_config(cfg)
    spec = METHODS[cfg.name]
    extra = spec.extra_positions(cfg)
    limit = arch.max_positions(model.backbone)
    if max_seq_len is not None and limit is not None and extra + max_seq_len > limit:
        raise UserError(f"{cfg.name}: {extra} prompt positions + data.max_seq_len={max_seq_len} = "
                        f"{extra + max_seq_len} exceeds the model's {limit} positions; shorten one of them")
    spec.attach(model, cfg)
    trainable, total = count_params(model)
    if trainable == 0:
        raise UserError(f"method {cfg.name!r} left nothing to train on this model")
    log.info("method %s: %d trainable / %d total parameters (%.3f%%)", cfg.name, trainable, total,
             100 * trainable / total)
    return {"trainable_params": trainable, "total_params": total}


TASK_STATS = ("target_mean", "target_std")  # regression standardisation (TaskModel buffers), saved with the head


def trainable_state(model: nn.Module) -> dict[str, torch.Tensor]:
    """The trainable parameters, plus a regression model's target statistics (needed to reproduce outputs)."""
    state = {n: p.detach() for n, p in model.named_parameters() if p.requires_grad}
    if getattr(model, "task_type", None) == "regression":
        state.update({n: getattr(model, n).detach() for n in TASK_STATS})
    return state


def save_trainable(model: nn.Module, folder: Path, method_cfg: Any = None) -> Path:
    """Write only the trainable tensors (safetensors) and the method config (JSON) to ``folder``."""
    from safetensors.torch import save_file

    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "trainable.safetensors"
    save_file({n: t.contiguous().clone().cpu() for n, t in trainable_state(model).items()}, str(path))
    if method_cfg is not None:
        cfg = to_config(method_cfg)
        (folder / "method.json").write_text(json.dumps(asdict(cfg), indent=1))
    return path


def load_trainable(model: nn.Module, path: Path) -> None:
    """Load tensors written by :func:`save_trainable`; their names must be exactly the trainable ones."""
    from safetensors.torch import load_file

    state = load_file(str(path))
    expected = set(trainable_state(model))
    if set(state) != expected:
        missing, extra = sorted(expected - set(state)), sorted(set(state) - expected)
        raise UserError(f"{path}: trainable state does not match the model (missing {missing[:5]}, "
                        f"unexpected {extra[:5]}); was it saved with the same method and model?")
    params = {**dict(model.named_parameters()), **dict(model.named_buffers())}
    with torch.no_grad():
        for n, t in state.items():
            params[n].copy_(t)


# ----------------------------------------------------------------------------- baselines
@dataclass
class FullFTConfig(MethodConfig):
    name: str = "full_ft"


@dataclass
class HeadOnlyConfig(MethodConfig):
    name: str = "head_only"
    lr: float = 1e-3  # a fresh linear head on frozen features needs a large step


@dataclass
class BitFitConfig(MethodConfig):
    name: str = "bitfit"
    lr: float = 1e-3  # BitFit's range (1e-4..1e-3) for biases only


@dataclass
class LayerNormConfig(MethodConfig):
    name: str = "layernorm"
    lr: float = 1e-3  # few parameters, like BitFit


@dataclass
class TopKConfig(MethodConfig):
    name: str = "top_k"
    lr: float = 1e-4  # fewer layers move than in full fine-tuning
    k: int = 2  # number of top transformer blocks to fine-tune


@dataclass
class PromptTuningConfig(MethodConfig):
    name: str = "prompt_tuning"
    lr: float = 3e-2  # soft prompts need large steps (Lester: 0.3 with Adafactor)
    prompt_len: int = 20  # Lester et al. found 20 tokens near the best for most sizes
    # vocab: copy the embeddings of tokens sampled from the whole vocabulary (Lester sampled the 5000 most
    # frequent; WordPiece vocabularies are not frequency-ordered); random: U(-0.5, 0.5)
    init: str = "vocab"


@register_method("full_ft", FullFTConfig)
def attach_full_ft(model: TaskModel, cfg: FullFTConfig) -> None:
    model.requires_grad_(True)


@register_method("head_only", HeadOnlyConfig)
def attach_head_only(model: TaskModel, cfg: HeadOnlyConfig) -> None:
    if model.head is None:
        raise UserError("head_only needs a task head; generation tasks have none (they use the LM head)")
    train_only(model, lambda n, p: False)


@register_method("bitfit", BitFitConfig)
def attach_bitfit(model: TaskModel, cfg: BitFitConfig) -> None:
    train_only(model, lambda n, p: n.endswith(".bias"))
    if not any(n.endswith(".bias") for n, _ in model.backbone.named_parameters()):
        log.warning("bitfit: %s has no bias terms; only the head is trained", model.backbone.config.model_type)


def _is_layernorm(module: nn.Module) -> bool:
    return isinstance(module, nn.LayerNorm) or type(module).__name__.endswith("LayerNorm")  # T5LayerNorm


@register_method("layernorm", LayerNormConfig)
def attach_layernorm(model: TaskModel, cfg: LayerNormConfig) -> None:
    ln = {id(p) for m in model.backbone.modules() if _is_layernorm(m) for p in m.parameters(recurse=False)}
    train_only(model, lambda n, p: id(p) in ln)


@register_method("top_k", TopKConfig)
def attach_top_k(model: TaskModel, cfg: TopKConfig) -> None:
    blocks = arch.layer_prefixes(model.backbone)
    if not 1 <= cfg.k <= len(blocks):
        raise UserError(f"top_k: k={cfg.k} is out of range; this model has {len(blocks)} blocks (1..{len(blocks)})")
    top = tuple(blocks[-cfg.k:])
    train_only(model, lambda n, p: n.startswith(top))


class SoftPrompt(nn.Module):
    """``prompt_len`` trainable input vectors prepended to the token embeddings (Lester et al. 2021, §2)."""

    def __init__(self, init: torch.Tensor):
        super().__init__()
        self.prompt = nn.Parameter(init.clone())  # (P, H)

    def forward(self, embeds: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        B, P = embeds.size(0), self.prompt.size(0)
        prompt = self.prompt.to(embeds.dtype).unsqueeze(0).expand(B, -1, -1)  # (B, P, H)
        return torch.cat([prompt, embeds], 1), torch.cat([mask.new_ones(B, P), mask], 1)  # (B, P+L, H), (B, P+L)


@register_method("prompt_tuning", PromptTuningConfig, extra_positions=lambda cfg: cfg.prompt_len)
def attach_prompt_tuning(model: TaskModel, cfg: PromptTuningConfig) -> None:
    if cfg.prompt_len <= 0:
        raise UserError(f"prompt_tuning: prompt_len must be >= 1, got {cfg.prompt_len}")
    emb = model.backbone.get_input_embeddings().weight  # (V, H)
    if cfg.init == "vocab":
        ids = torch.randint(0, emb.size(0), (cfg.prompt_len,))
        init = emb[ids].detach()
    elif cfg.init == "random":
        init = torch.empty(cfg.prompt_len, emb.size(1)).uniform_(-0.5, 0.5)
    else:
        raise UserError(f"prompt_tuning: init={cfg.init!r}; valid: vocab, random")
    train_only(model, lambda n, p: False)
    model.input_transform = SoftPrompt(init)
