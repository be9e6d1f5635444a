"""How subgraph mini-batch HetCRF scales: seconds per epoch and peak memory, 10k to 1M nodes.

Each size is a synthetic HIN (:func:`~hetcrf_lite.synthetic.make_synthetic_hin`: two
meta-paths, P-A-P and P-S-P, about 20-25 meta-path edges per node each; bag-of-words features
500 wide held sparse, ``sparse_storage=True``), trained in its own fresh subprocess with the
synthetic shipped config and :class:`~hetcrf_lite.minibatch.MiniBatchTrainer`: every step takes
``batch_size`` seed nodes, draws ``fanout`` meta-path neighbours per seed and meta-path, and runs
the model's whole training step (feature and edge reconstruction, both contrastive views, the
second stage, InfoNCE on ``batch_size`` anchors) on the induced subgraph.

**An epoch is a pass over every node as a seed: ``ceil(N / batch_size)`` steps**, plus the
cluster refresh when due (exact layer-wise inference over the full graph, then K-means; at epoch
0 always). By default one such epoch is run and timed at every size; with ``--steps K`` each
epoch stops after ``K`` steps and the epoch time is *projected* as the refresh plus
``ceil(N / batch_size)`` times the measured mean step (the table marks which).

Peak memory is the growth of the peak RSS over the generated graph (``VmHWM`` after
``clear_refs``) and the absolute process peak; the generator's own peak is reported apart. The
script fits the slope of log-memory and log-time against log-nodes (1 = linear) and draws
``figures/scaling.png``. Every size also records whether full-batch training would be refused
(:func:`~hetcrf_lite.memory.check_full_batch_fits`) and its message. ``--inference``
measures, after training, the peak of the exact layer-wise inference against the model's own
full-graph pass (``HetCRF.contrastive_embedding``, no gradient). ``--fanout-sweep`` trains the
synthetic default graph to convergence with several fan-outs and full batch, and reports
Macro-F1, subgraph sizes and step memory (``benchmarks/out/scaling_fanout.json``).

    .venv/bin/python benchmarks/scaling.py --threads 1
    .venv/bin/python benchmarks/scaling.py --sizes 10000 100000 --inference --threads 1
    .venv/bin/python benchmarks/scaling.py --fanout-sweep --threads 1

Target (the issue "Speed and scale"): 1M target nodes train within 12 GB and at most 10 minutes
per epoch on 2 cores.
"""
from __future__ import annotations

import argparse
import json
import math
import os
import subprocess
import sys
import threading
import time
import warnings
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "out"
sys.path.insert(0, str(Path(__file__).resolve().parent))
from encoder_speed import _memory_baseline, _peak_mb, _status_mb, machine  # noqa: E402

TARGET_MB = 12 * 1024
TARGET_EPOCH_S = 600.0


# ------------------------------------------------------------------------------------------
# Worker (fresh subprocess per size)
# ------------------------------------------------------------------------------------------
def _config(args: argparse.Namespace, epochs: int):
    from hetcrf_lite.config import default_config

    # gradient_balance_summary is off, as in any large run; positives are the anchor itself
    # plus cluster extras unless --positives is given (meta-path positives of 1M nodes are a
    # 2-3 GB sparse product, built before training).
    return default_config("synthetic", batch_size=args.batch_size, fanout=args.fanout,
                          device="cpu", epochs=epochs, patience=10**9, grad_balance_every=0,
                          use_feat_recon=args.feat_recon, metapath_positives=args.positives > 0,
                          pos_num=args.positives if args.positives > 0 else None)


class _MemoryCap:
    """Abort the worker when its RSS passes ``cap_mb``, printing a result line first: a graph
    too large for the cap ends as a measured "exceeded at phase X", not as an OOM kill of
    whatever else runs on the machine."""

    def __init__(self, cap_mb: float, record: dict) -> None:
        self.cap_mb, self.record, self.phase = cap_mb, record, "start"
        threading.Thread(target=self._watch, daemon=True).start()

    def _watch(self) -> None:
        t0 = time.perf_counter()
        while True:
            rss = _status_mb("VmRSS")
            if rss > self.cap_mb:
                self.record["error"] = (f"memory cap {self.cap_mb:.0f} MB exceeded (RSS "
                                        f"{rss:.0f} MB) during {self.phase}, "
                                        f"{time.perf_counter() - t0:.0f} s into the run")
                self.record["aborted_phase"] = self.phase
                print(json.dumps(self.record), flush=True)
                os._exit(3)
            time.sleep(0.05)


def _inference_peaks(model, res: dict, cap: _MemoryCap) -> None:
    """Peak RSS growth of the exact layer-wise inference, then of the full-graph pass."""
    from hetcrf_lite.minibatch import layerwise_embeddings

    for name, run in (("layerwise", lambda: layerwise_embeddings(model)[1]),
                      ("full_graph", model.contrastive_embedding)):
        cap.phase = f"{name} inference"
        base, method = _memory_baseline()
        t = time.perf_counter()
        out = run()
        res[f"inference_{name}_s"] = time.perf_counter() - t
        res[f"inference_{name}_peak_mb"] = _peak_mb(method) - base
        del out


def worker(args: argparse.Namespace) -> dict:
    from hetcrf_lite.memory import check_full_batch_fits
    from hetcrf_lite.errors import ConfigError
    from hetcrf_lite.minibatch import MiniBatchTrainer
    from hetcrf_lite.model import HetCRF
    from hetcrf_lite.synthetic import make_synthetic_hin
    from hetcrf_lite.utils import seed_everything

    n = args.num_nodes
    res: dict = {"num_nodes": n, "threads": torch.get_num_threads(),
                 "memory_cap_mb": args.memory_cap_mb}
    cap = _MemoryCap(args.memory_cap_mb, res)
    cap.phase = "graph generation"
    t = time.perf_counter()
    ds = make_synthetic_hin(num_nodes=n, build_positives=False, sparse_storage=True, seed=0)
    res["generate_s"] = time.perf_counter() - t
    res["generate_peak_rss_mb"] = _status_mb("VmHWM")
    config = _config(args, args.epochs)
    steps = math.ceil(n / config.batch_size)
    res.update(edges={m: int(e.shape[1]) for m, e in ds.metapath_adj.items()},
               mean_degree={m: int(e.shape[1]) / n for m, e in ds.metapath_adj.items()},
               feature_nnz=int(ds.x._nnz()), num_features=ds.num_features,
               batch_size=config.batch_size, fanout=config.fanout, feat_recon=args.feat_recon,
               steps_per_full_epoch=steps, config=config.to_dict())
    try:
        check_full_batch_fits(ds, config.replace(batch_size=None))
        res["full_batch_check"] = "would fit"
    except ConfigError as err:
        res["full_batch_check"] = str(err)
    base, method = _memory_baseline()
    res.update(baseline_rss_mb=base, memory_method=method)
    cap.phase = "model construction"
    t = time.perf_counter()
    seed_everything(config.seed)
    model = HetCRF(ds, config)
    res["build_s"] = time.perf_counter() - t
    cap.phase = "training"
    trainer = MiniBatchTrainer(model, config, ds, progress=False, steps_per_epoch=args.steps)
    t = time.perf_counter()
    history = trainer.fit()
    res["fit_wall_s"] = time.perf_counter() - t
    peak = _peak_mb(method)
    refresh = {r["epoch"]: r["seconds"] for r in model.refresh_log()}
    epochs = []
    for e in history["epochs"]:
        # the epoch's refresh also runs the layer-wise inference, not timed by the augmenter
        steps_s = e["seconds"] - e.get("refresh_s", 0.0)
        epochs.append({"seconds": e["seconds"], "cpu_seconds": e.get("cpu_seconds"),
                       "steps": e["steps"],
                       "refresh_s": e.get("refresh_s", 0.0),
                       "kmeans_s": refresh.get(e["epoch"], 0.0),
                       "step_s": steps_s / e["steps"], "subgraph_nodes_mean": e[
                           "subgraph_nodes_mean"], "subgraph_nodes_max": e["subgraph_nodes_max"],
                       "parts": e["parts"], "loss": e["loss"]})
    res.update(epochs=epochs, peak_mb=peak - base, peak_rss_mb=peak)
    last = epochs[-1]
    res["step_s"] = float(np.mean([e["step_s"] for e in epochs]))
    res["epoch_measured"] = last["steps"] == steps
    # a full epoch as measured, or projected from the mean step (refresh of epoch 0 included)
    res["epoch_s"] = (epochs[0]["seconds"] if res["epoch_measured"]
                      else epochs[0]["refresh_s"] + steps * res["step_s"])
    res["subgraph_nodes_mean"] = float(np.mean([e["subgraph_nodes_mean"] for e in epochs]))
    if res["epoch_measured"]:  # CPU time of the epoch: about its wall time on a quiet machine
        res["epoch_cpu_s"] = epochs[0]["cpu_seconds"]
    if args.inference:
        _inference_peaks(model, res, cap)
    return res


# ------------------------------------------------------------------------------------------
# Fan-out sweep: accuracy against subgraph size on the synthetic default graph
# ------------------------------------------------------------------------------------------
def sweep_worker(args: argparse.Namespace) -> dict:
    """One fan-out (or full batch when ``--sweep-fanout full``) on the synthetic default graph:
    train to the shipped config's stopping rule, evaluate, and measure one step's peak."""
    from hetcrf_lite.config import default_config
    from hetcrf_lite.eval import evaluate_embeddings
    from hetcrf_lite.minibatch import SubgraphSampler, embed_layerwise, fit_minibatch
    from hetcrf_lite.synthetic import make_synthetic_hin
    from hetcrf_lite.train import fit

    ds = make_synthetic_hin(num_nodes=args.sweep_nodes, seed=0)
    full = args.sweep_fanout == "full"
    fanout = None if full else [int(k) for k in args.sweep_fanout.split(",")]
    config = default_config("synthetic", device="cpu", grad_balance_every=0, seed=args.seed,
                            **({} if full else {"batch_size": args.batch_size, "fanout": fanout}))
    res: dict = {"fanout": args.sweep_fanout, "seed": args.seed, "num_nodes": ds.num_nodes,
                 "batch_size": None if full else args.batch_size}
    base, method = _memory_baseline()
    t = time.perf_counter()
    model, history = (fit(ds, config, progress=False) if full
                      else fit_minibatch(ds, config, progress=False))
    res["train_s"] = time.perf_counter() - t
    res["train_peak_mb"] = _peak_mb(method) - base
    res["epochs"] = len(history["epochs"])
    res["steps"] = sum(e.get("steps", 1) for e in history["epochs"])
    emb = (model.embed() if full else embed_layerwise(model)).cpu().numpy()
    results = evaluate_embeddings(emb, ds, runs=args.sweep_runs).to_dict()
    res["results"] = results
    if not full:
        sampler = SubgraphSampler(ds, args.batch_size, fanout, seed=0)
        g = torch.Generator().manual_seed(0)
        sizes, edges = [], []
        for seeds in sampler.epoch_seeds(0):
            sub = sampler.subgraph(sampler.sample_nodes(seeds, g))
            sizes.append(sub.num_nodes)
            edges.append(sum(int(e.shape[1]) for e in sub.metapath_adj.values()))
        res["subgraph_nodes_mean"] = float(np.mean(sizes))
        res["subgraph_edges_mean"] = float(np.mean(edges))
    return res


def _macro_f1(res: dict) -> list[float]:
    """Macro-F1 means at the label rates, from :meth:`Results.to_dict`."""
    rates = res["results"]["classification"]
    return [rates[r]["summary"]["macro_f1"]["mean"] for r in sorted(rates, key=int)]


def _over_seeds(runs: list[dict]) -> dict:
    """Mean and std over training seeds of one fan-out's runs."""
    f1 = np.array([_macro_f1(r) for r in runs])  # [seeds, rates]
    nmi = np.array([r["results"]["clustering"]["summary"]["nmi"]["mean"] for r in runs])
    first = runs[0]
    return {"fanout": first["fanout"], "seeds": [r["seed"] for r in runs],
            "macro_f1_mean": f1.mean(0).tolist(), "macro_f1_std": f1.std(0).tolist(),
            "nmi_mean": float(nmi.mean()), "nmi_std": float(nmi.std()),
            "epochs": float(np.mean([r["epochs"] for r in runs])),
            "steps": float(np.mean([r["steps"] for r in runs])),
            "subgraph_nodes_mean": first.get("subgraph_nodes_mean", first["num_nodes"]),
            "subgraph_edges_mean": first.get("subgraph_edges_mean"),
            "train_s": float(np.mean([r["train_s"] for r in runs])),
            "train_peak_mb": float(np.max([r["train_peak_mb"] for r in runs]))}


def fanout_sweep(args: argparse.Namespace) -> int:
    report = {"benchmark": "scaling fan-out sweep", "date": time.strftime("%Y-%m-%d %H:%M:%S"),
              "command": " ".join([Path(sys.executable).name, *sys.argv]), "machine": machine(),
              "threads": args.threads, "num_nodes": args.sweep_nodes,
              "batch_size": args.sweep_batch_size, "results": []}
    for fan in args.sweep_fanouts:
        for seed in args.sweep_seeds:
            print(f"[fanout {fan}, seed {seed}] ...", flush=True)
            argv = ["--sweep-worker", "--sweep-fanout", fan, "--seed", str(seed),
                    "--sweep-nodes", str(args.sweep_nodes), "--sweep-runs", str(args.sweep_runs),
                    "--batch-size", str(args.sweep_batch_size)]
            res = run_worker(argv, args.threads, args.timeout)
            res.setdefault("fanout", fan)
            res.setdefault("seed", seed)
            report["results"].append(res)
    done = [r for r in report["results"] if "error" not in r]
    report["summary"] = [_over_seeds([r for r in done if r["fanout"] == fan])
                         for fan in args.sweep_fanouts if any(r["fanout"] == fan for r in done)]
    print(f"\nsynthetic default ({args.sweep_nodes} nodes), "
          f"seeds per step {args.sweep_batch_size}, "
          f"shipped config to its stopping rule, {args.sweep_runs} evaluation runs")
    print(f"(mean +- std over training seeds {args.sweep_seeds})")
    print(f"{'fanout':>8} {'epochs':>6} {'steps':>6} {'|S| mean':>9} {'edges':>8} {'train s':>8} "
          f"{'peak MB':>8}  {'Macro-F1 20 / 40 / 60':<36} NMI")
    for r in report["results"]:
        if "error" in r:
            print(f"{r['fanout']:>8} seed {r['seed']} failed: {r['error']}")
    for r in report["summary"]:
        f1 = " / ".join(f"{m:.1f}+-{s:.1f}" for m, s in zip(r["macro_f1_mean"],
                                                            r["macro_f1_std"]))
        edges = r["subgraph_edges_mean"]
        print(f"{r['fanout']:>8} {r['epochs']:>6.0f} {r['steps']:>6.0f} "
              f"{r['subgraph_nodes_mean']:>9.0f} {edges if edges is not None else 0:>8.0f} "
              f"{r['train_s']:>8.1f} {r['train_peak_mb']:>8.0f}  {f1:<36} "
              f"{r['nmi_mean']:.1f}+-{r['nmi_std']:.1f}")
    path = OUT / "scaling_fanout.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2))
    print(f"wrote {path}")
    return 0


# ------------------------------------------------------------------------------------------
# Driver
# ------------------------------------------------------------------------------------------
def run_worker(argv: list[str], threads: int | None, timeout: float) -> dict:
    env = dict(os.environ)
    cmd = [sys.executable, str(Path(__file__).resolve()), *argv]
    if threads is not None:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
        cmd += ["--threads", str(threads)]
    t = time.perf_counter()
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    lines = proc.stdout.strip().splitlines()
    try:  # a worker stopped by its memory cap still prints its result line
        res = json.loads(lines[-1])
    except (IndexError, json.JSONDecodeError):
        return {"error": (proc.stderr or proc.stdout).strip().splitlines()[-3:]}
    res["process_wall_s"] = time.perf_counter() - t
    if str(res.get("aborted_phase", "")).startswith("full_graph inference"):
        # training finished; only the full-graph comparison pass ran out of memory
        res["inference_full_graph_error"] = res.pop("error")
    return res


def slope(xs: list[float], ys: list[float]) -> float | None:
    """Least-squares slope of log(y) against log(x); None with fewer than two points."""
    pts = [(math.log(x), math.log(y)) for x, y in zip(xs, ys) if x > 0 and y > 0]
    if len(pts) < 2:
        return None
    return float(np.polyfit(*zip(*pts), 1)[0])


def _fmt_slope(v: float | None) -> str:
    return "n/a" if v is None else f"{v:.2f}"


def plot(report: dict, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ok = [r for r in report["results"] if "error" not in r]
    n = [r["num_nodes"] for r in ok]
    fig, (ax_m, ax_t) = plt.subplots(1, 2, figsize=(10, 4))
    ax_m.loglog(n, [r["peak_mb"] for r in ok], "o-", label="training peak (growth)")
    ax_m.loglog(n, [r["peak_rss_mb"] for r in ok], "s--", label="process peak (absolute)")
    gen = [r for r in report["results"] if "generate_peak_rss_mb" in r]  # capped runs too
    ax_m.loglog([r["num_nodes"] for r in gen], [r["generate_peak_rss_mb"] for r in gen], "^:",
                label="graph generation peak")
    capped = [r for r in report["results"] if "aborted_phase" in r]
    if capped:
        ax_m.loglog([r["num_nodes"] for r in capped], [r["memory_cap_mb"] for r in capped], "rX",
                    ms=10, label=f"stopped at the cap ({capped[0]['aborted_phase']})")
    ax_m.axhline(TARGET_MB, color="grey", lw=0.8, ls="-.", label="target 12 GB")
    ax_m.set(xlabel="target nodes", ylabel="MB",
             title=f"memory (slope growth {_fmt_slope(report['slope_memory'])}, "
                   f"absolute {_fmt_slope(report['slope_memory_abs'])})")
    measured = [r for r in ok if r["epoch_measured"]]
    projected = [r for r in ok if not r["epoch_measured"]]
    ax_t.loglog(n, [r["epoch_s"] for r in ok], "-", color="C0", lw=0.8)
    if measured:
        ax_t.loglog([r["num_nodes"] for r in measured], [r["epoch_s"] for r in measured], "o",
                    color="C0", label="epoch = ceil(N/B) steps, wall (measured)")
    if projected:
        ax_t.loglog([r["num_nodes"] for r in projected], [r["epoch_s"] for r in projected], "o",
                    mfc="none", color="C0", label="epoch (projected from the mean step)")
    cpu = [r for r in ok if r.get("epoch_cpu_s") is not None]
    if cpu:
        ax_t.loglog([r["num_nodes"] for r in cpu], [r["epoch_cpu_s"] for r in cpu], "^-",
                    color="C2", label="epoch CPU time (its wall time on a quiet machine)")
    ax_t.loglog(n, [r["step_s"] for r in ok], "s--", color="C1", label="one step (wall)")
    ax_t.axhline(TARGET_EPOCH_S, color="grey", lw=0.8, ls="-.", label="target 10 min")
    ax_t.set(xlabel="target nodes", ylabel="seconds",
             title=f"time per epoch (slope wall {_fmt_slope(report['slope_time'])}, CPU "
                   f"{_fmt_slope(report.get('slope_time_cpu'))})")
    for ax in (ax_m, ax_t):
        ax.legend(fontsize=8)
        ax.grid(True, which="both", alpha=0.3)
    fig.suptitle(f"subgraph mini-batch HetCRF, {report['batch_size']} seeds per step, fan-out "
                 f"{report['fanout']}, {report['threads_label']} thread(s), "
                 f"{report['date'][:10]}", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def print_table(report: dict) -> None:
    print(f"\nsubgraph mini-batch HetCRF, {report['batch_size']} seeds per step, fan-out "
          f"{report['fanout']}, threads {report['threads_label']}; epoch = ceil(N/B) steps + "
          "cluster refresh; memory = peak RSS growth over the generated graph / absolute")
    print(f"{'nodes':>8} {'edges':>10} {'gen s':>6} {'steps':>6} {'|S|':>6} {'s/step':>7} "
          f"{'s/epoch':>9} {'cpu s':>7} {'refresh s':>9} {'peak MB':>8} {'abs MB':>7} "
          f"{'gen MB':>7}")
    for r in report["results"]:
        if "error" in r:
            print(f"{r.get('num_nodes', '?'):>8} failed: {r['error']}")
            continue
        ep = f"{r['epoch_s']:.1f}{'m' if r['epoch_measured'] else 'p'}"
        cpu = f"{r['epoch_cpu_s']:.1f}" if r.get("epoch_cpu_s") is not None else "-"
        print(f"{r['num_nodes']:>8} {sum(r['edges'].values()):>10} {r['generate_s']:>6.1f} "
              f"{r['steps_per_full_epoch']:>6} {r['subgraph_nodes_mean']:>6.0f} "
              f"{r['step_s']:>7.3f} {ep:>9} {cpu:>7} {r['epochs'][0]['refresh_s']:>9.1f} "
              f"{r['peak_mb']:>8.0f} {r['peak_rss_mb']:>7.0f} {r['generate_peak_rss_mb']:>7.0f}")
    print("(s/epoch: m = measured over every step, p = projected: refresh + steps x s/step; "
          "cpu s: the measured epoch's CPU time, its wall time on a quiet machine)")
    print(f"slope of log(memory) vs log(nodes): growth {_fmt_slope(report['slope_memory'])}, "
          f"absolute {_fmt_slope(report['slope_memory_abs'])}; of log(s/epoch): wall "
          f"{_fmt_slope(report['slope_time'])}, CPU {_fmt_slope(report.get('slope_time_cpu'))}")
    for r in report["results"]:
        if "inference_layerwise_peak_mb" in r:
            full = (f"{r['inference_full_graph_peak_mb']:.0f} MB in "
                    f"{r['inference_full_graph_s']:.1f} s"
                    if "inference_full_graph_peak_mb" in r
                    else r.get("inference_full_graph_error", "not run"))
            print(f"inference at {r['num_nodes']}: layer-wise "
                  f"{r['inference_layerwise_peak_mb']:.0f} MB in "
                  f"{r['inference_layerwise_s']:.1f} s; full graph {full}")
        if "full_batch_check" in r:
            print(f"full batch at {r['num_nodes']}: {r['full_batch_check'][:160]}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    p.add_argument("--batch-size", type=int, default=2048, help="seeds per step")
    p.add_argument("--fanout", type=int, nargs="+", default=None,
                   help="neighbours drawn per seed, meta-path and hop (default: the config's)")
    p.add_argument("--epochs", type=int, default=1, help="epochs per size")
    p.add_argument("--steps", type=int, default=None,
                   help="cut each epoch after this many steps; the epoch time is then projected")
    p.add_argument("--positives", type=int, default=0,
                   help="meta-path positives per anchor (0: the anchor only, plus cluster "
                        "extras)")
    p.add_argument("--no-feat-recon", dest="feat_recon", action="store_false",
                   help="turn feature reconstruction off at every size")
    p.add_argument("--inference", action="store_true",
                   help="after training, compare the peak of layer-wise and full-graph inference")
    p.add_argument("--memory-cap-mb", type=float, default=TARGET_MB,
                   help="stop a size whose RSS passes this (default: the 12 GB target)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--timeout", type=float, default=3600.0, help="seconds per subprocess")
    p.add_argument("--json", type=Path, default=OUT / "scaling.json")
    p.add_argument("--figure", type=Path, default=ROOT / "figures" / "scaling.png")
    p.add_argument("--from-json", type=Path,
                   help="print the table and draw the figure of an earlier run's JSON; no run")
    p.add_argument("--fanout-sweep", action="store_true",
                   help="accuracy against fan-out on the synthetic default graph instead")
    p.add_argument("--sweep-fanouts", nargs="+",
                   default=["full", "1", "2", "5", "2,2"],
                   help="fan-outs of the sweep ('full' = full batch, '2,2' = two hops)")
    p.add_argument("--sweep-nodes", type=int, default=1500)
    p.add_argument("--sweep-batch-size", type=int, default=128, help="seeds per step")
    p.add_argument("--sweep-runs", type=int, default=20, help="evaluation runs per label rate")
    p.add_argument("--sweep-seeds", type=int, nargs="+", default=[0, 1, 2],
                   help="training seeds per fan-out")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--sweep-worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--sweep-fanout", help=argparse.SUPPRESS)
    p.add_argument("--seed", type=int, default=0, help=argparse.SUPPRESS)
    p.add_argument("--num-nodes", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.fanout is None:
        from hetcrf_lite.config import HetCRFConfig

        args.fanout = HetCRFConfig().fanout
    if args.worker or args.sweep_worker:
        warnings.simplefilter("ignore", UserWarning)
        print(json.dumps(worker(args) if args.worker else sweep_worker(args)))
        return 0
    if args.fanout_sweep:
        return fanout_sweep(args)

    if args.from_json:
        report = json.loads(args.from_json.read_text())
        print_table(report)
        plot(report, args.figure)
        print(f"wrote {args.figure}")
        return 0
    report = {"benchmark": "scaling", "date": time.strftime("%Y-%m-%d %H:%M:%S"),
              "command": " ".join([Path(sys.executable).name, *sys.argv]),
              "machine": machine(), "threads": args.threads,
              "threads_label": (str(args.threads) if args.threads is not None
                                else f"torch default ({torch.get_num_threads()})"),
              "batch_size": args.batch_size, "fanout": args.fanout, "results": []}
    for n in args.sizes:
        print(f"[{n} nodes] ...", flush=True)
        worker_args = ["--worker", "--num-nodes", str(n), "--batch-size", str(args.batch_size),
                       "--epochs", str(args.epochs), "--positives", str(args.positives),
                       "--fanout", *map(str, args.fanout),
                       "--memory-cap-mb", str(args.memory_cap_mb)]
        if args.steps is not None:
            worker_args += ["--steps", str(args.steps)]
        if not args.feat_recon:
            worker_args.append("--no-feat-recon")
        if args.inference:
            worker_args.append("--inference")
        res = run_worker(worker_args, args.threads, args.timeout)
        res.setdefault("num_nodes", n)
        report["results"].append(res)
        print(json.dumps({k: res.get(k) for k in ("epoch_s", "step_s", "peak_mb", "peak_rss_mb",
                                                  "error")}), flush=True)
    ok = [r for r in report["results"] if "error" not in r]
    report["slope_memory"] = slope([r["num_nodes"] for r in ok], [r["peak_mb"] for r in ok])
    report["slope_memory_abs"] = slope([r["num_nodes"] for r in ok],
                                       [r["peak_rss_mb"] for r in ok])
    report["slope_time"] = slope([r["num_nodes"] for r in ok], [r["epoch_s"] for r in ok])
    cpu = [r for r in ok if r.get("epoch_cpu_s") is not None]
    report["slope_time_cpu"] = slope([r["num_nodes"] for r in cpu], [r["epoch_cpu_s"] for r in cpu])
    report["load_average_at_end"] = list(os.getloadavg())
    print_table(report)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2))
    print(f"wrote {args.json}")
    if len(ok) >= 2:
        plot(report, args.figure)
        print(f"wrote {args.figure}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
