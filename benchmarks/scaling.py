"""How mini-batch HetCRF scales: seconds per epoch and peak memory on 10k, 100k and 1M nodes.

Each size is a synthetic HIN (:func:`~hetcrf_lite.synthetic.make_synthetic_hin`: two
meta-paths, P-A-P and P-S-P, about 20-25 meta-path edges per node each; bag-of-words features
500 wide held sparse, ``sparse_storage=True``), trained in its own fresh subprocess with the
synthetic shipped config in mini-batch mode: ``batch_size`` anchors per step (in-batch
negatives), edge reconstruction on sampled rows above ``edge_dense_threshold`` nodes, feature
reconstruction decoding masked rows only, message passing on the full graph.

What "an epoch" is: the trainer's epoch is **one optimisation step** (one anchor batch, every
encoder pass over the whole graph). A pass over every anchor would be ``ceil(N / B)`` such steps;
``--full-pass`` runs them where it takes minutes (it is not run at 1M: 245 steps of a full-graph
step) and the table gives ``ceil(N / B)`` times the measured step for every size.

Peak memory is the growth of the peak RSS over the generated graph (``VmHWM`` after
``clear_refs``) and the absolute process peak; the generator's own peak is reported apart. The
script fits the slope of log-memory and log-time against log-nodes (1 = linear) and draws
``figures/scaling.png``. Before training, every size also checks that full-batch training would
be refused (:func:`~hetcrf_lite.distributed.check_full_batch_fits`) and records the message.

    .venv/bin/python benchmarks/scaling.py --threads 2
    .venv/bin/python benchmarks/scaling.py --sizes 10000 100000 --full-pass --threads 1

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
def _config(args: argparse.Namespace, feat_recon: bool):
    from hetcrf_lite.config import default_config

    # gradient_balance_summary builds [512, N] matrices (~20 KB per node): off, as in any large
    # run; positives are the anchor itself plus cluster extras unless --positives is given.
    return default_config("synthetic", batch_size=args.batch_size, device="cpu",
                          epochs=args.warmup + args.epochs, patience=10**9,
                          grad_balance_every=0, use_feat_recon=feat_recon,
                          metapath_positives=args.positives > 0,
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


def _component_peaks(model) -> dict:
    """Peak RSS growth of one forward + backward of each channel alone, and of a whole step."""
    x, graphs, enc = model.x, model.edge_index_dict, model.encoder
    parts = {"encoder pass": lambda: enc(x, graphs).h.sum(),
             "edge reconstruction": lambda: model.edge_recon(enc, x, graphs,
                                                             generator=model.generator)[0],
             "contrastive (incl. encoder pass)": lambda: model.contrastive_loss(enc(x, graphs)),
             "whole step": lambda: model.training_step(1)[0]}
    if model.feat_recon is not None:
        parts["feature reconstruction"] = lambda: model.feat_recon(
            enc, x, graphs, 0.5, generator=model.generator)[0]
    out = {}
    for name, loss_fn in parts.items():
        model.zero_grad(set_to_none=True)
        base, method = _memory_baseline()
        loss_fn().backward()
        out[name] = _peak_mb(method) - base
    model.zero_grad(set_to_none=True)
    return out


def worker(args: argparse.Namespace) -> dict:
    from hetcrf_lite.distributed import check_full_batch_fits
    from hetcrf_lite.errors import ConfigError
    from hetcrf_lite.model import HetCRF
    from hetcrf_lite.synthetic import make_synthetic_hin
    from hetcrf_lite.train import Trainer, seed_everything

    n = args.num_nodes
    res: dict = {"num_nodes": n, "threads": torch.get_num_threads(),
                 "memory_cap_mb": args.memory_cap_mb}
    cap = _MemoryCap(args.memory_cap_mb, res)
    cap.phase = "graph generation"
    t = time.perf_counter()
    ds = make_synthetic_hin(num_nodes=n, build_positives=False, sparse_storage=True, seed=0)
    res["generate_s"] = time.perf_counter() - t
    res["generate_peak_rss_mb"] = _status_mb("VmHWM")
    feat_width = ds.num_features
    # FeatureReconstruction densifies sparse features for masking up to 2**26 entries and
    # raises beyond: at 1M x 500 the channel cannot run in the current model.
    feat_recon = args.feat_recon and n * feat_width <= 2**26
    config = _config(args, feat_recon)
    res.update(edges={m: int(e.shape[1]) for m, e in ds.metapath_adj.items()},
               mean_degree={m: int(e.shape[1]) / n for m, e in ds.metapath_adj.items()},
               feature_nnz=int(ds.x._nnz()), num_features=feat_width,
               batch_size=config.batch_size, feat_recon=feat_recon, config=config.to_dict())
    if args.feat_recon and not feat_recon:
        res["feat_recon_note"] = (f"off: {n} x {feat_width} sparse features exceed "
                                  "FeatureReconstruction's densify_limit (2**26 entries)")
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
    start = model.on_epoch_start

    def on_epoch_start(epoch: int) -> bool:  # names the phase for the memory cap
        cap.phase = f"epoch {epoch}"
        return start(epoch)

    model.on_epoch_start = on_epoch_start  # instance attribute: this model only
    trainer = Trainer(model, config, progress=False)
    history = trainer.fit()
    res["fit_wall_s"] = time.perf_counter() - t
    peak = _peak_mb(method)
    sec = [e["seconds"] for e in history["epochs"]]
    res.update(step_s=float(np.median(sec[args.warmup:])), step_all_s=[round(s, 3) for s in sec],
               parts=history["epochs"][-1]["parts"],
               kmeans_refresh_s=[r["seconds"] for r in model.refresh_log()],
               peak_mb=peak - base, peak_rss_mb=peak)
    steps = math.ceil(n / config.batch_size)
    res["steps_per_full_pass"] = steps
    if args.full_pass:
        # every anchor once: ceil(N / B) steps, timed end to end on the same trainer
        cap.phase = "full pass"
        trainer.start_epoch = len(sec)  # continue where the timed epochs stopped
        trainer.config = config.replace(epochs=len(sec) + steps)
        t = time.perf_counter()
        trainer.fit()
        res["full_pass_s"] = time.perf_counter() - t
    if args.components:
        cap.phase = "component peaks"
        res["component_peak_mb"] = _component_peaks(model)
    return res


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
    return res


def slope(xs: list[float], ys: list[float]) -> float | None:
    """Least-squares slope of log(y) against log(x); None with fewer than two points."""
    pts = [(math.log(x), math.log(y)) for x, y in zip(xs, ys) if x > 0 and y > 0]
    if len(pts) < 2:
        return None
    return float(np.polyfit(*zip(*pts), 1)[0])


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
             title=f"memory (slope {report['slope_memory']:.2f})")
    ax_t.loglog(n, [r["step_s"] for r in ok], "o-", label="epoch = one step")
    ax_t.loglog(n, [r["step_s"] * r["steps_per_full_pass"] for r in ok], "s--",
                label="ceil(N/B) steps (computed)")
    measured = [r for r in ok if "full_pass_s" in r]
    if measured:
        ax_t.loglog([r["num_nodes"] for r in measured], [r["full_pass_s"] for r in measured],
                    "kx", ms=9, label="ceil(N/B) steps (measured)")
    ax_t.axhline(TARGET_EPOCH_S, color="grey", lw=0.8, ls="-.", label="target 10 min")
    ax_t.set(xlabel="target nodes", ylabel="seconds",
             title=f"time per epoch (slope {report['slope_time']:.2f})")
    for ax in (ax_m, ax_t):
        ax.legend(fontsize=8)
        ax.grid(True, which="both", alpha=0.3)
    fig.suptitle(f"mini-batch HetCRF, batch {report['batch_size']}, "
                 f"{report['threads_label']} thread(s), {report['date'][:10]}", fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=120)


def print_table(report: dict) -> None:
    print(f"\nmini-batch HetCRF, batch {report['batch_size']}, threads {report['threads_label']}; "
          "epoch = one step (full-graph message passing, one anchor batch); memory = peak RSS "
          "growth over the generated graph / absolute")
    print(f"{'nodes':>8} {'edges':>10} {'gen s':>6} {'s/epoch':>8} {'steps/pass':>10} "
          f"{'s/pass':>9} {'peak MB':>8} {'abs MB':>7} {'gen MB':>7}  feat recon")
    for r in report["results"]:
        if "error" in r:
            print(f"{r.get('num_nodes', '?'):>8} failed: {r['error']}")
            continue
        meas = f"{r['full_pass_s']:.1f}m" if "full_pass_s" in r else \
            f"{r['step_s'] * r['steps_per_full_pass']:.1f}c"
        print(f"{r['num_nodes']:>8} {sum(r['edges'].values()):>10} {r['generate_s']:>6.1f} "
              f"{r['step_s']:>8.2f} {r['steps_per_full_pass']:>10} {meas:>9} "
              f"{r['peak_mb']:>8.0f} {r['peak_rss_mb']:>7.0f} "
              f"{r['generate_peak_rss_mb']:>7.0f}  {'on' if r['feat_recon'] else 'OFF'}")
    print("(s/pass: m = measured, c = computed as steps x s/epoch)")
    if report["slope_memory"] is not None:
        print(f"slope of log(memory growth) vs log(nodes): {report['slope_memory']:.2f}; "
              f"of log(s/epoch): {report['slope_time']:.2f}")
    for r in report["results"]:
        if "full_batch_check" in r:
            print(f"full batch at {r['num_nodes']}: {r['full_batch_check'][:160]}")
        if "feat_recon_note" in r:
            print(f"feature reconstruction at {r['num_nodes']}: {r['feat_recon_note']}")


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[10_000, 100_000, 1_000_000])
    p.add_argument("--batch-size", type=int, default=2048)
    p.add_argument("--epochs", type=int, default=3, help="timed epochs (steps) per size")
    p.add_argument("--warmup", type=int, default=1, help="untimed first epochs")
    p.add_argument("--positives", type=int, default=0,
                   help="meta-path positives per anchor (0: the anchor only, plus cluster "
                        "extras)")
    p.add_argument("--no-feat-recon", dest="feat_recon", action="store_false",
                   help="turn feature reconstruction off at every size (a consistent series)")
    p.add_argument("--full-pass", action="store_true",
                   help="also time ceil(N/B) steps, for sizes up to --full-pass-max")
    p.add_argument("--full-pass-max", type=int, default=10_000)
    p.add_argument("--components", action="store_true",
                   help="also measure each channel's peak memory alone (one forward+backward)")
    p.add_argument("--memory-cap-mb", type=float, default=TARGET_MB,
                   help="stop a size whose RSS passes this (default: the 12 GB target)")
    p.add_argument("--threads", type=int, default=None, help="torch threads (default: torch's)")
    p.add_argument("--timeout", type=float, default=3600.0, help="seconds per subprocess")
    p.add_argument("--json", type=Path, default=OUT / "scaling.json")
    p.add_argument("--figure", type=Path, default=ROOT / "figures" / "scaling.png")
    p.add_argument("--from-json", type=Path,
                   help="print the table and draw the figure of an earlier run's JSON; no run")
    p.add_argument("--worker", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--num-nodes", type=int, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    if args.worker:
        warnings.simplefilter("ignore", UserWarning)
        print(json.dumps(worker(args)))
        return 0

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
              "batch_size": args.batch_size, "results": []}
    for n in args.sizes:
        print(f"[{n} nodes] ...", flush=True)
        worker_args = ["--worker", "--num-nodes", str(n), "--batch-size", str(args.batch_size),
                       "--epochs", str(args.epochs), "--warmup", str(args.warmup),
                       "--positives", str(args.positives)]
        if not args.feat_recon:
            worker_args.append("--no-feat-recon")
        if args.full_pass and n <= args.full_pass_max:
            worker_args.append("--full-pass")
        if args.components:
            worker_args.append("--components")
        worker_args += ["--memory-cap-mb", str(args.memory_cap_mb)]
        res = run_worker(worker_args, args.threads, args.timeout)
        res.setdefault("num_nodes", n)
        report["results"].append(res)
        print(json.dumps({k: res.get(k) for k in ("step_s", "peak_mb", "peak_rss_mb", "error")}),
              flush=True)
    ok = [r for r in report["results"] if "error" not in r]
    report["slope_memory"] = slope([r["num_nodes"] for r in ok], [r["peak_mb"] for r in ok])
    report["slope_time"] = slope([r["num_nodes"] for r in ok], [r["step_s"] for r in ok])
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
