"""Tests of hetcrf_lite.encoder against PyG's GATConv / GCNConv on tiny random graphs."""
import pytest
import torch
from torch_geometric.nn import GATConv, GCNConv

from hetcrf_lite.encoder import (
    EncoderOutput,
    HANEncoder,
    MetaPathGATConv,
    MetaPathGCNEncoder,
    SemanticAttention,
    build_encoder,
)
from graph_helpers import sym_graph
from hetcrf_lite.errors import ConfigError, DataError, MetaPathError

N, F_IN = 50, 12


@pytest.fixture(autouse=True, scope="module")
def one_thread():
    """Tiny graphs: one thread. On a shared, loaded 2-core machine every OpenMP region of a tiny op
    otherwise waits for a descheduled second thread (measured 100x slower)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture
def x() -> torch.Tensor:
    return torch.randn(N, F_IN, generator=torch.Generator().manual_seed(0))


@pytest.fixture
def graphs() -> dict[str, torch.Tensor]:
    return {"pap": sym_graph(N, 120, seed=1), "psp": sym_graph(N, 300, seed=2)}


def pyg_twin(conv: MetaPathGATConv) -> GATConv:
    """GATConv with the same weights as ``conv``."""
    ref = GATConv(conv.in_channels, conv.head_dim, conv.heads, concat=conv.concat,
                  negative_slope=conv.negative_slope, add_self_loops=False,
                  bias=conv.bias is not None)
    ref.lin.weight.data.copy_(conv.lin.weight)
    ref.att_src.data.copy_(conv.att_src)
    ref.att_dst.data.copy_(conv.att_dst)
    if conv.bias is not None:
        conv.bias.data.normal_()  # zero at init: make the comparison see it
        ref.bias.data.copy_(conv.bias)
    return ref


def assert_same_as_pyg(conv, ref, x, edge_index, atol=1e-5):
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    out, alpha = conv(xa, edge_index, return_attention_weights=True)
    out_ref, (_, alpha_ref) = ref(xb, edge_index, return_attention_weights=True)
    torch.testing.assert_close(out, out_ref, atol=atol, rtol=1e-4)
    torch.testing.assert_close(alpha, alpha_ref, atol=atol, rtol=1e-4)
    grad = torch.randn(out.shape, generator=torch.Generator().manual_seed(5), dtype=out.dtype)
    (out * grad).sum().backward()
    (out_ref * grad).sum().backward()
    torch.testing.assert_close(xa.grad, xb.grad, atol=atol, rtol=1e-4)
    torch.testing.assert_close(conv.lin.weight.grad, ref.lin.weight.grad, atol=atol, rtol=1e-4)
    torch.testing.assert_close(conv.att_src.grad, ref.att_src.grad, atol=atol, rtol=1e-4)
    torch.testing.assert_close(conv.att_dst.grad, ref.att_dst.grad, atol=atol, rtol=1e-4)
    if conv.bias is not None:
        torch.testing.assert_close(conv.bias.grad, ref.bias.grad, atol=atol, rtol=1e-4)
    return alpha


@pytest.mark.parametrize("backend", ["reference", "fused"])
@pytest.mark.parametrize("heads,out_channels,concat,bias,chunk_size",
                         [(4, 32, True, True, 32768), (1, 8, True, False, 32768),
                          (3, 5, False, True, 32768), (4, 32, True, True, 7)])
def test_gat_conv_matches_pyg_forward_and_gradients(x, graphs, heads, out_channels, concat, bias,
                                                   chunk_size, backend):
    """chunk_size=7 cuts the edges into many blocks (the fused loops' block boundaries)."""
    torch.manual_seed(0)
    conv = MetaPathGATConv(F_IN, out_channels, heads, concat=concat, bias=bias,
                           chunk_size=chunk_size, backend=backend)
    alpha = assert_same_as_pyg(conv, pyg_twin(conv), x, graphs["psp"])
    assert alpha.shape == (graphs["psp"].size(1), heads)


@pytest.mark.parametrize("backend", ["reference", "fused"])
def test_gat_conv_unsorted_nonsymmetric_graph_with_duplicates(x, backend):
    """Any edge_index: unsorted, directed, repeated edges; attention comes back in input order."""
    g = torch.Generator().manual_seed(3)
    ei = torch.randint(0, N, (2, 400), generator=g)
    ei = torch.cat([ei, ei[:, :20]], dim=1)  # duplicates
    torch.manual_seed(1)
    conv = MetaPathGATConv(F_IN, 12, heads=3, chunk_size=11, backend=backend)
    assert_same_as_pyg(conv, pyg_twin(conv), x, ei)


def test_attention_sums_to_one_per_destination(x, graphs):
    conv = MetaPathGATConv(F_IN, 16, heads=4)
    ei = graphs["pap"]
    _, alpha = conv(x, ei, return_attention_weights=True)
    sums = torch.zeros(N, 4).index_add_(0, ei[1], alpha)
    has_edges = torch.bincount(ei[1], minlength=N) > 0
    torch.testing.assert_close(sums[has_edges], torch.ones(int(has_edges.sum()), 4))
    assert (alpha >= 0).all()


def test_isolated_node_gets_bias_and_finite_gradient(x):
    ei = sym_graph(N, 100, seed=4, self_loops=False)
    ei = ei[:, (ei[0] != 7) & (ei[1] != 7)]  # node 7: no edges at all
    conv = MetaPathGATConv(F_IN, 16, heads=2)
    conv.bias.data.normal_()
    xr = x.clone().requires_grad_()
    out = conv(xr, ei)
    torch.testing.assert_close(out[7], conv.bias.detach())
    out.square().sum().backward()
    assert torch.isfinite(out).all() and torch.isfinite(xr.grad).all()
    assert torch.isfinite(conv.att_src.grad).all()


def test_empty_graph_gives_bias(x):
    conv = MetaPathGATConv(F_IN, 8, heads=2)
    out = conv(x, torch.empty(2, 0, dtype=torch.long))
    torch.testing.assert_close(out, conv.bias.detach().expand(N, -1))


def test_wide_logit_spread_uses_exact_shift_and_still_matches(x, graphs):
    """Logits spread over hundreds: the per-destination maximum path, still equal to GATConv.

    In float64: at this scale float32 gradients of GATConv itself are off by 1e-2 (conditioning).
    """
    conv = MetaPathGATConv(F_IN, 8, heads=2, chunk_size=13)
    with torch.no_grad():
        conv.att_src.mul_(300.0)
        s_src = (conv.lin(x).view(N, 2, 4) * conv.att_src).sum(-1)
    assert float((s_src.amax(0) - s_src.amin(0)).max()) > 60.0  # beyond the one-shift regime
    ref = pyg_twin(conv)
    assert_same_as_pyg(conv.double(), ref.double(), x.double(), graphs["psp"], atol=1e-9)


@pytest.mark.parametrize("symmetric", [True, False])
def test_gradcheck_with_attention_dropout(symmetric):
    """Exact gradients of the hand-written backward, dropout mask fixed by reseeding."""
    n = 20
    ei = sym_graph(n, 40, seed=5) if symmetric else torch.randint(
        0, n, (2, 70), generator=torch.Generator().manual_seed(6))
    conv = MetaPathGATConv(5, 6, heads=2, dropout=0.4, chunk_size=9).double().train()
    xd = torch.randn(n, 5, dtype=torch.float64, requires_grad=True)

    def f(inp, att_src, att_dst):
        torch.manual_seed(11)
        params = {"att_src": att_src, "att_dst": att_dst}
        return torch.func.functional_call(conv, params, (inp, ei))

    att = (conv.att_src.detach().clone().requires_grad_(),
           conv.att_dst.detach().clone().requires_grad_())
    assert torch.autograd.gradcheck(f, (xd, *att), fast_mode=True)


def test_attention_dropout_is_unbiased_and_off_in_eval(x):
    ei = sym_graph(N, 150, seed=7)
    conv = MetaPathGATConv(F_IN, 8, heads=2, dropout=0.5)
    conv.eval()
    ref = conv(x, ei).detach()
    conv.dropout = 0.0
    torch.testing.assert_close(conv(x, ei), ref)  # eval ignores dropout
    conv.dropout = 0.5
    conv.train()
    torch.manual_seed(0)
    one = conv(x, ei)
    assert not torch.allclose(one, ref)
    mean = torch.stack([conv(x, ei).detach() for _ in range(400)]).mean(0)
    assert float((mean - ref).abs().max() / ref.abs().max()) < 0.1


def test_plan_cache_follows_in_place_edits(x, graphs):
    conv = MetaPathGATConv(F_IN, 8, heads=2)
    ei = graphs["psp"].clone()
    conv(x, ei)  # caches the plan of ei
    ei[0, :] = ei[0].flip(0).clone()  # same tensor, new content
    torch.testing.assert_close(conv(x, ei), conv(x, ei.clone()))


def test_semantic_attention_formula():
    torch.manual_seed(0)
    sem = SemanticAttention(6, 10)
    zs = [torch.randn(30, 6) for _ in range(3)]
    h, beta = sem(zs)
    w = torch.stack([(torch.tanh(z @ sem.lin.weight.T + sem.lin.bias) @ sem.q.view(-1)).mean()
                     for z in zs])
    torch.testing.assert_close(beta, torch.softmax(w, 0))
    torch.testing.assert_close(beta.sum(), torch.tensor(1.0))
    torch.testing.assert_close(h, sum(b * z for b, z in zip(beta, zs)))


def test_han_encoder_equals_pyg_composition(x, graphs):
    """h = semantic attention over ELU(GATConv(P x)) per meta-path."""
    torch.manual_seed(0)
    enc = HANEncoder(F_IN, 16, ["psp", "pap"], heads=4)
    h0 = enc.proj(x)
    zs = [torch.nn.functional.elu(pyg_twin(enc.convs[0][m])(h0, graphs[m])) for m in ["psp", "pap"]]
    out = enc(x, graphs)
    h_ref, beta_ref = enc.semantic[0](zs)
    torch.testing.assert_close(out.h, h_ref, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(out.semantic_attention, beta_ref)
    assert list(out.z) == ["psp", "pap"]  # ordered like the constructor's meta-paths
    torch.testing.assert_close(out.z["pap"], zs[1], atol=1e-5, rtol=1e-4)


def test_sparse_identity_features_equal_dense(graphs):
    torch.manual_seed(0)
    enc = HANEncoder(N, 16, ["pap", "psp"], heads=2)
    dense = torch.eye(N)
    sparse = dense.to_sparse()
    out_d = enc(dense, graphs)
    out_d.h.sum().backward()
    grad_d = enc.proj.weight.grad.clone()
    enc.zero_grad()
    out_s = enc(sparse, graphs)
    out_s.h.sum().backward()
    torch.testing.assert_close(out_s.h, out_d.h)
    torch.testing.assert_close(enc.proj.weight.grad, grad_d)


def test_sparse_feature_dropout_keeps_sparsity(graphs):
    torch.manual_seed(0)
    enc = HANEncoder(N, 16, ["pap", "psp"], heads=2, feat_drop=0.5).train()
    out = enc(torch.eye(N).to_sparse(), graphs)
    assert out.h.shape == (N, 16) and torch.isfinite(out.h).all()


def test_seeded_runs_are_identical(x, graphs):
    def run():
        torch.manual_seed(42)
        enc = HANEncoder(F_IN, 16, ["pap", "psp"], heads=4, feat_drop=0.3, attn_drop=0.5).train()
        return enc(x, graphs).h

    torch.testing.assert_close(run(), run(), atol=0, rtol=0)


def test_gcn_encoder_matches_gcnconv(x, graphs):
    graphs = dict(graphs)
    graphs["pap"] = torch.randint(0, N, (2, 200), generator=torch.Generator().manual_seed(8))
    torch.manual_seed(0)
    enc = MetaPathGCNEncoder(F_IN, 16, ["pap", "psp"])
    enc.biases[0].data.normal_()
    xa, xb = x.clone().requires_grad_(), x.clone().requires_grad_()
    out = enc(xa, graphs)
    h0 = enc.proj(xb)
    zs = {}
    for k, m in enumerate(["pap", "psp"]):
        ref = GCNConv(16, 16, add_self_loops=False)
        ref.lin.weight.data.copy_(enc.lins[0][m].weight)
        ref.bias.data.copy_(enc.biases[0][k])
        zs[m] = torch.nn.functional.elu(ref(h0, graphs[m]))
    h_ref = (zs["pap"] + zs["psp"]) / 2
    torch.testing.assert_close(out.h, h_ref, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(out.z["psp"], zs["psp"], atol=1e-5, rtol=1e-4)
    out.h.square().sum().backward()
    h_ref.square().sum().backward()
    torch.testing.assert_close(xa.grad, xb.grad, atol=1e-5, rtol=1e-4)
    assert out.node_attention is None and out.semantic_attention is None


@pytest.mark.parametrize("kind", ["han", "gcn"])
def test_bad_keys_raise_metapath_error(x, graphs, kind):
    enc = build_encoder(kind, F_IN, 16, ["pap", "psp"])
    with pytest.raises(MetaPathError, match="missing"):
        enc(x, {"pap": graphs["pap"]})
    with pytest.raises(MetaPathError, match="unknown"):
        enc(x, {**graphs, "pcp": graphs["pap"]})
    with pytest.raises(MetaPathError):
        build_encoder(kind, F_IN, 16, ["pap", "pap"])


@pytest.mark.parametrize("kind", ["han", "gcn"])
def test_output_fields_and_shapes(x, graphs, kind):
    enc = build_encoder(kind, F_IN, 16, ["pap", "psp"], num_layers=2)
    out = enc(x, {"psp": graphs["psp"], "pap": graphs["pap"]}, return_attention_weights=True)
    assert isinstance(out, EncoderOutput)
    assert out.h.shape == (N, 16)
    assert list(out.z) == ["pap", "psp"] and all(z.shape == (N, 16) for z in out.z.values())
    if kind == "han":
        assert out.semantic_attention.shape == (2,)
        assert {m: a.shape for m, a in out.node_attention.items()} == {
            m: (graphs[m].size(1), 1) for m in ["pap", "psp"]}  # 1 head by default
        assert enc(x, graphs).node_attention is None  # only when asked for
    out.h.sum().backward()
    assert enc.proj.weight.grad is not None and enc.proj.weight.grad.abs().sum() > 0


def test_encoder_accepts_graphs_with_dropped_edges(x, graphs):
    enc = HANEncoder(F_IN, 16, ["pap", "psp"], heads=2)
    keep = torch.rand(graphs["psp"].size(1), generator=torch.Generator().manual_seed(1)) < 0.5
    dropped = {"pap": graphs["pap"], "psp": graphs["psp"][:, keep]}
    out = enc(x, dropped, return_attention_weights=True)
    assert out.node_attention["psp"].shape == (int(keep.sum()), 2)
    assert torch.isfinite(out.h).all()


def test_config_errors():
    with pytest.raises(ConfigError, match="divisible"):
        HANEncoder(F_IN, 10, ["pap"], heads=4)
    with pytest.raises(ConfigError, match="divisible"):
        MetaPathGATConv(F_IN, 10, heads=4)
    with pytest.raises(ConfigError, match="kind"):
        build_encoder("gin", F_IN, 16, ["pap"])
    with pytest.raises(ConfigError, match="gcn"):
        build_encoder("gcn", F_IN, 16, ["pap"], bogus=1)
    with pytest.raises(ConfigError, match="han"):
        build_encoder("han", F_IN, 16, ["pap"], bogus=1)
    # one config builds both: attention-only options are ignored by the GCN encoder
    gcn = build_encoder("gcn", F_IN, 16, ["pap"], heads=8, attn_drop=0.5, feat_drop=0.2)
    assert isinstance(gcn, MetaPathGCNEncoder) and gcn.feat_drop == 0.2
    with pytest.raises(ConfigError, match="activation"):
        HANEncoder(F_IN, 16, ["pap"], activation="swish")


def test_bad_edge_index_raises_data_error(x):
    conv = MetaPathGATConv(F_IN, 8, heads=2)
    with pytest.raises(DataError, match="outside"):
        conv(x, torch.tensor([[0, 1], [2, N]]))
    with pytest.raises(DataError, match=r"\[2, E\]"):
        conv(x, torch.zeros(3, 4, dtype=torch.long))


def test_repr():
    assert (repr(MetaPathGATConv(F_IN, 16, heads=4))
            == "MetaPathGATConv(12, 16, heads=4, backend='auto')")
    assert repr(MetaPathGCNEncoder(F_IN, 16, ["pap"])).startswith("MetaPathGCNEncoder(12, 16")


def test_heads_default_agrees_with_the_config():
    import inspect

    from hetcrf_lite.config import HetCRFConfig
    default = inspect.signature(HANEncoder).parameters["heads"].default
    assert default == HetCRFConfig().heads


def test_semantic_attention_inits_draw_what_they_say():
    torch.manual_seed(0)
    han = SemanticAttention(6, 10)
    assert han.lin.bias.abs().sum() == 0  # HAN's init: zero bias, Glorot W and q
    torch.manual_seed(0)
    heco = SemanticAttention(6, 400, init="normal")
    heco.reset_parameters()
    assert abs(float(heco.q.detach().std()) - 400 ** -0.5) < 0.2 * 400 ** -0.5
    with pytest.raises(ConfigError, match="init"):
        SemanticAttention(6, 10, init="uniform")


def test_semantic_attention_orders_agree():
    """The three summation orders (HAN's, HeCo's stacked, HeCo's per entry) give one value."""
    torch.manual_seed(0)
    zs = [torch.randn(30, 6, dtype=torch.float64) for _ in range(3)]
    han = SemanticAttention(6, 5).double()
    heco = SemanticAttention(6, 5, init="normal").double()
    heco.load_state_dict(han.state_dict())
    w = torch.stack([(torch.tanh(han.lin(z)) @ han.q[0]).mean() for z in zs])
    expected = torch.softmax(w, 0)
    for beta in (han.weights(zs), heco.weights(zs), heco.weights(torch.stack(zs))):
        torch.testing.assert_close(beta, expected, rtol=1e-12, atol=1e-12)


@pytest.mark.parametrize("backend", ["reference", "fused"])
def test_no_attention_is_the_neighbour_mean(x, graphs, backend):
    """``attention=False``: W times the in-neighbour mean plus the bias, as PyG's
    ``SimpleConv(aggr="mean")`` on the projected features computes it; no attention vectors."""
    from torch_geometric.nn import SimpleConv

    torch.manual_seed(0)
    conv = MetaPathGATConv(F_IN, 8, heads=2, backend=backend, attention=False)
    conv.bias.data.normal_()
    assert conv.att_src is None and conv.att_dst is None
    assert {n for n, _ in conv.named_parameters()} == {"lin.weight", "bias"}
    ei = graphs["pap"]
    expected = SimpleConv(aggr="mean")(x @ conv.lin.weight.T, ei) + conv.bias
    out, alpha = conv(x, ei, return_attention_weights=True)
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-4)
    deg = torch.bincount(ei[1], minlength=N).float()
    torch.testing.assert_close(alpha, (1.0 / deg[ei[1]]).unsqueeze(1).expand(-1, 2))


def test_node_attention_mean_changes_the_encoder_and_only_its_gats(x, graphs):
    torch.manual_seed(0)
    gat = HANEncoder(F_IN, 8, list(graphs))
    torch.manual_seed(0)
    mean = HANEncoder(F_IN, 8, list(graphs), node_attention="mean")
    assert not any("att_" in n for n, _ in mean.named_parameters())
    assert any("att_" in n for n, _ in gat.named_parameters())
    gat.eval(), mean.eval()
    assert not torch.allclose(gat(x, graphs).h, mean(x, graphs).h)
    with pytest.raises(ConfigError, match="node_attention='sum'"):
        HANEncoder(F_IN, 8, list(graphs), node_attention="sum")
    assert build_encoder("gcn", F_IN, 8, list(graphs), node_attention="mean")  # ignored there
