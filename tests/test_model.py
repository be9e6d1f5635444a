"""HetCRF composition: every switch computes what it promises (checked against plain
references); seeds fix results."""
import pytest
import torch

from hetcrf_lite.config import HetCRFConfig
from hetcrf_lite.errors import ConfigError
from hetcrf_lite.model import HetCRF, standardise_columns
from hetcrf_lite.synthetic import make_synthetic_hin
from hetcrf_lite.train import fit
from hetcrf_lite.utils import seed_everything


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


def plain_infonce(z1, z2, pos, tau, lam, anchors=None, candidates=None):
    """HeCo's two-way multi-positive InfoNCE written out with plain tensors (the reference):
    cosine similarities over ``candidates``, anchors with at least one positive averaged."""
    n = z1.shape[0]
    z1, z2 = torch.nn.functional.normalize(z1, dim=1), torch.nn.functional.normalize(z2, dim=1)
    is_pos = torch.zeros(n, n, dtype=torch.bool)
    is_pos[pos[0], pos[1]] = True
    anchors = torch.arange(n) if anchors is None else anchors
    candidates = torch.arange(n) if candidates is None else candidates

    def one_way(a, b):  # anchors in view a, candidates in view b
        e = torch.exp(a[anchors] @ b[candidates].T / tau)  # [B, C]
        mask = is_pos[anchors][:, candidates]
        keep = mask.any(1)
        return -((e * mask).sum(1)[keep] / e.sum(1)[keep]).log().mean()

    return lam * one_way(z1, z2) + (1 - lam) * one_way(z2, z1)


@pytest.mark.parametrize("switch", [
    {}, dict(tau=0.2), dict(lam=0.9), dict(center_views=False), dict(second_stage_depth=2),
    dict(second_stage="before_views"), dict(encoder="gcn"), dict(views="raw"),
    dict(negatives="debiased", tau_plus=0.0),  # no class prior: the plain denominator
])
def test_contrastive_loss_equals_a_plain_infonce_of_its_views(tiny, switch):
    config = cfg(use_feat_recon=False, use_edge_recon=False, cluster_aug=False, **switch)
    model, loss, parts = first_step(tiny, config)
    z_f, z_s, pos = model._last_views
    expected = plain_infonce(z_f, z_s, pos.cpu(), config.tau, config.lam)
    assert parts["infonce"] == pytest.approx(float(expected), rel=1e-5)
    assert loss.item() == pytest.approx(config.w_cl * float(expected), rel=1e-5)


def test_second_stage_of_depth_zero_leaves_the_fusion_view_as_the_encoder_output(tiny):
    model = HetCRF(tiny, cfg(second_stage_depth=0))
    model.eval()
    enc = model.encode()
    fusion, _ = model.views(enc)
    assert torch.equal(fusion, enc.h)


def test_raw_views_do_not_reach_the_encoder_through_the_schema_view(tiny):
    model = HetCRF(tiny, cfg(views="raw", schema_sample=None))
    model.eval()
    _, schema = model.views(model.encoder(model.x, model.edge_index_dict))
    grads = torch.autograd.grad(schema.sum(), list(model.encoder.parameters()),
                                allow_unused=True)
    assert all(g is None or not g.any() for g in grads)
    assert model.raw_projection.in_features == tiny.num_features


def test_gcn_encoder_has_no_node_attention(tiny):
    from hetcrf_lite.encoder import MetaPathGCNEncoder

    model = HetCRF(tiny, cfg(encoder="gcn"))
    assert isinstance(model.encoder, MetaPathGCNEncoder)
    assert model.encode().node_attention is None


def test_positive_strategies_change_the_positive_sets(tiny):
    no_aug = HetCRF(tiny, cfg(metapath_positives=False, cluster_aug=False))
    assert torch.equal(no_aug.positives()[0], no_aug.positives()[1])  # anchor only
    mp_only = HetCRF(tiny, cfg(cluster_aug=False))
    assert torch.equal(mp_only.positives().cpu(), tiny.pos)  # model may live on cuda
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


def test_standardise_columns_matches_scikit_learns_standard_scaler():
    """Against scikit-learn: an embedding that is mostly one shared vector (the case the option
    is for), plus a constant column, which stays 0 as StandardScaler leaves it."""
    from sklearn.preprocessing import StandardScaler

    g = torch.Generator().manual_seed(0)
    x = 50 + 0.01 * torch.randn(300, 6, generator=g, dtype=torch.float64)
    x[:, 3] = 7.25
    ours = standardise_columns(x)
    theirs = torch.as_tensor(StandardScaler().fit_transform(x.numpy()))
    assert torch.allclose(ours, theirs, atol=1e-9)
    assert torch.all(ours[:, 3] == 0)
    y = 5 + torch.randn(300, 6, generator=g)  # float32, the model's dtype
    assert torch.allclose(standardise_columns(y),
                          torch.as_tensor(StandardScaler().fit_transform(y.numpy())), atol=1e-5)


def test_embed_norm_standardises_the_chosen_embedding_and_defaults_to_the_config(tiny):
    model = HetCRF(tiny, cfg())
    for mode in ("encoder", "contrastive", "concat"):
        raw = model.embed(mode, "none")
        std = model.embed(mode, "standardise")
        assert torch.allclose(std, standardise_columns(raw))
        assert torch.allclose(std.mean(0), torch.zeros(std.shape[1]), atol=1e-5)
    assert torch.equal(model.embed(), model.embed("concat", "none"))  # the default: as it is
    other = HetCRF(tiny, cfg(embed="contrastive", embed_norm="standardise"))
    other.load_state_dict(model.state_dict())
    assert torch.allclose(other.embed(), model.embed("contrastive", "standardise"))
    with pytest.raises(ConfigError, match="embed_norm"):
        model.embed("concat", "l2")


def test_standardised_columns_let_the_probe_find_classes_a_shared_vector_hides():
    """The direction the option exists for (docs/method.md): classes carried by a thin shell
    around one large shared vector, columns of very different spreads. The field's probe (200
    Adam steps on the raw embedding) finds little of it; standardised, nearly all."""
    from hetcrf_lite.eval import evaluate_embeddings

    ds = make_synthetic_hin(num_nodes=600, num_classes=3, seed=5)
    g = torch.Generator().manual_seed(1)
    labels = ds.labels
    centres = torch.randn(3, 16, generator=g)
    signal = centres[labels] + 0.5 * torch.randn(ds.num_nodes, 16, generator=g)
    scales = torch.logspace(-3, 0, 16)
    emb = 20 * torch.ones(16) + 1e-2 * signal * scales  # 99.9 % of the norm is shared

    def macro_f1(e):
        res = evaluate_embeddings(e, ds, runs=2, clustering=False)
        return res.classification[20].summary()["macro_f1"][0]

    raw, std = macro_f1(emb), macro_f1(standardise_columns(emb))
    assert std > 80 and std > raw + 20, (raw, std)


def test_minibatch_mode_is_infonce_over_the_batch_and_its_positives(tiny):
    config = cfg(batch_size=64, use_feat_recon=False, use_edge_recon=False, cluster_aug=False)
    seed_everything(config.seed)
    model = HetCRF(tiny, config)
    state = model.generator.get_state()  # the anchors are the step's only draw from it
    _, parts = model.training_step(0)
    anchors = torch.randperm(tiny.num_nodes,
                             generator=torch.Generator().set_state(state))[:64]
    z_f, z_s, pos = model._last_views
    pos = pos.cpu()
    in_batch = torch.isin(pos[0], anchors)
    candidates = torch.unique(torch.cat([anchors, pos[1][in_batch]]))
    expected = plain_infonce(z_f, z_s, pos, config.tau, config.lam, anchors, candidates)
    assert parts["infonce"] == pytest.approx(float(expected), rel=1e-5)


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
    import hetcrf_lite.memory as memory
    from hetcrf_lite.errors import ConfigError

    monkeypatch.setattr(memory, "available_memory_bytes", lambda device: 1024)
    with pytest.raises(ConfigError, match="batch_size"):
        HetCRF(tiny, cfg())
    HetCRF(tiny, cfg(batch_size=64))  # the mini-batch mode is accepted


# --------------------------------------------------------------------------------------------
# Feature handling: identity features without densifying, feature_init, shared generative pass
# --------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def featureless():
    return make_synthetic_hin(num_nodes=120, num_classes=3, feature_mode="none", rates=(5,),
                              seed=2)


@pytest.mark.parametrize("changes, expected", [
    (dict(), 1.0560530424118042),
    (dict(feat_drop=0.2, attn_drop=0.1, mask_rate=0.4, replace_rate=0.2, leave_unchanged=0.1),
     1.0699306726455688),
])
def test_dense_feature_reconstruction_unchanged(changes, expected):
    # Reference values computed with the code before the sparse / one-hot feature paths.
    ds = make_synthetic_hin(num_nodes=120, num_classes=3, feature_mode="dense", rates=(5,), seed=2)
    model, _, parts = first_step(ds, cfg(**changes))
    assert not model.x.is_sparse and model.feat_recon.mask_token.shape == (1, 64)
    assert parts["feat"] == pytest.approx(expected, rel=1e-6, abs=0)


def test_identity_features_are_never_densified(featureless, monkeypatch):
    import hetcrf_lite.generative as gen

    def refuse(*args, **kwargs):
        raise AssertionError("an identity-feature step must not take the dense path")

    monkeypatch.setattr(gen, "_as_dense", refuse)  # masking by densifying
    monkeypatch.setattr(gen.HANDecoder, "forward", refuse)  # decoding F-wide rows
    model, loss, parts = first_step(featureless, cfg())
    n = featureless.num_nodes
    assert model.x.is_sparse and model.x.shape == (n, n + 1) and model.x._nnz() == n
    assert model.feat_recon.token_column and model.feat_recon.mask_token is None
    assert not model.encoder.proj.weight.detach()[:, -1].any()  # zero-initialised token
    loss.backward()
    assert float(model.encoder.proj.weight.grad[:, -1].abs().sum()) > 0  # ... and it learns
    assert set(parts) == {"feat", "edge", "infonce"}


def _train(dataset, config, steps=3):
    seed_everything(config.seed)
    model = HetCRF(dataset, config)
    opt = torch.optim.Adam(model.parameters(), lr=config.lr)
    x0 = model.x.detach().clone()
    losses = []
    for epoch in range(steps):
        model.on_epoch_start(epoch)
        loss, parts = model.training_step(epoch)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(parts)
    return model, x0, losses


def test_feature_init_modes(featureless):
    n, hidden = featureless.num_nodes, 16
    runs = {mode: _train(featureless, cfg(feature_init=mode))
            for mode in ("identity", "embedding", "random")}
    for mode, (model, _, losses) in runs.items():
        assert all(torch.isfinite(torch.tensor(list(p.values()))).all() for p in losses), mode
    ident, emb, rnd = (runs[m][0] for m in ("identity", "embedding", "random"))
    assert ident.encoder.in_channels == n + 1
    assert emb.encoder.in_channels == hidden and rnd.encoder.in_channels == hidden
    # embedding: a trainable table (same start as the random codes), target the node ids
    assert any(p is emb.x for p in emb.parameters()) and emb.x.shape == (n, hidden)
    assert torch.equal(runs["embedding"][1], runs["random"][1])
    assert not torch.equal(emb.x.detach(), runs["embedding"][1])
    assert emb.feat_recon.decoder.convs[emb.metapath_names[0]].lin.out_features == n
    # random: fixed codes, reconstructed themselves
    assert not any(p is rnd.x for p in rnd.parameters())
    assert torch.equal(rnd.x, runs["random"][1])
    assert rnd.feat_recon.decoder.convs[rnd.metapath_names[0]].lin.out_features == hidden
    feats = {m: runs[m][2][0]["feat"] for m in runs}
    assert len({round(v, 6) for v in feats.values()}) == 3  # each mode computes something else
    # the codes come from the seed
    assert torch.equal(HetCRF(featureless, cfg(feature_init="random")).x, rnd.x)
    assert not torch.equal(HetCRF(featureless, cfg(feature_init="random", seed=1)).x, rnd.x)


def test_feature_init_needs_identity_features(tiny):
    from hetcrf_lite.errors import ConfigError

    for mode in ("embedding", "random"):
        with pytest.raises(ConfigError, match=r"feature_init='%s'.*synthetic.*identity" % mode):
            HetCRF(tiny, cfg(feature_init=mode))


@pytest.mark.parametrize("dataset", ["tiny", "featureless"])
def test_shared_generative_pass_saves_one_encoder_pass(request, dataset):
    ds = request.getfixturevalue(dataset)

    def step(config):
        seed_everything(config.seed)
        model = HetCRF(ds, config)
        calls = []
        forward = model.encoder.forward
        model.encoder.forward = lambda *a, **k: calls.append(1) or forward(*a, **k)
        loss, parts = model.training_step(0)
        loss.backward()
        return loss, parts, len(calls)

    base = cfg(cluster_aug=False)
    off_loss, off_parts, off_calls = step(base)
    on_loss, on_parts, on_calls = step(base.replace(shared_generative_pass=True))
    assert (off_calls, on_calls) == (3, 2)
    assert set(on_parts) == {"feat", "edge", "infonce"} and torch.isfinite(on_loss)
    # the generative draws come in the same order, so the contrastive pass sees the same state
    assert on_parts["infonce"] == pytest.approx(off_parts["infonce"], rel=1e-6)
    # one channel off: the switch has nothing to share
    _, _, calls = step(base.replace(shared_generative_pass=True, use_edge_recon=False))
    assert calls == 2
