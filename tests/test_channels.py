"""How the channels share the encoder: each switch changes what is computed, the instruments
measure what they claim, and logging them changes nothing."""
import json
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from hetcrf_lite.config import HetCRFConfig
from hetcrf_lite.contrastive import SecondStageGCN
from hetcrf_lite.errors import DataError
from hetcrf_lite.diagnostics import (effective_rank, knn_class_agreement, mean_pairwise_cosine,
                                     metapath_probe_scores, propagated_features)
from hetcrf_lite.model import HetCRF, balance_gradients
from hetcrf_lite.synthetic import make_synthetic_hin
from hetcrf_lite.train import fit
from hetcrf_lite.utils import seed_everything

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def tiny():
    return make_synthetic_hin(num_nodes=240, num_classes=3, seed=3)


def cfg(**changes) -> HetCRFConfig:
    base = dict(dataset="synthetic", hidden_channels=16, epochs=3, cluster_every=2,
                grad_balance_every=0, lr=0.01, feat_drop=0.0, attn_drop=0.0)
    base.update(changes)
    return HetCRFConfig(**base)


def step_grads(dataset, config: HetCRFConfig) -> tuple[HetCRF, dict[str, torch.Tensor], float]:
    """One seeded training step; the gradient of every parameter that got one, and the loss."""
    seed_everything(config.seed)
    model = HetCRF(dataset, config)
    loss, _ = model.training_step(0)
    loss.backward()
    grads = {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}
    return model, grads, float(loss)


def encoder_grads(grads: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {n: g for n, g in grads.items() if n.startswith("encoder.")}


# ----------------------------------------------------------------------------- the switches
def test_detached_contrastive_leaves_the_encoder_to_the_generative_channel(tiny):
    """cl_encoder_grad false: the encoder's gradient is the generative loss's alone (the same
    step with the contrastive loss weighted 0); true: the contrastive loss adds to it."""
    _, alone, _ = step_grads(tiny, cfg(w_cl=0.0))
    _, detached, _ = step_grads(tiny, cfg(cl_encoder_grad=False))
    _, shared, _ = step_grads(tiny, cfg(cl_encoder_grad=True))
    for name, g in encoder_grads(alone).items():
        assert torch.equal(detached[name], g), name
    assert any(not torch.allclose(shared[n], g) for n, g in encoder_grads(alone).items())


def test_contrastive_only_still_trains_the_encoder(tiny):
    _, grads, _ = step_grads(tiny, cfg(use_feat_recon=False, use_edge_recon=False,
                                       cl_encoder_grad=False))
    assert encoder_grads(grads) and any(g.abs().sum() > 0 for g in encoder_grads(grads).values())


@pytest.mark.parametrize("switch, module", [
    (dict(use_feat_recon=False, use_edge_recon=False, cl_beta_grad=False), "contrastive"),
    (dict(use_contrastive=False, gen_beta_grad=False), "generative"),
])
def test_beta_grad_switches_keep_a_channel_off_the_semantic_attention(tiny, switch, module):
    _, grads, _ = step_grads(tiny, cfg(**switch))
    semantic = {n: g for n, g in grads.items() if n.startswith("encoder.semantic")}
    assert all(g.abs().max() == 0 for g in semantic.values()), module
    _, free, _ = step_grads(tiny, cfg(**{k: v for k, v in switch.items()
                                         if not k.endswith("beta_grad")}))
    assert any(g.abs().max() > 0 for n, g in free.items() if n.startswith("encoder.semantic"))


def test_second_stage_weights_select_meta_paths():
    """weights (1, 0) is the GCN over the first meta-path alone; None is the mean."""
    torch.manual_seed(0)
    n = 6
    ring = torch.tensor([[i for i in range(n)] + [(i + 1) % n for i in range(n)],
                         [(i + 1) % n for i in range(n)] + [i for i in range(n)]])
    loops = torch.arange(n).repeat(2, 1)
    graphs = {"A": torch.cat([ring, loops], 1), "B": loops}
    gcn = SecondStageGCN(4, 1)
    x = torch.randn(n, 4)
    only_a = gcn(x, {"A": graphs["A"]})
    assert torch.allclose(gcn(x, graphs, torch.tensor([1.0, 0.0])), only_a, atol=1e-6)
    mean = (only_a + gcn(x, {"B": graphs["B"]})) / 2
    assert torch.allclose(gcn(x, graphs), mean, atol=1e-6)


@pytest.mark.parametrize("switch", [dict(second_stage_fusion="mean"), dict(cl_fusion="own"),
                                    dict(cl_beta_grad=False, cl_encoder_grad=True),
                                    dict(gen_beta_grad=False), dict(node_attention="mean"),
                                    dict(schema_exclude_self=True)])
def test_each_switch_changes_the_step(tiny, switch):
    _, base, _ = step_grads(tiny, cfg(cl_encoder_grad=True))
    _, other, _ = step_grads(tiny, cfg(**{"cl_encoder_grad": True, **switch}))
    common = set(base) & set(other)
    assert set(base) != set(other) or any(not torch.allclose(base[n], other[n]) for n in common)


def test_mean_fusion_is_the_plain_mean_and_takes_no_parameters():
    from hetcrf_lite.encoder import HANEncoder, MeanFusion

    zs = [torch.randn(5, 3), torch.randn(5, 3), torch.randn(5, 3)]
    h, beta = MeanFusion()(zs)
    assert torch.allclose(h, (zs[0] + zs[1] + zs[2]) / 3)
    assert torch.equal(beta, torch.full((3,), 1 / 3))
    mean = HANEncoder(4, 8, ["A", "B"], semantic_fusion="mean")
    att = HANEncoder(4, 8, ["A", "B"])
    assert sum(p.numel() for p in att.parameters()) > sum(p.numel() for p in mean.parameters())
    edges = {m: torch.arange(6).repeat(2, 1) for m in ("A", "B")}
    out = mean(torch.randn(6, 4), edges)
    assert torch.allclose(out.h, (out.z["A"] + out.z["B"]) / 2)


def test_mean_fusion_changes_the_step_and_keeps_beta_off_the_gradient(tiny):
    _, base, _ = step_grads(tiny, cfg(cl_encoder_grad=True))
    model, mean, _ = step_grads(tiny, cfg(cl_encoder_grad=True, semantic_fusion="mean"))
    assert not any(n.startswith("encoder.semantic") for n in mean)  # nothing to train there
    common = set(base) & set(mean)
    assert any(not torch.allclose(base[n], mean[n]) for n in common if n.startswith("encoder."))
    assert torch.equal(model.encode().semantic_attention, torch.full((2,), 0.5))


def test_balance_gradients_by_hand():
    g_gen, g_cl = torch.tensor([1.0, 0.0]), torch.tensor([-1.0, 1.0])  # conflicting
    # pcgrad: g_gen - (-1 / 2) g_cl = (0.5, 0.5); g_cl - (-1 / 1) g_gen = (0, 1); sum (0.5, 1.5)
    assert torch.allclose(balance_gradients(g_gen, g_cl, "pcgrad"), torch.tensor([0.5, 1.5]))
    agree = torch.tensor([1.0, 1.0])
    assert torch.equal(balance_gradients(g_gen, agree, "pcgrad"), g_gen + agree)
    expected = g_gen + g_cl / 2 ** 0.5  # the contrastive part scaled to length 1
    assert torch.allclose(balance_gradients(g_gen, g_cl, "norm"), expected)
    assert torch.equal(balance_gradients(g_gen, g_cl, "none"), g_gen + g_cl)


@pytest.mark.parametrize("mode", ["norm"])
def test_channel_balance_changes_only_the_encoder_gradient(tiny, mode):
    _, plain, loss = step_grads(tiny, cfg(cl_encoder_grad=True))
    _, balanced, loss_b = step_grads(tiny, cfg(cl_encoder_grad=True, channel_balance=mode))
    assert loss_b == pytest.approx(loss, abs=1e-6)  # the balancing term is worth zero
    for name, g in plain.items():
        if not name.startswith("encoder."):
            assert torch.allclose(balanced[name], g, atol=1e-6), name
    assert any(not torch.allclose(balanced[n], g) for n, g in encoder_grads(plain).items())


def test_norm_balance_gives_the_channels_equal_norms(tiny):
    """Reference: each channel's encoder gradient from a separate, identically seeded step."""
    _, gen, _ = step_grads(tiny, cfg(cl_encoder_grad=True, w_cl=0.0))
    _, both, _ = step_grads(tiny, cfg(cl_encoder_grad=True))
    _, bal, _ = step_grads(tiny, cfg(cl_encoder_grad=True, channel_balance="norm"))
    names = sorted(encoder_grads(gen))
    flat = lambda d: torch.cat([d[n].reshape(-1) for n in names])  # noqa: E731
    g_gen, g_cl = flat(gen), flat(both) - flat(gen)
    expected = g_gen + g_cl * g_gen.norm() / g_cl.norm()
    assert torch.allclose(flat(bal), expected, atol=1e-5 * expected.abs().max())


# ----------------------------------------------------------------------------- the history
def test_logging_the_channels_leaves_training_unchanged(tiny):
    _, quiet = fit(tiny, cfg(cl_encoder_grad=True), progress=False)
    _, logged = fit(tiny, cfg(cl_encoder_grad=True, channel_grad_every=1), progress=False)
    assert [r["loss"] for r in quiet["epochs"]] == [r["loss"] for r in logged["epochs"]]
    for record in logged["epochs"]:
        diag = record["diagnostics"]
        assert -1.0 <= diag["grad_cos"] <= 1.0
        assert diag["grad_norm_gen"] > 0 and diag["grad_norm_cl"] > 0
        assert sum(diag["beta"]) == pytest.approx(1.0, abs=1e-5) and len(diag["beta"]) == 2
    assert "grad_cos" not in quiet["epochs"][0].get("diagnostics", {})


# ----------------------------------------------------------------------------- instruments
def brute_knn(x: np.ndarray, y: np.ndarray, k: int) -> float:
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    sim = xn @ xn.T
    np.fill_diagonal(sim, -np.inf)
    nbrs = np.argsort(-sim, axis=1, kind="stable")[:, :k]
    return float((y[nbrs] == y[:, None]).mean())


def test_knn_agreement_matches_brute_force_and_extremes():
    rng = np.random.default_rng(0)
    x, y = rng.normal(size=(120, 5)), rng.integers(0, 3, 120)
    assert knn_class_agreement(x, y, k=7) == pytest.approx(brute_knn(x, y, 7), abs=1e-9)
    centres = np.eye(3) * 10
    separated = centres[y] + rng.normal(scale=0.01, size=(120, 3))
    assert knn_class_agreement(separated, y) == 1.0
    y_unlabelled = y.copy()
    y_unlabelled[:20] = -1
    keep = y_unlabelled >= 0
    assert knn_class_agreement(x, y_unlabelled, 5) == pytest.approx(
        brute_knn(x[keep], y[keep], 5), abs=1e-9)


def test_collapse_measures():
    rng = np.random.default_rng(1)
    line = np.outer(rng.normal(size=200), rng.normal(size=8))
    assert effective_rank(line) == pytest.approx(1.0, abs=1e-6)
    iso = rng.normal(size=(4000, 8))
    assert 7.5 < effective_rank(iso) <= 8.0
    x = rng.normal(size=(50, 4)) + 3.0
    xn = x / np.linalg.norm(x, axis=1, keepdims=True)
    cos = xn @ xn.T
    expected = (cos.sum() - np.trace(cos)) / (50 * 49)
    assert mean_pairwise_cosine(x) == pytest.approx(expected, abs=1e-12)
    assert mean_pairwise_cosine(np.ones((4, 3))) == pytest.approx(1.0)
    # beyond 2000 rows: still exact (the measure once sampled 2000), and a zero row counts
    # as similarity 0 with everything
    big = rng.normal(size=(2500, 6)) + 1.0
    big[7] = 0.0
    u = big / np.maximum(np.linalg.norm(big, axis=1, keepdims=True), 1e-300)
    sim = u @ u.T
    dense = (sim.sum() - np.trace(sim)) / (2500 * 2499)
    assert mean_pairwise_cosine(torch.as_tensor(big)) == pytest.approx(dense, abs=1e-12)


def test_propagated_features_are_neighbour_means(tiny):
    out = propagated_features(tiny)
    x = tiny.x.to_dense().numpy() if tiny.x.is_sparse else tiny.x.numpy()
    f = x.shape[1]
    assert out.shape == (tiny.num_nodes, f * (1 + len(tiny.metapath_adj)))
    ei = tiny.metapath_adj[next(iter(tiny.metapath_adj))].numpy()
    node = 7
    nbrs = ei[0][ei[1] == node]
    assert np.allclose(out[node, f:2 * f], x[nbrs].mean(0), atol=1e-6)
    assert np.allclose(out[:, :f], x, atol=1e-6)


def test_metapath_probes_rank_the_homophilous_meta_path_first(tiny):
    model = HetCRF(tiny, cfg())
    scores = metapath_probe_scores(model.encode().z, tiny, runs=3)
    assert set(scores) == set(tiny.metapaths)
    assert all(0 <= s <= 100 for s in scores.values())


# ----------------------------------------------------------------------------- the benchmark
def test_channels_json_states_its_criteria_correctly():
    """docs/channels.json (benchmarks/channels.py): the criteria it reports follow from its
    own numbers, recomputed here."""
    path = ROOT / "docs" / "channels.json"
    data = json.loads(path.read_text())
    for graph, crit in data["criteria"].items():
        cells = data["table"][graph]
        for rate, margin in crit["margin"].items():
            best = max(cells["generative"]["mean"][rate], cells["contrastive"]["mean"][rate])
            assert margin == pytest.approx(cells["full"]["mean"][rate] - best, abs=1e-9)
            runs = [r["macro_f1"][rate] for r in cells["full"]["runs"]]
            assert cells["full"]["mean"][rate] == pytest.approx(np.mean(runs), abs=0.006)
        assert crit["margin_ok"] == all(m >= 2.0 for m in crit["margin"].values())


def test_channels_benchmark_runs_end_to_end(tmp_path):
    sys.path.insert(0, str(ROOT / "benchmarks"))
    try:
        import channels
    finally:
        sys.path.pop(0)
    out = tmp_path / "c.json"
    assert channels.main(["--graphs", "default", "--seeds", "0", "--jobs", "1",
                          "--set", "epochs=2", "--cache", str(tmp_path / "cache"),
                          "--json", str(out)]) == 0
    data = json.loads(out.read_text())
    assert set(data["table"]["default"]) == {"full", "generative", "contrastive"}
    assert "margin_ok" in data["criteria"]["default"]


def test_method_page_quotes_the_standardised_channels_run():
    """docs/method.md's table "Is the scale why the synthetic bar fails?" shows, for every graph
    and variant, docs/channels.json's means and then the standardised run's
    (benchmarks/logs/method_search/channels_standardised.json), to one decimal."""
    page = (ROOT / "docs" / "method.md").read_text()
    table = page.split("**Is the scale why the synthetic bar fails?**")[1].split("No. ")[0]
    shipped = json.loads((ROOT / "docs" / "channels.json").read_text())
    std = json.loads((ROOT / "benchmarks" / "logs" / "method_search" /
                      "channels_standardised.json").read_text())
    assert std["meta"]["changes"] == {"embed_norm": "standardise"}
    names = {"default": "| default |", "heldout_a": "| held-out A |", "heldout_b": "| held-out B |"}
    for graph, name in names.items():
        row = next(line for line in table.splitlines() if line.startswith(name))
        cells = [c.strip() for c in row.strip("|").split("|")[1:]]
        for cell, variant in zip(cells, ("full", "generative", "contrastive")):
            means = [run["table"][graph][variant]["mean"] for run in (shipped, std)]
            assert cell == " -> ".join(" / ".join(f"{m[r]:.1f}" for r in ("20", "40", "60"))
                                       for m in means)


def test_method_page_quotes_the_infonce_into_the_encoder_run():
    """docs/method.md's paragraph on ``cl_encoder_grad: true`` quotes its JSON: each graph's
    full-model mean and std at 20 labels, the means at 40 and 60, and B's margins over the
    better single channel of docs/channels.json."""
    page = " ".join((ROOT / "docs" / "method.md").read_text().split())
    text = page.split("**InfoNCE into the encoder again, the rest of 0.2 kept**")[1][:1200]
    run = json.loads((ROOT / "benchmarks" / "logs" / "method_search" /
                      "channels_cl_encoder_grad.json").read_text())
    shipped = json.loads((ROOT / "docs" / "channels.json").read_text())["table"]
    assert run["meta"]["changes"] == {"cl_encoder_grad": True}
    for graph in ("default", "heldout_a", "heldout_b"):
        full = run["table"][graph]["full"]
        m, sd = full["mean"], full["std"]
        assert (f"{m['20']:.1f} ± {sd['20']:.1f} / {m['40']:.1f} / {m['60']:.1f}") in text
    b = run["table"]["heldout_b"]["full"]["mean"]
    margins = [b[r] - max(shipped["heldout_b"][v]["mean"][r] for v in ("generative", "contrastive"))
               for r in ("20", "40", "60")]
    assert " / ".join(f"{x:.1f}" for x in margins) in text


def test_node_attention_mean_reaches_the_feature_decoder(tiny):
    """The switch makes every GAT of the model uniform: the encoder's and both decoders' (the
    measurement of docs/method.md patched all of them)."""
    model, grads, _ = step_grads(tiny, cfg(node_attention="mean"))
    gats = [m for m in model.modules() if type(m).__name__ == "MetaPathGATConv"]
    assert len(gats) == 3 * len(model.metapath_names)  # encoder, feature and edge decoders
    assert all(not g.attention and g.att_src is None for g in gats)
    assert not any("att_" in n for n in grads)


def test_effective_neighbours_is_the_degree_when_uniform_and_one_when_peaked():
    from hetcrf_lite.diagnostics import effective_neighbours
    from hetcrf_lite.encoder import MetaPathGATConv

    n = 6  # node 0 has 3 in-edges, node 1 has 2, nodes 2-4 one each, node 5 none
    ei = torch.tensor([[1, 2, 3, 0, 2, 0, 1, 2], [0, 0, 0, 1, 1, 2, 3, 4]])
    deg = torch.bincount(ei[1], minlength=n).float()
    uniform = 1.0 / deg[ei[1]]
    assert torch.allclose(effective_neighbours(uniform, ei, n), deg)  # node 5: 0
    peaked = torch.tensor([1.0, 0.0, 0.0, 0.5, 0.5, 1.0, 1.0, 1.0])
    assert torch.allclose(effective_neighbours(peaked, ei, n),
                          torch.tensor([1.0, 2.0, 1.0, 1.0, 1.0, 0.0]))
    two_heads = torch.stack([uniform, peaked], 1)  # averaged over heads
    assert torch.allclose(effective_neighbours(two_heads, ei, n),
                          (deg + torch.tensor([1.0, 2.0, 1.0, 1.0, 1.0, 0.0])) / 2)
    conv = MetaPathGATConv(4, 4, attention=False)  # the neighbour mean: the degree exactly
    _, alpha = conv(torch.randn(n, 4), ei, return_attention_weights=True)
    assert torch.allclose(effective_neighbours(alpha, ei, n), deg)
    with pytest.raises(DataError, match="8 edges"):
        effective_neighbours(uniform[:5], ei, n)


def test_method_page_quotes_the_node_attention_run():
    """docs/method.md's table "Node-level attention on dense features": for every graph and
    variant, docs/channels.json's mean ± std and then the ``node_attention: mean`` run's."""
    page = (ROOT / "docs" / "method.md").read_text()
    table = page.split("### Node-level attention on dense features")[1].split("What it does")[0]
    shipped = json.loads((ROOT / "docs" / "channels.json").read_text())["table"]
    run = json.loads((ROOT / "benchmarks" / "logs" / "method_search" /
                      "channels_node_attention_mean.json").read_text())
    assert run["meta"]["changes"] == {"node_attention": "mean"}
    graphs = {"default": "default", "heldout_a": "held-out A", "heldout_b": "held-out B"}
    variants = {"full": "full model", "generative": "generative only",
                "contrastive": "contrastive only"}
    for graph, gname in graphs.items():
        for variant, vname in variants.items():
            row = next(line for line in table.splitlines()
                       if line.startswith(f"| {gname} | {vname} |"))
            cells = [c.strip().strip("*") for c in row.strip("|").split("|")[2:]]
            for cell, res in zip(cells, (shipped, run["table"])):
                m, sd = res[graph][variant]["mean"], res[graph][variant]["std"]
                assert cell == " / ".join(f"{m[r]:.1f} ± {sd[r]:.1f}" for r in ("20", "40", "60"))
    margins = run["criteria"]["heldout_b"]["margin"]
    assert " / ".join(f"{-margins[r]:.2f}" for r in ("20", "40", "60")) in page
    readme = " ".join((ROOT / "README.md").read_text().split())
    b = [res["heldout_b"]["full"]["mean"] for res in (shipped, run["table"])]
    assert "from {} to {}".format(*(" / ".join(f"{m[r]:.1f}" for r in ("20", "40", "60"))
                                    for m in b)) in readme


def test_method_page_quotes_the_halves_of_the_full_embedding():
    """docs/method.md's table "Which half of the full model's embedding loses?": each cell is
    the committed run's mean (session 12's two channels.py runs and session 11's concat run), and
    the runs are what the page says they are (``embed`` set, node_attention mean)."""
    logs = ROOT / "benchmarks" / "logs" / "method_search"
    halves = {e: json.loads((logs / "session12" / f"channels_mean_embed_{e}.json").read_text())
              for e in ("encoder", "contrastive")}
    concat = json.loads((logs / "channels_node_attention_mean.json").read_text())["table"]
    for embed, run in halves.items():
        assert run["meta"]["changes"] == {"node_attention": "mean", "embed": embed}
    page = (ROOT / "docs" / "method.md").read_text()
    after = page.split("**Which half of the full model's embedding loses?**")[1].split("\n\n")
    table = next(block for block in after if block.startswith("| graph |"))
    columns = [halves["encoder"]["table"], halves["contrastive"]["table"], concat,
               halves["contrastive"]["table"]]
    variants = ["full", "full", "full", "contrastive"]
    for graph, name in {"default": "default", "heldout_a": "held-out A",
                        "heldout_b": "held-out B"}.items():
        row = next(line for line in table.splitlines() if line.startswith(f"| {name} |"))
        cells = [c.strip() for c in row.strip("|").split("|")[1:]]
        for cell, res, variant in zip(cells, columns, variants, strict=True):
            m = res[graph][variant]["mean"]
            assert cell == " / ".join(f"{m[r]:.1f}" for r in ("20", "40", "60")), (graph, variant)
