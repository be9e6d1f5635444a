"""Subgraph mini-batches: HetCRF on graphs too large for one full-graph step.

A full-graph step keeps every encoder pass, both views, the second stage and the decoders of all
``N`` target nodes for backward (about 59 KB per node at hidden 64), so a million nodes need
40-60 GB however few contrastive anchors are drawn. Here each step trains on a small *induced
subgraph* instead:

1. **seeds**: an epoch visits every target node once as a seed, ``batch_size`` per step in a
   seeded random order (``ceil(N / batch_size)`` steps; with ``W`` data-parallel ranks,
   ``ceil(N / (W * batch_size))`` steps per rank);
2. **fan-out**: for every seed and every meta-path, ``fanout[0]`` meta-path neighbours drawn
   uniformly without replacement (the self-loop is never drawn: the seed is in already); a
   second entry ``fanout[1]`` samples again from those new nodes, and so on (PyG's
   ``num_neighbors``; ``-1`` takes every neighbour);
3. **positives**: the seeds' current positives (meta-path and cluster positives) join the node
   set, so a seed drawn as an InfoNCE anchor finds all of its positives there;
4. **induced sub-dataset** (:func:`induced_subgraph`): the target features of those nodes, the
   meta-path edges among them (``torch_geometric.utils.subgraph``, relabelled), the relations
   from them to their schema neighbours (authors, subjects, ...; neighbours relabelled), the
   positives inside the set;
5. the model's own ``training_step`` runs on it (``training_step(epoch, graph)`` with the
   tensors of :meth:`~hetcrf_lite.model.HetCRF.subgraph`):
   both reconstructions and both contrastive views over every node of the subgraph, InfoNCE on
   ``batch_size`` anchors that the model draws among them (seeds or not), with in-batch
   negatives and the positives inside the subgraph.

Step memory then depends on ``batch_size`` and the fan-out, not on ``N``; what grows with ``N``
is the graph itself, the CSR indices of the sampler (``ptr`` arrays; the column ids are views of
the graph's own tensors where it is already sorted) and, once per cluster refresh, the exact
full-graph embedding for K-means, computed layer by layer over chunks of destination nodes
under ``no_grad`` (:func:`layerwise_embeddings`).

Choices, measured with ``benchmarks/scaling.py`` on the synthetic graphs (2-core machine shared
with other jobs, load 5-9: memory figures are reliable, times are not):

* **One hop, node-induced (GraphSAINT-like), not two sampled hops.** The encoder is one HAN
  layer, so a seed's encoder output needs its meta-path neighbours; the second-stage GCN then
  needs the neighbours' encoder outputs, which a second sampled hop would make exact up to
  sampling. In the induced subgraph the sampled neighbours already see each other (the P-S-P
  neighbours of a seed share its subject, so they form a clique). Time is what decides: a step
  costs about 100 us per subgraph node (1.0 s for 10.2 k nodes, 5.4 s for 41 k, at 1 M nodes),
  so an epoch costs about ``N * (|S| / batch_size) * 100 us``. At 1 M nodes with 2048 seeds,
  ``|S| / batch_size`` is 3.0 with 1 neighbour per meta-path, 5.0 with 2, 10.8 with 5, 20.1
  with 10, 19.7 with two hops of 2 and 85 with two hops of 5: only one hop of 1 or 2 fits 10
  minutes per epoch. On the synthetic default
  graph (``--fanout-sweep``, three seeds) accuracy does not rise with the fan-out or with a
  second hop beyond the seed-to-seed spread; see docs/performance.md.
* **Sampling by hand.** PyG's ``NeighborLoader`` / ``NeighborSampler`` need ``pyg-lib`` or
  ``torch-sparse``, neither installed with torch 2.13 here; the draw
  (:meth:`~hetcrf_lite.sparse.RowIndex.sample`) is the schema view's vectorised random-key sort
  (:func:`~hetcrf_lite.sparse.sample_neighbors`) on the seeds' CSR rows,
  ``O(batch * degree)`` per step.
* **Rows, then** ``subgraph``. ``torch_geometric.utils.subgraph`` filters an edge list by a
  node mask: on the whole P-A-P graph of 1 M nodes (22 M edges) it takes 1.16 s per step; on
  the rows of the chosen nodes, gathered from a CSR index first, 0.08 s, same output.
* **Inference layer by layer, not one full-graph pass.** The model's own no-grad pass
  (``contrastive_embedding``) at 1 M nodes peaks 5.9 GB above the loaded graph (187 s) and
  leaves the second stage's CSR copies of every meta-path graph cached; the layer-wise pass,
  equal to it to float rounding, 1.4 GB (60 s). (Measured when the layer-wise pass had its own
  copy of the layers' math; it now calls their ``chunk_rows`` forward, the same steps through
  the reference ``gat_aggregate``, whose COO product sorts each chunk's edges: at 100 k nodes,
  one thread on the busy machine, 1.74 s and 115 MB of peak growth against 1.06 s and 72 MB
  for the old copy; 1 M nodes not measured again.)
"""
from __future__ import annotations

import math
import time
from typing import Any, Sequence

import numpy as np
import torch
from torch import Tensor, nn
from torch_geometric.data import HeteroData
from torch_geometric.utils import subgraph

from .config import HetCRFConfig
from .data import HINDataset, identity_features
from .errors import ConfigError, DataError
from .model import HetCRF, compose_embedding, eval_mode
from .sparse import RowIndex
from .trainer import Trainer
from .utils import seed_everything

__all__ = [
    "DEFAULT_CHUNK_SIZE",
    "SubgraphSampler",
    "induced_subgraph",
    "layerwise_embeddings",
    "embed_layerwise",
    "refresh_clusters",
    "MiniBatchTrainer",
    "fit_minibatch",
]

DEFAULT_CHUNK_SIZE = 65536  # destination nodes per chunk of layer-wise inference


# ------------------------------------------------------------------------------------------
# Induced sub-datasets
# ------------------------------------------------------------------------------------------
def _feature_rows(x: Tensor, rows: tuple[RowIndex, Tensor] | None, node_ids: Tensor) -> Tensor:
    """Rows ``node_ids`` of the target features: dense by ``index_select``; sparse through the
    CSR index and values ``rows`` (:func:`_sparse_rows`), since ``index_select`` on a sparse
    COO tensor takes time in all of its entries (300 k nodes: 0.12 s against 0.04 s)."""
    if rows is None:
        return x.index_select(0, node_ids)
    index, values = rows
    seg, pos = index.gather(node_ids)
    idx = torch.stack([seg, index.col[pos]])  # [2, nnz'] row-major: coalesced order
    return torch.sparse_coo_tensor(idx, values[index.edge_ids(pos)],
                                   (node_ids.numel(), x.shape[1]), is_coalesced=True,
                                   check_invariants=False)


def _sparse_rows(x: Tensor) -> tuple[RowIndex, Tensor] | None:
    """CSR index of a sparse feature matrix and its values in that index's order (``None``
    for dense features)."""
    if x.is_sparse:
        x = x.coalesce()  # no copy when already coalesced, as the loaders build features
        return RowIndex.build(x.indices(), x.shape[0], by=0), x.values()
    if x.layout == torch.sparse_csr:
        return RowIndex(x.crow_indices().long(), x.col_indices().long(), None), x.values()
    return None


class SubgraphSampler:
    r"""Seeds, fan-out and induced sub-datasets of one :class:`HINDataset`.

    Built once per dataset: a CSR index of every meta-path graph, of every target-to-neighbour
    relation, of sparse features and of the stored positives (``O(E)`` memory, a copy of the
    column ids). Then per step :meth:`sample_nodes` picks the node set and :meth:`subgraph`
    builds its :class:`HINDataset`, both in time proportional to the subgraph.

    .. math::
        S = B \cup \bigcup_{m} \mathrm{fan}_m(B, k_1) \cup \ldots \cup \mathrm{Pos}(B)

    with :math:`B` the seeds, :math:`\mathrm{fan}_m(V, k)` up to :math:`k` uniformly drawn
    meta-path-:math:`m` neighbours of each node of :math:`V` and :math:`\mathrm{Pos}(B)` the
    seeds' positives.

    Args:
        dataset (HINDataset): the full graph.
        batch_size (int): seeds per step, ``>= 1``.
        fanout (list[int], optional): neighbours drawn per node and meta-path at each hop
            (``-1``: all). (default: ``[10]``)
        seed (int, optional): seed of the epoch order, shared by all ranks. (default: ``0``)
        rank (int, optional): this process's rank. (default: ``0``)
        world_size (int, optional): number of data-parallel ranks. (default: ``1``)
    """

    def __init__(self, dataset: HINDataset, batch_size: int, fanout: Sequence[int] = (10,),
                 seed: int = 0, rank: int = 0, world_size: int = 1) -> None:
        if batch_size < 1:
            raise ConfigError(f"batch_size={batch_size} must be >= 1 (seeds per step)")
        if not 0 <= rank < world_size:
            raise ConfigError(f"rank={rank} must lie in [0, world_size={world_size})")
        self.fanout = [int(k) for k in fanout]
        for k in self.fanout:
            if k == 0 or k < -1:
                raise ConfigError(f"fanout {self.fanout}: every entry must be >= 1 or -1 (all)")
        self.dataset = dataset
        self.num_nodes = dataset.num_nodes
        self.batch_size, self.seed, self.rank, self.world_size = batch_size, seed, rank, world_size
        n = self.num_nodes
        self.metapath = {m: RowIndex.build(ei, n, by=1) for m, ei in dataset.metapath_adj.items()}
        self.relations = {t: RowIndex.build(dataset.neighbors(t), n, by=0)
                          for t in dataset.neighbor_types}
        self.x_rows = _sparse_rows(dataset.x)
        self.pos = None if dataset.pos is None else RowIndex.build(dataset.pos, n, by=0)

    # -- seeds --------------------------------------------------------------------------------
    def num_steps(self) -> int:
        """Steps per epoch on this rank: ``ceil(N / (world_size * batch_size))``."""
        return math.ceil(self.num_nodes / (self.world_size * self.batch_size))

    def epoch_seeds(self, epoch: int) -> list[Tensor]:
        """This rank's seed batches of ``epoch``: a random order of all nodes, the same on every
        rank (drawn from ``[seed, epoch]``), cut into steps of ``world_size * batch_size``; each
        rank takes its own ``batch_size`` of every step. With several ranks the order is padded
        with its own beginning so that every rank takes the same number of steps."""
        state = np.random.SeedSequence([self.seed, int(epoch)]).generate_state(1)[0]
        perm = torch.randperm(self.num_nodes, generator=torch.Generator().manual_seed(int(state)))
        if self.world_size == 1:
            return list(perm.split(self.batch_size))
        steps, width = self.num_steps(), self.world_size * self.batch_size
        reps = math.ceil(steps * width / self.num_nodes)
        order = perm.repeat(reps)[: steps * width].view(steps, self.world_size, self.batch_size)
        return list(order[:, self.rank])

    # -- node sets ----------------------------------------------------------------------------
    def sample_nodes(self, seeds: Tensor, generator: torch.Generator | None = None,
                     positives: RowIndex | None = None) -> Tensor:
        """The node set of one step: seeds, their fan-out over every meta-path and hop, and
        their positives (rows of ``positives``, a :class:`RowIndex` by anchor).

        Returns:
            ``[|S|]`` sorted, distinct full-graph ids.
        """
        parts, frontier = [seeds], seeds
        for k in self.fanout:
            drawn = torch.unique(torch.cat([idx.sample(frontier, k, generator)
                                            for idx in self.metapath.values()]))
            parts.append(drawn)
            frontier = drawn
        if positives is not None:
            parts.append(positives.col[positives.gather(seeds)[1]])
        return torch.unique(torch.cat(parts))

    def subgraph(self, node_ids: Tensor) -> HINDataset:
        """The induced sub-dataset of ``node_ids`` (see :func:`induced_subgraph`)."""
        return induced_subgraph(self.dataset, node_ids, sampler=self)


def induced_subgraph(dataset: HINDataset, node_ids: Tensor,
                     sampler: SubgraphSampler | None = None) -> HINDataset:
    r"""The sub-dataset induced by the target nodes ``node_ids``.

    Node ``k`` of the result is node ``node_ids[k]`` of ``dataset`` (also stored as
    ``data[target].n_id``, PyG's name for it). It holds:

    * the target features of those rows (dense, or sparse COO, never densified);
    * every meta-path edge with both ends in the set, relabelled, with its path count
      (``torch_geometric.utils.subgraph``), in the same (destination, source) order;
    * for each neighbour type :math:`t` of the target, the relation edges of the set's nodes,
      as ``(target, "to", t)`` and its reverse, the touched neighbours relabelled
      ``0..n_t - 1`` in increasing full-graph id (``data[t].n_id``) with identity features;
    * the stored positive pairs with both ends in the set; labels of the set; no splits.

    With ``node_ids = arange(N)`` every tensor the model reads equals the full dataset's.

    Args:
        dataset (HINDataset): the full graph.
        node_ids (torch.Tensor): ``[|S|]`` distinct target-node ids (sorted ids keep every
            index sorted as the library's conventions ask).
        sampler (SubgraphSampler, optional): reuses its CSR indices (per step, the cost is then
            proportional to the subgraph); ``None`` builds them, ``O(E)``. (default: ``None``)
    """
    sampler = sampler if sampler is not None else SubgraphSampler(dataset, 1, [1])
    node_ids = node_ids.to(torch.long)
    n, s, target = dataset.num_nodes, node_ids.numel(), dataset.target
    if s and (int(node_ids.min()) < 0 or int(node_ids.max()) >= n):
        raise DataError(f"node_ids must lie in [0, {n}); got ids from {int(node_ids.min())} to "
                        f"{int(node_ids.max())}")
    data = HeteroData()
    data[target].num_nodes = s
    data[target].n_id = node_ids
    data[target].x = _feature_rows(dataset.x, sampler.x_rows, node_ids)
    labels = dataset.labels[node_ids]
    data[target].y = labels
    for t, idx in sampler.relations.items():
        seg, pos = idx.gather(node_ids)
        n_id, local = torch.unique(idx.col[pos], return_inverse=True)  # touched neighbours
        data[t].num_nodes = n_id.numel()
        data[t].n_id = n_id
        data[t].x = identity_features(n_id.numel())
        data[target, "to", t].edge_index = torch.stack([seg, local])  # [2, E_t']
        data[t, "rev_to", target].edge_index = torch.stack([local, seg])
    adj, counts = {}, {}
    for m, idx in sampler.metapath.items():
        seg, pos = idx.gather(node_ids)  # rows = destinations in the set
        ei = torch.stack([idx.col[pos], node_ids[seg]])  # [2, E'] full-graph ids
        cnt = dataset.metapath_counts.get(m)
        cnt = None if cnt is None else cnt[idx.edge_ids(pos)]
        adj[m], cnt = subgraph(node_ids, ei, cnt, relabel_nodes=True, num_nodes=n)
        if cnt is not None:
            counts[m] = cnt
    pos = None
    if sampler.pos is not None:
        seg, at = sampler.pos.gather(node_ids)
        pos = subgraph(node_ids, torch.stack([node_ids[seg], sampler.pos.col[at]]),
                       relabel_nodes=True, num_nodes=n)[0]
    return HINDataset(name=f"{dataset.name}[sub]", data=data, target=target, labels=labels,
                      num_classes=dataset.num_classes, splits={},
                      metapaths=dict(dataset.metapaths), metapath_adj=adj,
                      metapath_counts=counts, pos=pos)


# ------------------------------------------------------------------------------------------
# Exact full-graph inference, layer by layer over chunks of destination nodes
# ------------------------------------------------------------------------------------------
@torch.no_grad()
def layerwise_embeddings(model: nn.Module, chunk_size: int = DEFAULT_CHUNK_SIZE
                         ) -> tuple[Tensor, Tensor | None]:
    r"""The encoder output :math:`\mathbf{H}` and the contrastive embedding (the fusion view
    after the second stage) of every node of the model's graph, in eval mode, computed layer by
    layer over chunks of ``chunk_size`` destination nodes.

    The layers' own chunked forward (``chunk_rows`` of the encoder, of
    :class:`~hetcrf_lite.encoder.MetaPathGATConv`, :class:`~hetcrf_lite.encoder.SemanticAttention`
    and :class:`~hetcrf_lite.contrastive.SecondStageGCN`): each meta-path's projections once, then
    the reference aggregation or the GCN rows chunk by chunk. The same values as
    ``model.encode().h`` and ``model.contrastive_embedding()`` (to float rounding), but the peak
    holds a few ``[N, hidden]`` tensors and one chunk's edges, instead of every per-edge buffer of
    the full-graph pass; of the graph only each meta-path's CSR plan stays cached
    (:func:`~hetcrf_lite.sparse.csr_plan`, 4 bytes per edge), not the second stage's operators.

    Args:
        model (HetCRF): the model (its full graph).
        chunk_size (int, optional): destination nodes per chunk. (default: ``65536``)

    Returns:
        ``(h [N, hidden], contrastive [N, hidden] or None)``; ``None`` without the contrastive
        channel.
    """
    with eval_mode(model):
        eid = model.edge_index_dict
        enc = model.encoder(model.x, eid, chunk_rows=chunk_size)
        stage = getattr(model, "second_stage", None)
        if stage is None:
            return enc.h, None
        if model.config.cl_fusion != "encoder":
            raise ConfigError("layerwise_embeddings follows the encoder's fusion; "
                              "cl_fusion: own is not supported here, use model.embed()")
        beta = enc.semantic_attention if model.config.second_stage_fusion == "beta" else None
        return enc.h, stage(enc.h, eid, beta, chunk_rows=chunk_size)


def embed_layerwise(model: nn.Module, mode: str | None = None,
                    chunk_size: int = DEFAULT_CHUNK_SIZE, norm: str | None = None) -> Tensor:
    """:meth:`HetCRF.embed <hetcrf_lite.model.HetCRF.embed>` through
    :func:`layerwise_embeddings`: ``concat`` [H, contrastive], ``encoder`` H or ``contrastive``
    (``mode=None`` takes the config's), normalised as ``norm`` says (``None``: the config's
    ``embed_norm``)."""
    h, contrast = layerwise_embeddings(model, chunk_size)
    return compose_embedding(h, contrast, mode or model.config.embed,
                             norm or model.config.embed_norm)


def refresh_clusters(model: nn.Module, epoch: int, chunk_size: int = DEFAULT_CHUNK_SIZE) -> Any:
    """The model's ``on_epoch_start(epoch)`` (cluster refresh every T epochs) on the layer-wise
    contrastive embedding instead of the full-graph pass: the same K-means input and logic, in
    bounded memory. Returns what ``on_epoch_start`` returns."""
    return model.on_epoch_start(epoch, lambda: layerwise_embeddings(model, chunk_size)[1])


# ------------------------------------------------------------------------------------------
# Training
# ------------------------------------------------------------------------------------------
class MiniBatchTrainer(Trainer):
    r""":class:`~hetcrf_lite.trainer.Trainer` whose epoch is one pass over every target node as a
    seed: ``ceil(N / (world_size * batch_size))`` Adam steps, each on an induced subgraph.

    Per epoch: the cluster positives are refreshed when due (:func:`refresh_clusters`, exact
    layer-wise inference; early stopping re-baselines after a refresh, as in the parent); then for
    every seed batch the node set is sampled (:meth:`SubgraphSampler.sample_nodes`: fan-out and the
    seeds' positives), its sub-dataset built, its tensors taken
    (:meth:`~hetcrf_lite.model.HetCRF.subgraph`) and one ``training_step(epoch, graph)`` taken on
    them. The epoch's loss and parts are the means over its steps; early stopping, checkpoints,
    resume and the history work as in the parent class. The epoch order is drawn from
    ``(config.seed, epoch)``; the fan-out draws come from the model's generator, which checkpoints
    carry, so a resumed run repeats the original.


    Args:
        model (torch.nn.Module): a :class:`~hetcrf_lite.model.HetCRF`, or a
            :class:`~hetcrf_lite.distributed.DistributedHetCRF` wrapping one.
        config (HetCRFConfig): as for :class:`Trainer`; ``batch_size`` (seeds per step) and
            ``fanout`` are read too.
        dataset (HINDataset): the full graph the model was built on.
        out_dir (str, optional): run folder. (default: ``None``)
        progress (bool, optional): tqdm bar over epochs. (default: ``True``)
        checkpoint_every (int, optional): epochs between checkpoints. (default: ``10``)
        rank (int, optional): data-parallel rank. (default: ``0``)
        world_size (int, optional): data-parallel ranks. (default: ``1``)
        chunk_size (int, optional): destination nodes per chunk of the layer-wise inference.
            (default: ``65536``)
        steps_per_epoch (int, optional): cut every epoch after this many steps (smoke tests,
            benchmarks); ``None`` is the full pass. (default: ``None``)
        on_epoch_end (callable, optional): as for :class:`Trainer`. (default: ``None``)
    """

    def __init__(self, model: nn.Module, config: HetCRFConfig, dataset: HINDataset,
                 out_dir: Any = None, progress: bool = True, checkpoint_every: int = 10,
                 rank: int = 0, world_size: int = 1, chunk_size: int = DEFAULT_CHUNK_SIZE,
                 steps_per_epoch: int | None = None, on_epoch_end: Any = None) -> None:
        if config.batch_size is None:
            raise ConfigError("MiniBatchTrainer needs batch_size (seeds per step); without it "
                              "use Trainer (full batch)")
        if steps_per_epoch is not None and steps_per_epoch < 1:
            raise ConfigError(f"steps_per_epoch={steps_per_epoch} must be >= 1 or None")
        super().__init__(model, config, out_dir=out_dir, progress=progress,
                         checkpoint_every=checkpoint_every, on_epoch_end=on_epoch_end)
        self.hetcrf = getattr(model, "hetcrf", model)
        self.sampler = SubgraphSampler(dataset, config.batch_size, config.fanout, config.seed,
                                       rank, world_size)
        self.chunk_size, self.steps_per_epoch = chunk_size, steps_per_epoch

    def _one_epoch(self, epoch: int) -> dict[str, Any]:
        start, cpu = time.perf_counter(), time.process_time()
        model, hetcrf = self.model, self.hetcrf
        if refresh_clusters(hetcrf, epoch, self.chunk_size) and self.best_epoch >= 0:
            self._rebaseline = True  # new positives: early stopping re-baselines (Trainer)
        refresh_s = time.perf_counter() - start
        model.train()
        pos = RowIndex.build(hetcrf.positives().cpu(), self.sampler.num_nodes, by=0)
        batches = self.sampler.epoch_seeds(epoch)[: self.steps_per_epoch]
        total, parts_sum, sizes = 0.0, {}, []
        for i, seeds in enumerate(batches):
            node_ids = self.sampler.sample_nodes(seeds, hetcrf.generator, pos)
            graph = hetcrf.subgraph(self.sampler.subgraph(node_ids), node_ids)
            loss, parts = self.optimizer_step(epoch, graph, step=i)
            total += float(loss.detach())
            for k, v in parts.items():
                parts_sum[k] = parts_sum.get(k, 0.0) + v
            sizes.append(node_ids.numel())
        if self.scheduler is not None:
            self.scheduler.step()
        steps = len(batches)
        record: dict[str, Any] = {
            "epoch": epoch, "loss": total / steps,
            "parts": {k: v / steps for k, v in parts_sum.items()},
            "lr": self.optimizer.param_groups[0]["lr"], "steps": steps, "refresh_s": refresh_s,
            "subgraph_nodes_mean": float(np.mean(sizes)), "subgraph_nodes_max": int(max(sizes))}
        every = self.config.grad_balance_every
        if every and epoch % every == 0 and hasattr(model, "gradient_balance_summary"):
            record["gradient_balance"] = model.gradient_balance_summary()  # the last step's views
        record["seconds"] = time.perf_counter() - start
        record["cpu_seconds"] = time.process_time() - cpu  # all threads; wall on a busy machine
        self.history["epochs"].append(record)
        return record


def fit_minibatch(dataset: HINDataset, config: HetCRFConfig, out_dir: Any = None,
                  progress: bool = True, resume: bool = False,
                  **trainer_kwargs: Any) -> tuple[nn.Module, dict[str, Any]]:
    """Seed, build a :class:`~hetcrf_lite.model.HetCRF` on ``dataset`` and train it on subgraph
    mini-batches (:class:`MiniBatchTrainer`); the mini-batch counterpart of
    :func:`hetcrf_lite.train.fit`. ``trainer_kwargs`` go to the trainer. Returns
    ``(model, history)``; the model holds its lowest-loss parameters."""
    seed_everything(config.seed)
    model = HetCRF(dataset, config)
    trainer = MiniBatchTrainer(model, config, dataset, out_dir=out_dir, progress=progress,
                               **trainer_kwargs)
    return model, trainer.fit(resume=resume)
