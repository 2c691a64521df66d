"""Every config group option and experiment composes; bad keys and types fail at compose time."""

import pytest
from hydra import compose, initialize_config_dir
from hydra.errors import ConfigCompositionException, MissingConfigException
from omegaconf import OmegaConf
from omegaconf.errors import ConfigAttributeError, ConfigKeyError, ValidationError

from common.config import register_configs
from common.methods import METHODS
from common.paths import REPO_ROOT

CONF = REPO_ROOT / "conf"
register_configs()


def options(group: str) -> list[str]:
    return sorted(p.stem for p in (CONF / group).glob("*.yaml"))


def _compose(overrides, return_hydra_config=False):
    with initialize_config_dir(str(CONF), version_base="1.3"):
        return compose("config", overrides=overrides, return_hydra_config=return_hydra_config)


@pytest.mark.parametrize("group,option", [(g, o) for g in ("model", "task", "method", "trainer", "scale", "experiment")
                                          for o in options(g)])
def test_every_option_composes(group, option):
    cfg = _compose([f"{group}={option}"])
    container = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=True)
    assert container["method"]["name"] in METHODS
    if group == "method":
        assert container["method"]["name"] == option
    if group in ("model", "task"):
        assert container[group]["name"].endswith(option) or group == "task" and option == "crossfit"


def test_every_registered_method_has_a_config_file():
    assert set(options("method")) >= set(METHODS)


@pytest.mark.parametrize("launcher", ["basic", "joblib", "submitit_slurm"])
def test_launchers_compose(launcher):
    cfg = _compose([f"hydra/launcher={launcher}"], return_hydra_config=True)
    assert launcher.split("_")[0] in cfg.hydra.launcher._target_.lower()


def test_scale_wins_over_experiment_and_experiment_sweeps_methods():
    cfg = _compose(["experiment=baselines", "scale=smoke"], return_hydra_config=True)
    assert cfg.data.max_train == 32 and cfg.scale == "smoke"
    assert set(cfg.hydra.sweeper.params.method.split(",")) == {"full_ft", "head_only", "bitfit", "layernorm",
                                                              "top_k", "prompt_tuning"}


def test_method_options_are_typed_per_method():
    cfg = _compose(["method=top_k", "method.k=3"])
    assert cfg.method.k == 3
    with pytest.raises(ConfigCompositionException) as e:  # key of another method
        _compose(["method=bitfit", "method.k=3"])
    assert "k" in str(e.value.__cause__ or e.value)


@pytest.mark.parametrize("override", ["trainer.epochs=three", "method.lr=fast", "data.max_seq_len=1.5"])
def test_wrong_type_fails_at_compose(override):
    with pytest.raises(ConfigCompositionException) as e:
        _compose([override])
    assert isinstance(e.value.__cause__, (ValidationError, ValueError))


@pytest.mark.parametrize("override", ["trainer.epoch=3", "data.maxtrain=5", "modle.name=x"])
def test_unknown_key_fails_at_compose(override):
    with pytest.raises(ConfigCompositionException) as e:
        _compose([override])
    assert isinstance(e.value.__cause__, (ConfigKeyError, ConfigAttributeError))


def test_unknown_group_option_lists_valid_names():
    with pytest.raises(MissingConfigException) as e:
        _compose(["method=no_such_method"])
    assert "bitfit" in str(e.value) and "prompt_tuning" in str(e.value)


def test_paper_scale_uses_full_data_and_a_hub_model():
    cfg = _compose(["scale=paper"])
    assert cfg.data.max_train is None and cfg.model.name == "roberta-base"
