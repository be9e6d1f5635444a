"""HetCRF composition: every switch changes what is computed; seeds fix results."""
import pytest
import torch

from hetcrf_lite.config import HetCRFConfig
from hetcrf_lite.model import HetCRF
from hetcrf_lite.synthetic import make_synthetic_hin
from hetcrf_lite.train import fit, seed_everything


@pytest.fixture(scope="module")
def tiny():
    return make_synthetic_hin(num_nodes=240, num_classes=3, seed=3)


def cfg(**changes) -> HetCRFConfig:
    base = dict(dataset="synthetic", hidden_channels=16, heads=1, epochs=3, cluster_every=2,
                grad_balance_every=1, lr=0.01, feat_drop=0.0, attn_drop=0.0)
    base.update(changes)
    return HetCRFConfig(**base)


def first_step(dataset, config: HetCRFConfig, epoch: int = 0):
    seed_everything(config.seed)
    model = HetCRF(dataset, config)
    model.on_epoch_start(epoch)
    loss, parts = model.training_step(epoch)
    return model, loss, parts


def test_full_model_has_every_loss_part(tiny):
    _, loss, parts = first_step(tiny, cfg())
    assert set(parts) == {"feat", "edge", "infonce"}
    weighted = 1.0 * parts["feat"] + 0.5 * parts["edge"] + 1.0 * parts["infonce"]
    assert loss.item() == pytest.approx(weighted, rel=1e-5)


@pytest.mark.parametrize("switch, missing", [
    (dict(use_feat_recon=False), "feat"),
    (dict(use_edge_recon=False), "edge"),
    (dict(use_contrastive=False), "infonce"),
    (dict(w_edge=0.0), "edge"),
])
def test_channel_switches_remove_their_loss(tiny, switch, missing):
    model, _, parts = first_step(tiny, cfg(**switch))
    assert missing not in parts and parts
    if switch.get("use_contrastive") is False:
        assert not hasattr(model, "projection")


def test_generative_only_and_contrastive_only_are_configurations(tiny):
    _, _, gen = first_step(tiny, cfg(use_contrastive=False))
    _, _, con = first_step(tiny, cfg(use_feat_recon=False, use_edge_recon=False))
    assert set(gen) == {"feat", "edge"} and set(con) == {"infonce"}


@pytest.mark.parametrize("switch", [
    dict(views="raw"),
    dict(second_stage="before_views"),
    dict(second_stage_depth=0),
    dict(second_stage_depth=2),
    dict(negatives="debiased"),
    dict(encoder="gcn"),
    dict(tau=0.2),
    dict(lam=0.9),
    dict(center_views=False),
])
def test_contrastive_switches_change_the_loss(tiny, switch):
    base = cfg(use_feat_recon=False, use_edge_recon=False, cluster_aug=False)
    _, l0, _ = first_step(tiny, base)
    _, l1, _ = first_step(tiny, base.replace(**switch))
    assert abs(l0.item() - l1.item()) > 1e-6


def test_positive_strategies_change_the_positive_sets(tiny):
    no_aug = HetCRF(tiny, cfg(metapath_positives=False, cluster_aug=False))
    assert torch.equal(no_aug.positives()[0], no_aug.positives()[1])  # anchor only
    mp_only = HetCRF(tiny, cfg(cluster_aug=False))
    assert torch.equal(mp_only.positives(), tiny.pos)
    full = HetCRF(tiny, cfg(cluster_every=1))
    full.on_epoch_start(0)  # first refresh adds key-deviated positives
    assert full.positives().shape[1] > tiny.pos.shape[1]
    other_k = HetCRF(tiny, cfg(pos_num=2, cluster_aug=False))
    assert other_k.positives().shape[1] < tiny.pos.shape[1]


def test_drop_same_cluster_changes_loss_after_a_refresh(tiny):
    base = cfg(use_feat_recon=False, use_edge_recon=False, cluster_every=1)
    _, l0, _ = first_step(tiny, base)
    _, l1, _ = first_step(tiny, base.replace(negatives="drop_same_cluster"))
    assert l1.item() < l0.item()  # fewer negatives in every denominator


def test_embed_modes(tiny):
    model = HetCRF(tiny, cfg())
    h = model.embed("encoder")
    assert h.shape == (tiny.num_nodes, 16)
    assert model.embed("contrastive").shape == (tiny.num_nodes, 16)
    both = model.embed("concat")
    assert both.shape == (tiny.num_nodes, 32) and torch.allclose(both[:, :16], h)
    assert model.embed().shape == both.shape


def test_minibatch_mode_trains_with_sampled_anchors(tiny):
    _, loss, parts = first_step(tiny, cfg(batch_size=64, use_feat_recon=False,
                                          use_edge_recon=False))
    _, full, _ = first_step(tiny, cfg(use_feat_recon=False, use_edge_recon=False))
    assert torch.isfinite(loss) and abs(loss.item() - full.item()) > 1e-6


def test_same_seed_same_embeddings(tiny):
    a, _ = fit(tiny, cfg(seed=5), progress=False)
    b, _ = fit(tiny, cfg(seed=5), progress=False)
    c, _ = fit(tiny, cfg(seed=6), progress=False)
    assert torch.equal(a.embed(), b.embed())
    assert not torch.equal(a.embed(), c.embed())


def test_gradient_balance_is_logged_each_epoch(tiny):
    _, history = fit(tiny, cfg(), progress=False)
    rows = [r["gradient_balance"] for r in history["epochs"]]
    assert len(rows) == 3 and all(0 < r["pos_mass_mean"] < 1 for r in rows)
    assert history["cluster_refreshes"], "the augmenter refreshed at epoch 0 and 2"


def test_full_batch_refuses_a_graph_that_cannot_fit(tiny, monkeypatch):
    import hetcrf_lite.distributed as dist
    from hetcrf_lite.errors import ConfigError

    monkeypatch.setattr(dist, "available_memory_bytes", lambda device: 1024)
    with pytest.raises(ConfigError, match="batch_size"):
        HetCRF(tiny, cfg())
    HetCRF(tiny, cfg(batch_size=64))  # the mini-batch mode is accepted
