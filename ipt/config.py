"""IPT's config schema (``conf/ipt.yaml``): one schema for the three stages, so a stage's run identity
is computed the same way wherever it is needed (MSF finds stage 1's prompts by recomputing their ids)."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, List, Optional

from common.config import DataConfig, ModelConfig, TrainerConfig
from common.multitask import StageConfig
from ipt.scorer import ScorerConfig


@dataclass
class PromptConfig:
    len: int = 100  # soft prompt tokens (paper 100); the scale sets it
    init: str = "vocab"  # vocab: embeddings of random vocabulary tokens; random: U(-0.5, 0.5)


@dataclass
class MSFConfig(StageConfig):
    alpha: float = 200.0  # weight of the mean squared reconstruction error (paper 200 with a token-summed NLL)


@dataclass
class ISTConfig(StageConfig):
    seen_data: str = "diff"  # seen tasks: diff = a new few-shot sample (ist_seed), same = MSF's sample
    tasks: str = "all"  # all | train | test: which of the split's tasks IST runs on
    max_train_tasks: Optional[int] = None  # IST on the first n training tasks only (budget); null = all


@dataclass
class IPTConfig:
    model: ModelConfig = field(default_factory=ModelConfig)
    data: DataConfig = field(default_factory=DataConfig)
    trainer: TrainerConfig = field(default_factory=TrainerConfig)  # set by the shared scale files; unused by IPT
    split: Optional[Any] = None  # +split=<name> (conf/split/)
    scorer: ScorerConfig = field(default_factory=ScorerConfig)
    prompt: PromptConfig = field(default_factory=PromptConfig)
    pt: StageConfig = field(default_factory=StageConfig)
    msf: MSFConfig = field(default_factory=MSFConfig)
    ist: ISTConfig = field(default_factory=ISTConfig)
    intrinsic_dim: int = 5  # d_I
    subspace: str = "learned"  # IST: learned (MSF's decoder) | random (an untrained decoder of the same shape)
    few_shot_seed: int = 100  # stage 1 and MSF: the CrossFit sample (train/dev) of every task
    ist_seed: int = 21  # IST on seen tasks with seen_data=diff: a different sample
    seed: int = 2  # training seed (1 tunes hyperparameters and is never reported)
    prompt_seed: int = 2  # MSF / IST: the stage-1 run (its seed) whose prompts they read
    msf_seed: Optional[int] = None  # IST: which MSF run's decoder (null = seed)
    tasks: Optional[List[str]] = None  # restrict a stage to these tasks of the split (null = all)
    workers: int = 1  # stage 1 / IST: tasks run this many at a time (one thread each)
    scale: str = "small"
    paper: str = "ipt"
    records_dir: Optional[str] = None  # null = results/records
    force: bool = False


def register() -> None:
    from hydra.core.config_store import ConfigStore

    ConfigStore.instance().store(name="ipt_schema", node=IPTConfig)
