from __future__ import annotations

from pathlib import Path

import pytest

from fedmm.config import (ConfigError, RunConfig, load_app_config, load_toml_overrides, merge_overrides,
                          parse_kv_overrides)

ROOT = Path(__file__).resolve().parents[1]


def defaults() -> dict:
    return load_app_config(ROOT / "pyproject.toml")


def test_defaults_parse_and_roundtrip():
    cfg = RunConfig.from_mapping(defaults())
    assert cfg.backbone == "pfedrec" and cfg.local.topk == (5, 10, 20, 50)
    assert RunConfig.from_mapping(cfg.to_dict()) == cfg


@pytest.mark.parametrize("key,value,match", [
    ("backbone", "nope", "backbone"), ("fraction-train", 0.0, "fraction-train"),
    ("eval-protocol", "full", "select-metric"), ("num-server-rounds", "x", "num-server-rounds"),
    ("min-interactions", 2, "min-interactions"), ("topk", "", "topk"), ("items-lr", -1.0, "items-lr"), ("private-optimizer", "rmsprop", "private-optimizer"),
    ("centralised-epochs", -1, "centralised-epochs"), ("centralised-trainer", "sgd", "centralised-trainer"),
])
def test_bad_values_name_the_key(key, value, match):
    d = defaults()
    d[key] = value
    with pytest.raises(ConfigError, match=match):
        RunConfig.from_mapping(d)


def test_missing_and_unknown_keys():
    d = defaults()
    del d["seed"]
    with pytest.raises(ConfigError, match="'seed' is missing"):
        RunConfig.from_mapping(d)
    with pytest.raises(ConfigError, match="unknown run-config key"):
        merge_overrides(defaults(), {"sed": 1}, "--run-config")


def test_kv_and_toml_overrides(tmp_path):
    kv = parse_kv_overrides("backbone='fedncf' seed=3 lr=0.5 dataset=ml-1m")
    assert kv == {"backbone": "fedncf", "seed": 3, "lr": 0.5, "dataset": "ml-1m"}
    p = tmp_path / "x.toml"
    p.write_text('backbone = "fedrap"\nnum-server-rounds = 7\n')
    assert load_toml_overrides(p) == {"backbone": "fedrap", "num-server-rounds": 7}
    p.write_text("not toml [")
    with pytest.raises(ConfigError, match="not valid TOML"):
        load_toml_overrides(p)


def test_every_declared_key_is_read():
    """Keys in [tool.flwr.app.config] are all consumed by some typed config, and every key a
    typed config reads is declared."""
    from strategies.fedsllm import FedSLLMConfig
    from strategies.gfmfr import GFMFRConfig

    read = set(RunConfig.keys()) | set(GFMFRConfig.keys()) | set(FedSLLMConfig.keys())
    declared = set(defaults())
    assert read - declared == set(), f"read but not declared: {sorted(read - declared)}"
    assert declared - read == set(), f"declared but never read: {sorted(declared - read)}"


def test_method_sections_have_typed_defaults_equal_to_pyproject():
    """Another project builds GFMFRConfig() / FedSLLMConfig() without fedmm's run config; those
    defaults must be the ones fedmm's own runs use."""
    from strategies import FedSLLMConfig, GFMFRConfig

    for cls in (GFMFRConfig, FedSLLMConfig):
        assert cls() == cls.from_mapping(defaults()), cls.__name__
    assert GFMFRConfig(groups=3).groups == 3
    with pytest.raises(ConfigError, match="'gfmfr-groups' = 0: must be >= 1"):
        GFMFRConfig(groups=0)


def test_run_py_federation_entries_let_the_user_override_its_defaults():
    import run

    assert run.federation_entries(943, "") == "num-supernodes=943 client-resources-num-cpus=1"
    # flwr refuses a key given twice: the user's value replaces run.py's
    assert run.federation_entries(943, "client-resources-num-cpus=2 client-resources-num-gpus=0.25") \
        == "num-supernodes=943 client-resources-num-cpus=2 client-resources-num-gpus=0.25"
    with pytest.raises(SystemExit, match="each is one node"):
        run.federation_entries(943, "num-supernodes=10")
    with pytest.raises(SystemExit, match="not key=value"):
        run.federation_entries(943, "client-resources-num-cpus")
