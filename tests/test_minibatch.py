"""Subgraph mini-batches: sampling, induced sub-datasets, subgraph steps, layer-wise inference."""
import math

import pytest
import torch

from hetcrf_lite.config import HetCRFConfig
from hetcrf_lite.errors import ConfigError, DataError, TrainingError
from hetcrf_lite.minibatch import (MiniBatchTrainer, SubgraphSampler, embed_layerwise,
                                   fit_minibatch, induced_subgraph, layerwise_embeddings,
                                   refresh_clusters)
from hetcrf_lite.model import HetCRF
from hetcrf_lite.sparse import RowIndex
from hetcrf_lite.synthetic import make_synthetic_hin
from hetcrf_lite.utils import seed_everything

N = 240


@pytest.fixture(scope="module")
def tiny():
    return make_synthetic_hin(num_nodes=N, seed=3, rates=(5, 10))


@pytest.fixture(scope="module")
def tiny_sparse():
    return make_synthetic_hin(num_nodes=N, seed=3, rates=(5, 10), sparse_storage=True)


@pytest.fixture(scope="module")
def tiny_none():
    return make_synthetic_hin(num_nodes=N, seed=3, rates=(5, 10), feature_mode="none")


def cfg(**changes) -> HetCRFConfig:
    base = dict(dataset="synthetic", hidden_channels=16, heads=1, epochs=2, cluster_every=1,
                grad_balance_every=0, lr=0.01, device="cpu")
    base.update(changes)
    return HetCRFConfig(**base)


def dense_adj(edge_index: torch.Tensor, n: int) -> torch.Tensor:
    a = torch.zeros(n, n)
    a[edge_index[0], edge_index[1]] = 1.0
    return a


# --------------------------------------------------------------------------- sampling
def test_row_index_groups_an_unsorted_index():
    index = torch.tensor([[0, 1, 2, 3, 4], [2, 0, 2, 1, 0]])  # grouped by row 1, not sorted
    idx = RowIndex.build(index, 3, by=1)
    assert idx.ptr.tolist() == [0, 2, 3, 5]
    seg, pos = idx.gather(torch.tensor([2, 0]))
    assert seg.tolist() == [0, 0, 1, 1]
    assert idx.col[pos].tolist() == [0, 2, 1, 4]  # sources into 2, then into 0
    assert idx.edge_ids(pos).tolist() == [0, 2, 1, 4]  # columns of the input index


def test_row_sample_draws_distinct_true_neighbours_never_the_node_itself(tiny):
    ei = tiny.metapath_adj["PAP"]
    idx = RowIndex.build(ei, N, by=1)
    rows = torch.arange(0, N, 7)
    adj = dense_adj(ei, N)
    out = idx.sample(rows, 3, torch.Generator().manual_seed(0))
    again = idx.sample(rows, 3, torch.Generator().manual_seed(0))
    assert torch.equal(out, again)  # same generator state, same draw
    # regroup by row: every draw is a neighbour of its row, distinct, not the row itself
    start = 0
    for r in rows.tolist():
        deg = int(adj[:, r].sum()) - 1  # without the self-loop
        k = min(3, deg)
        drawn = out[start:start + k]
        start += k
        assert drawn.unique().numel() == k and r not in drawn.tolist()
        assert bool(adj[drawn, r].all())
    assert start == out.numel()
    everything = idx.sample(rows, -1)
    assert everything.numel() == int(adj[:, rows].sum()) - rows.numel()
    with pytest.raises(ConfigError):
        idx.sample(rows, 0)


def test_epoch_seeds_visit_every_node_once(tiny):
    s = SubgraphSampler(tiny, batch_size=50, fanout=[2], seed=1)
    batches = s.epoch_seeds(0)
    assert len(batches) == s.num_steps() == math.ceil(N / 50)
    assert torch.equal(torch.cat(batches).sort().values, torch.arange(N))
    assert not torch.equal(torch.cat(batches), torch.cat(s.epoch_seeds(1)))  # new order
    assert torch.equal(torch.cat(batches), torch.cat(s.epoch_seeds(0)))  # seeded


def test_ranks_take_disjoint_equal_shares_of_one_order(tiny):
    ranks = [SubgraphSampler(tiny, 50, [2], seed=1, rank=r, world_size=2).epoch_seeds(0)
             for r in range(2)]
    assert len(ranks[0]) == len(ranks[1]) == math.ceil(N / 100)  # DDP needs equal step counts
    seen = torch.cat([torch.cat(b) for b in ranks])
    assert torch.equal(seen.unique(), torch.arange(N))
    assert seen.numel() == 300  # 240 nodes padded to 3 steps x 2 ranks x 50 seeds
    assert not set(ranks[0][0].tolist()) & set(ranks[1][0].tolist())


def test_node_set_holds_seeds_their_fanout_and_their_positives(tiny):
    s = SubgraphSampler(tiny, 8, fanout=[2])
    seeds = torch.tensor([3, 50, 100, 101])
    pos = RowIndex.build(tiny.pos, N, by=0)
    ids = s.sample_nodes(seeds, torch.Generator().manual_seed(0), pos)
    assert torch.equal(ids, ids.unique())  # sorted and distinct
    assert set(seeds.tolist()) <= set(ids.tolist())
    positives = tiny.pos[1][torch.isin(tiny.pos[0], seeds)]
    assert set(positives.tolist()) <= set(ids.tolist())
    # at most 2 drawn per seed and meta-path, plus the positives
    assert ids.numel() <= seeds.numel() * (1 + 2 * len(tiny.metapaths)) + positives.numel()
    two_hops = SubgraphSampler(tiny, 8, fanout=[2, 2]).sample_nodes(
        seeds, torch.Generator().manual_seed(0))
    assert two_hops.numel() > s.sample_nodes(seeds, torch.Generator().manual_seed(0)).numel()


def test_subgraph_size_does_not_grow_with_the_graph():
    sizes = []
    for n in (600, 2400):
        ds = make_synthetic_hin(num_nodes=n, seed=0, build_positives=False)
        s = SubgraphSampler(ds, 32, fanout=[3])
        g = torch.Generator().manual_seed(0)
        sizes.append(max(s.sample_nodes(b, g).numel() for b in s.epoch_seeds(0)[:5]))
    assert all(size <= 32 * (1 + 3 * 2) for size in sizes)  # the bound, whatever N


# --------------------------------------------------------------------------- sub-datasets
@pytest.mark.parametrize("features", ["tiny", "tiny_sparse"])
def test_induced_subgraph_matches_the_dense_restriction(features, request):
    ds = request.getfixturevalue(features)
    ids = torch.tensor(sorted(torch.randperm(N, generator=torch.Generator().manual_seed(0))[:70]
                              .tolist()))
    sub = induced_subgraph(ds, ids)
    assert sub.num_nodes == 70 and torch.equal(sub.data[ds.target].n_id, ids)
    x_sub = sub.x.to_dense() if sub.x.is_sparse else sub.x
    x_full = ds.x.to_dense() if ds.x.is_sparse else ds.x
    assert torch.equal(x_sub, x_full[ids])
    assert torch.equal(sub.labels, ds.labels[ids])
    for m, ei in ds.metapath_adj.items():
        assert torch.equal(dense_adj(sub.metapath_adj[m], 70), dense_adj(ei, N)[ids][:, ids])
        e = sub.metapath_adj[m]
        assert bool(((e[1][1:] > e[1][:-1]) | ((e[1][1:] == e[1][:-1]) & (e[0][1:] > e[0][:-1])))
                    .all())  # (destination, source) order kept
        counts = torch.zeros(N, N)
        counts[ei[0], ei[1]] = ds.metapath_counts[m]
        assert torch.equal(sub.metapath_counts[m], counts[ids[e[0]], ids[e[1]]])
    for t in ds.neighbor_types:
        full = ds.neighbors(t)
        keep = torch.isin(full[0], ids)
        mine = sub.neighbors(t)
        back = torch.stack([ids[mine[0]], sub.data[t].n_id[mine[1]]])  # to full-graph ids
        assert torch.equal(back, full[:, keep])
    pos_mask = torch.isin(ds.pos[0], ids) & torch.isin(ds.pos[1], ids)
    assert torch.equal(torch.stack([ids[sub.pos[0]], ids[sub.pos[1]]]), ds.pos[:, pos_mask])


def test_feature_rows_of_uncoalesced_sparse_features():
    from hetcrf_lite.minibatch import _feature_rows, _sparse_rows

    idx = torch.tensor([[2, 0, 2, 1], [1, 3, 1, 0]])  # unsorted, (2, 1) stored twice
    x = torch.sparse_coo_tensor(idx, torch.tensor([1.0, 2.0, 3.0, 4.0]), (3, 4))
    rows = _feature_rows(x, _sparse_rows(x), torch.tensor([0, 2]))
    assert torch.equal(rows.to_dense(), x.to_dense()[[0, 2]])  # duplicates summed


def test_induced_subgraph_of_every_node_is_the_dataset(tiny_sparse):
    ds = tiny_sparse
    sub = induced_subgraph(ds, torch.arange(N))
    assert torch.equal(sub.x.to_dense(), ds.x.to_dense())
    for m in ds.metapaths:
        assert torch.equal(sub.metapath_adj[m], ds.metapath_adj[m])
        assert torch.equal(sub.metapath_counts[m], ds.metapath_counts[m])
    assert torch.equal(sub.pos, ds.pos)
    with pytest.raises(DataError):
        induced_subgraph(ds, torch.tensor([0, N]))


# --------------------------------------------------------------------------- subgraph tensors
def _step(model: HetCRF, graph=None, state=None):
    """One training step's loss and gradients, from a given generator/RNG state."""
    if state is not None:
        model.generator.set_state(state[0])
        torch.set_rng_state(state[1])
    model.zero_grad(set_to_none=True)
    loss, _ = model.training_step(1, graph)
    loss.backward()
    return loss.detach(), {k: p.grad.clone() for k, p in model.named_parameters()
                           if p.grad is not None}


@pytest.mark.parametrize("data, changes", [
    ("tiny", {}),
    ("tiny_sparse", {}),  # sparse features with the [MASK] column
    ("tiny_none", dict(feature_init="embedding")),  # per-node table rows
    ("tiny_none", dict(feature_init="random")),
    ("tiny", dict(shared_generative_pass=True, views="raw", schema_sample={"author": 2},
                  negatives="drop_same_cluster")),
    ("tiny", dict(metapath_positives=False, second_stage="before_views", encoder="gcn")),
])
def test_the_subgraph_of_every_node_is_the_full_graph_step(data, changes, request):
    ds = request.getfixturevalue(data)
    seed_everything(0)
    model = HetCRF(ds, cfg(**changes))
    model.on_epoch_start(0)  # cluster labels and extra positives exist
    state = (model.generator.get_state(), torch.get_rng_state())
    loss, grads = _step(model, state=state)
    graph = model.subgraph(induced_subgraph(ds, torch.arange(N)), torch.arange(N))
    sub_loss, sub_grads = _step(model, graph, state)
    assert loss.item() == sub_loss.item()  # exactly: a missed tensor would show here
    assert grads.keys() == sub_grads.keys() and len(grads) == len(list(model.parameters()))
    for k in grads:
        assert torch.equal(grads[k], sub_grads[k]), k


def test_subgraph_step_runs_on_the_subgraph_and_trains_the_model(tiny):
    seed_everything(0)
    model = HetCRF(tiny, cfg(batch_size=32))
    model.on_epoch_start(0)
    full_x, full_edges, full_pos = model.x, model.edge_index_dict, model.base_pos
    ids = SubgraphSampler(tiny, 32, [2]).sample_nodes(torch.arange(0, N, 8),
                                                      torch.Generator().manual_seed(0))
    s = ids.numel()
    graph = model.subgraph(induced_subgraph(tiny, ids), ids)
    assert graph.num_nodes == s and graph.x.shape[0] == s
    assert all(int(e.max()) < s for e in graph.edge_index_dict.values())
    assert int(graph.base_pos.max()) < s and graph.cluster_labels.shape == (s,)
    assert int(graph.extra_pos.max()) < s
    assert all(int(rel[0].max()) < s for rel in graph.relations.values())
    # the cluster labels of the set are the full graph's labels of those nodes
    assert torch.equal(graph.cluster_labels, model.augmenter.labels[ids])
    before = [p.detach().clone() for p in model.parameters()]
    opt = torch.optim.Adam(model.parameters(), lr=0.01)
    loss, parts = model.training_step(0, graph)
    assert torch.isfinite(loss) and set(parts) == {"feat", "edge", "infonce"}
    loss.backward()
    assert float(model.encoder.proj.weight.grad.abs().sum()) > 0  # reaches the encoder
    opt.step()
    assert model.gradient_balance_summary()  # on the subgraph's views and positives
    assert model.x is full_x and model.edge_index_dict is full_edges  # the model is untouched
    assert model.base_pos is full_pos and model.num_nodes == N
    assert model.augmenter.labels.shape == (N,)
    assert any(not torch.equal(a, b) for a, b in zip(before, model.parameters()))
    assert model.embed().shape == (N, 32)  # the full graph


def test_embedding_table_gets_gradient_on_the_subgraph_rows_only(tiny_none):
    model = HetCRF(tiny_none, cfg(feature_init="embedding"))
    ids = torch.arange(10, 60)
    graph = model.subgraph(induced_subgraph(tiny_none, ids), ids)
    assert graph.x.shape == (50, 16) and torch.equal(graph.x, model.x[10:60])
    model.training_step(0, graph)[0].backward()
    assert isinstance(model.x, torch.nn.Parameter)
    touched = model.x.grad.abs().sum(1) > 0  # [N]
    assert bool(touched[ids].any()) and not bool(touched[:10].any() or touched[60:].any())


def test_subgraph_refuses_node_ids_that_do_not_match(tiny):
    model = HetCRF(tiny, cfg())
    ids = torch.arange(0, N, 2)
    with pytest.raises(ConfigError, match="node_ids"):
        model.subgraph(induced_subgraph(tiny, ids), ids[:-1])


# --------------------------------------------------------------------------- inference
@pytest.mark.parametrize("data, changes", [
    ("tiny", {}),
    ("tiny_sparse", dict(heads=2, second_stage_depth=2)),
    ("tiny", dict(encoder="gcn", second_stage_depth=0)),
    ("tiny_none", dict(feature_init="embedding")),
    ("tiny", dict(embed="contrastive", embed_norm="standardise")),
])
def test_layerwise_inference_equals_the_full_graph_pass(data, changes, request):
    model = HetCRF(request.getfixturevalue(data), cfg(**changes))
    h, contrast = layerwise_embeddings(model, chunk_size=37)  # 37 does not divide 240
    assert torch.allclose(h, model.encode().h, atol=1e-5)
    assert torch.allclose(contrast, model.contrastive_embedding(), atol=1e-5)
    assert torch.allclose(embed_layerwise(model, chunk_size=50), model.embed(), atol=1e-5)
    assert model.training  # mode restored


def test_refresh_clusters_equals_the_models_own_refresh(tiny):
    a, b = HetCRF(tiny, cfg()), HetCRF(tiny, cfg())
    b.load_state_dict(a.state_dict())
    a.on_epoch_start(0)
    refresh_clusters(b, 0, chunk_size=64)
    assert torch.equal(a.augmenter.labels, b.augmenter.labels)
    assert torch.equal(a.augmenter.extra, b.augmenter.extra)
    assert "contrastive_embedding" not in b.__dict__  # no method replaced on the instance


# --------------------------------------------------------------------------- training
def test_trainer_epoch_is_a_pass_over_all_seeds_and_repeats_with_the_seed(tiny):
    config = cfg(batch_size=64, fanout=[2], epochs=2, grad_balance_every=1)
    model, history = fit_minibatch(tiny, config, progress=False)
    epochs = history["epochs"]
    assert [e["steps"] for e in epochs] == [math.ceil(N / 64)] * 2
    assert all(set(e["parts"]) == {"feat", "edge", "infonce"} for e in epochs)
    assert all(0 < e["gradient_balance"]["pos_mass_mean"] < 1 for e in epochs)
    assert all(e["subgraph_nodes_max"] < N for e in epochs)  # steps ran on subgraphs
    again, _ = fit_minibatch(tiny, config, progress=False)
    assert torch.equal(model.embed(), again.embed())
    other, _ = fit_minibatch(tiny, config.replace(seed=1), progress=False)
    assert not torch.equal(model.embed(), other.embed())


def test_train_fit_with_batch_size_is_the_subgraph_trainer(tiny):
    from hetcrf_lite.train import fit

    config = cfg(batch_size=64, epochs=2)
    model, history = fit(tiny, config, progress=False)
    assert [e["steps"] for e in history["epochs"]] == [math.ceil(N / 64)] * 2
    same, _ = fit_minibatch(tiny, config, progress=False)
    assert torch.equal(model.embed(), same.embed())
    full, full_history = fit(tiny, config.replace(batch_size=None), progress=False)
    assert "steps" not in full_history["epochs"][0]  # full batch: one step per epoch


def test_trainer_resumes_where_it_stopped(tiny, tmp_path):
    config = cfg(batch_size=64, epochs=2)
    straight, _ = fit_minibatch(tiny, config, progress=False)
    fit_minibatch(tiny, config.replace(epochs=1), out_dir=tmp_path, progress=False)
    resumed, history = fit_minibatch(tiny, config, out_dir=tmp_path, progress=False, resume=True)
    assert len(history["epochs"]) == 2
    assert torch.equal(straight.embed(), resumed.embed())


def test_trainer_needs_batch_size_and_stops_on_nan(tiny):
    config = cfg(batch_size=64, cluster_aug=False)
    model = HetCRF(tiny, config)
    with pytest.raises(ConfigError, match="batch_size"):
        MiniBatchTrainer(model, cfg(), tiny)
    with torch.no_grad():
        model.encoder.proj.weight.fill_(float("nan"))
    with pytest.raises(TrainingError, match="step 0"):
        MiniBatchTrainer(model, config, tiny, progress=False, steps_per_epoch=1).fit()


def test_fanout_config_is_validated_and_round_trips(tmp_path):
    for bad in ([], [0], [2, -2], 2, ["2"]):
        with pytest.raises(ConfigError, match="fanout"):
            cfg(fanout=bad)
    config = cfg(batch_size=64, fanout=[5, -1])
    config.save(tmp_path / "c.yaml")
    assert HetCRFConfig.load(tmp_path / "c.yaml").fanout == [5, -1]


def test_trainer_rebaselines_early_stopping_after_a_refresh(tiny):
    for every, expected in ((1, True), (5, False)):
        config = cfg(batch_size=64, cluster_every=every)
        trainer = MiniBatchTrainer(HetCRF(tiny, config), config, tiny, progress=False,
                                   steps_per_epoch=1)
        trainer._early_stop(0, trainer._one_epoch(0)["loss"])  # first refresh, first best
        trainer._one_epoch(1)  # refreshes again only when every == 1
        assert trainer._rebaseline is expected
