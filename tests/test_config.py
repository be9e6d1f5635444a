import dataclasses

import pytest
import yaml

from hetcrf_lite.config import CONFIG_DIR, HetCRFConfig, default_config
from hetcrf_lite.errors import ConfigError


@pytest.mark.parametrize(
    "field, value",
    [
        ("mask_rate", 1.0),
        ("mask_rate", -0.1),
        ("tau", 0.0),
        ("tau", -1.0),
        ("hidden_channels", 0),
        ("hidden_channels", -8),
        ("pos_num", 0),
        ("edge_drop", 1.0),
        ("lam", 1.5),
        ("gamma_feat", 0.5),
        ("encoder", "gat"),
        ("negatives", "hard"),
        ("num_clusters", 1),
        ("batch_size", 1),
        ("lr", 0.0),
    ],
)
def test_impossible_values_name_the_field(field, value):
    with pytest.raises(ConfigError, match=field):
        HetCRFConfig(**{field: value})


def test_heads_must_divide_hidden():
    with pytest.raises(ConfigError, match="divisible"):
        HetCRFConfig(hidden_channels=64, heads=3)


def test_all_channels_off_is_rejected():
    with pytest.raises(ConfigError, match="enable at least one loss"):
        HetCRFConfig(use_feat_recon=False, use_edge_recon=False, use_contrastive=False)


def test_unknown_field_is_rejected():
    with pytest.raises(ConfigError, match="unknown config field"):
        HetCRFConfig.from_dict({"learning_rate": 0.1})


def test_yaml_round_trip(tmp_path):
    cfg = default_config("acm", seed=7, schema_sample={"author": 3})
    cfg.save(tmp_path / "c.yaml")
    # the file, read with plain PyYAML (not the package's loader), holds the values given
    raw = yaml.safe_load((tmp_path / "c.yaml").read_text())
    assert raw["seed"] == 7 and raw["schema_sample"] == {"author": 3} and raw["dataset"] == "acm"
    assert set(raw) == {f.name for f in dataclasses.fields(HetCRFConfig)}
    back = HetCRFConfig.load(tmp_path / "c.yaml")
    assert back == cfg and back.seed == 7 and back.schema_sample == {"author": 3}
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".cfg-")]


@pytest.mark.parametrize("name", ["acm", "dblp", "aminer", "freebase", "synthetic"])
def test_shipped_config_holds_its_yaml_file_and_the_defaults_elsewhere(name):
    raw = yaml.safe_load((CONFIG_DIR / f"{name}.yaml").read_text())  # plain PyYAML
    cfg, defaults = default_config(name), HetCRFConfig()
    for f in dataclasses.fields(HetCRFConfig):
        expected = raw.get(f.name, getattr(defaults, f.name))
        assert getattr(cfg, f.name) == pytest.approx(expected) if isinstance(expected, float) \
            else getattr(cfg, f.name) == expected, f.name


def test_lossless_conversions_and_their_direction():
    cfg = HetCRFConfig.from_dict({"lr": "1e-3", "epochs": 3.0})
    assert cfg.lr == 0.001 and type(cfg.lr) is float
    assert cfg.epochs == 3 and type(cfg.epochs) is int
    with pytest.raises(ConfigError, match="epochs"):
        HetCRFConfig.from_dict({"epochs": 3.5})  # lossy: refused, not rounded


def test_missing_config_file_and_unknown_dataset(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        HetCRFConfig.load(tmp_path / "nope.yaml")
    with pytest.raises(ConfigError, match="no shipped config"):
        default_config("cora")


# Feature handling switches (issues #4, #6).
@pytest.mark.parametrize("field, value", [
    ("feature_init", "onehot"),
    ("feature_init", None),
    ("shared_generative_pass", "yes"),
    ("shared_generative_pass", 1),
])
def test_feature_switches_are_validated(field, value):
    with pytest.raises(ConfigError, match=field):
        HetCRFConfig(**{field: value})


def test_feature_switches_round_trip(tmp_path):
    cfg = default_config("aminer", feature_init="embedding", shared_generative_pass=True)
    cfg.save(tmp_path / "c.yaml")
    raw = yaml.safe_load((tmp_path / "c.yaml").read_text())
    assert raw["feature_init"] == "embedding" and raw["shared_generative_pass"] is True
    back = HetCRFConfig.load(tmp_path / "c.yaml")
    assert back == cfg and back.feature_init == "embedding" and back.shared_generative_pass
    assert HetCRFConfig().feature_init == "identity" and not HetCRFConfig().shared_generative_pass


def test_shipped_configs_log_gradient_balance_every_10_epochs():
    for name in ("acm", "dblp", "aminer", "freebase"):
        assert default_config(name).grad_balance_every == 10, name
    # notebook 06 plots the synthetic config's per-epoch log
    assert default_config("synthetic").grad_balance_every == 1


def test_identity_leaves_out_added_fields_at_their_neutral_value():
    """A field added later (semantic_fusion) keeps earlier hashes valid while it is neutral,
    and changes them when it changes the computation."""
    from hetcrf_lite.config import ADDED_FIELDS
    from hetcrf_lite.runs import config_hash

    base = HetCRFConfig()
    assert set(ADDED_FIELDS) <= set(base.to_dict())
    before = {k: v for k, v in base.to_dict().items() if k not in ADDED_FIELDS}
    assert base.identity() == before
    mean = base.replace(semantic_fusion="mean")
    assert mean.identity() == {**before, "semantic_fusion": "mean"}
    assert config_hash(mean) != config_hash(base)
