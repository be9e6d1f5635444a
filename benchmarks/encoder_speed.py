"""Speed and memory of the HAN encoder's two backends next to PyG's ``HANConv``, on ACM and DBLP;
the two InfoNCE paths; and torch's own backward of a sparse product against ours.

Encoder rows: ``reference`` (``MetaPathGATConv(backend="reference")``: PyG ``softmax`` and one
sparse product per head), ``fused`` (``backend="fused"``, :mod:`hetcrf_lite.gat_fused`) and PyG's
``HANConv``, at 1 head (the shipped configs) and 8 heads, hidden 64, the datasets' own features
and meta-path graphs (ACM: PAP, PSP; DBLP: APA, APCPA, APTPA). One forward + backward of
``output.sum()`` in training mode (dropout 0), the median of ``--repeats`` runs after one
warm-up, wall clock and CPU time of the process (the machine may be shared: CPU seconds at one
thread are the comparable number then). Each run is its own fresh subprocess, one at a time
(HANConv peaks at several GB); peak memory is the growth of the peak RSS over a baseline taken
after the data and the model are loaded (on CUDA: ``torch.cuda.max_memory_allocated``).
A check compares the two backends on ACM (outputs and gradients).

InfoNCE rows: the autograd reference against the fused path (``infonce(..., backend=...)``),
forward + backward, N = the dataset's target nodes, 64 channels.

``--spmm``: ``A @ X`` on ACM's normalised P-S-P operator (4.3 M edges, ``X`` ``[4019, 64]``):
the forward, torch's own backward, and :class:`~hetcrf_lite.sparse.SparseMM`'s.

    HETCRF_DATA=../shared/datasets/heco .venv/bin/python benchmarks/encoder_speed.py
    .venv/bin/python benchmarks/encoder_speed.py --datasets acm --skip-pyg --json /tmp/e.json

Threads default to 1: on a shared machine multi-threaded timings swing by 10x with the other
jobs' load; ``--threads`` changes it for every run. Without a GPU the CUDA rows print
"unmeasured".
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import time
import warnings
from pathlib import Path

import numpy as np
import scipy
import scipy.sparse as sp
import torch

ROOT = Path(__file__).resolve().parents[1]
OUT = ROOT / "benchmarks" / "out"
HIDDEN = 64
HEADS = (1, 8)
KINDS = ("reference", "fused", "pyg")
METAPATHS = {"acm": ["pap", "psp"], "dblp": ["apa", "apcpa", "aptpa"]}


# ------------------------------------------------------------------------------------------
# Data: load_dataset when available, else the same graphs built here from the edge lists.
# ------------------------------------------------------------------------------------------


def _edge_lists(name: str, root: Path) -> tuple[torch.Tensor, dict[str, torch.Tensor]]:
    """Fallback loader: target features and binarised meta-path graphs via scipy products."""

    def rel(fname, n0, n1):
        e = np.loadtxt(root / name / fname, dtype=np.int64)
        return sp.csr_matrix((np.ones(len(e), np.float32), (e[:, 0], e[:, 1])), shape=(n0, n1))

    def feats(fname):
        m = sp.load_npz(root / name / fname).astype(np.float32).tocsr()
        rows = np.asarray(m.sum(1)).ravel()
        rows[rows == 0] = 1.0
        return torch.from_numpy((sp.diags(1.0 / rows) @ m).toarray()).float()  # row-normalised

    if name == "acm":
        pa, ps = rel("pa.txt", 4019, 7167), rel("ps.txt", 4019, 60)
        mats = {"pap": pa @ pa.T, "psp": ps @ ps.T}
        x = feats("p_feat.npz")
    else:
        pa, pc = rel("pa.txt", 14328, 4057), rel("pc.txt", 14328, 20)
        pt = rel("pt.txt", 14328, 7723)
        apc, apt = pa.T @ pc, pa.T @ pt
        mats = {"apa": pa.T @ pa, "apcpa": apc @ apc.T, "aptpa": apt @ apt.T}
        x = feats("a_feat.npz")
    graphs = {}
    for m, a in mats.items():
        a = a.tocsr()
        a.sort_indices()  # rows = destinations: sorted by (dst, src), as data.py stores them
        coo = a.tocoo()
        graphs[m] = torch.from_numpy(np.stack([coo.col, coo.row]).astype(np.int64))
    return x, graphs


def load(name: str) -> tuple[torch.Tensor, dict[str, torch.Tensor], str]:
    root = Path(os.environ.get("HETCRF_DATA", ROOT.parent / "shared" / "datasets" / "heco"))
    try:
        from hetcrf_lite.data import load_dataset

        ds = load_dataset(name, root=root, download=False, positives="stored")
        graphs = {k.lower(): v for k, v in ds.metapath_adj.items()}
        x = ds.x.to_dense() if ds.x.is_sparse else ds.x
        return x.float(), graphs, "hetcrf_lite.data.load_dataset"
    except ImportError:
        x, graphs = _edge_lists(name, root)
        return x, graphs, "scipy products of the edge lists (load_dataset unavailable)"


# ------------------------------------------------------------------------------------------
# Workers (run in fresh subprocesses).
# ------------------------------------------------------------------------------------------


def _status_mb(field: str) -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) / 1024  # kB
    raise KeyError(field)


def _memory_baseline() -> tuple[float, str]:
    """Current RSS after returning freed heap to the OS, with the peak reset to it when Linux
    allows (``clear_refs`` 5); else the getrusage peak so far (loading transients then hide
    smaller peaks)."""
    try:
        import ctypes

        ctypes.CDLL("libc.so.6").malloc_trim(0)
        Path("/proc/self/clear_refs").write_text("5")
        return _status_mb("VmRSS"), "VmHWM after clear_refs, minus VmRSS at start"
    except (OSError, KeyError):
        return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, "ru_maxrss growth"


def _peak_mb(method: str) -> float:
    if method.startswith("VmHWM"):
        return _status_mb("VmHWM")
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux: KiB


def _sync() -> None:
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        torch.cuda.synchronize()  # CUDA runs asynchronously: time the work, not the launch


def _time_steps(step, repeats: int) -> dict:
    step()  # warm-up (builds caches, faults in memory)
    _sync()
    wall, cpu = [], []
    for _ in range(repeats):
        t, c = time.perf_counter(), time.process_time()
        step()
        _sync()
        wall.append(time.perf_counter() - t)
        cpu.append(time.process_time() - c)
    return {"wall_s": statistics.median(wall), "cpu_s": statistics.median(cpu),
            "wall_all_s": [round(v, 4) for v in wall]}


def _encoder_step(kind: str, heads: int, x: torch.Tensor, graphs: dict, dev: torch.device):
    torch.manual_seed(0)
    if kind == "pyg":
        from torch_geometric.nn import HANConv

        eid = {("n", m, "n"): ei for m, ei in graphs.items()}
        model = HANConv(x.size(1), HIDDEN, (["n"], list(eid)), heads=heads).to(dev).train()
        return model, lambda: model({"n": x}, eid)["n"]
    from hetcrf_lite.encoder import HANEncoder

    model = HANEncoder(x.size(1), HIDDEN, list(graphs), heads=heads, backend=kind).to(dev).train()
    return model, lambda: model(x, graphs).h


def _measure(step, repeats: int, dev: torch.device) -> dict:
    base, method = _memory_baseline()
    if dev.type == "cuda":
        torch.cuda.reset_peak_memory_stats(dev)
    res = _time_steps(step, repeats)
    peak = _peak_mb(method)
    res.update(peak_mb=peak - base, peak_rss_mb=peak, baseline_rss_mb=base, memory_method=method,
               device=str(dev))
    if dev.type == "cuda":  # device memory is what counts there: the peak the allocator held
        res["peak_mb"] = torch.cuda.max_memory_allocated(dev) / 2**20
        res["memory_method"] = "torch.cuda.max_memory_allocated"
        res["device_name"] = torch.cuda.get_device_name(dev)
    return res


def worker(kind: str, heads: int, cache: Path, repeats: int, device: str = "cpu") -> dict:
    warnings.simplefilter("ignore", UserWarning)
    blob = torch.load(cache)
    dev = torch.device(device)
    x, graphs = blob["x"].to(dev), {m: ei.to(dev) for m, ei in blob["graphs"].items()}
    if kind.startswith("infonce-"):
        from hetcrf_lite.contrastive import infonce

        z1, z2 = torch.randn(2, x.size(0), HIDDEN, device=dev).requires_grad_(True).unbind(0)
        pos = torch.stack([torch.arange(x.size(0)), torch.arange(x.size(0))]).to(dev)

        def step():
            infonce(z1, z2, pos, 0.8, backend=kind[len("infonce-"):]).backward()
        return _measure(step, repeats, dev)
    model, forward = _encoder_step(kind, heads, x, graphs, dev)

    def step():
        model.zero_grad(set_to_none=True)
        forward().sum().backward()
    return _measure(step, repeats, dev)


def check_worker(cache: Path) -> dict:
    """The fused backend against the reference on the real graphs: outputs and gradients."""
    warnings.simplefilter("ignore", UserWarning)
    from hetcrf_lite.encoder import HANEncoder

    blob = torch.load(cache)
    x, graphs = blob["x"], blob["graphs"]
    out = {}
    for kind in ("reference", "fused"):
        torch.manual_seed(0)
        enc = HANEncoder(x.size(1), HIDDEN, list(graphs), heads=1, backend=kind)
        h = enc(x, graphs).h
        h.square().sum().backward()
        out[kind] = (h.detach(), enc.proj.weight.grad)
    (h_ref, g_ref), (h_fused, g_fused) = out["reference"], out["fused"]
    return {"max_abs_diff_h": float((h_fused - h_ref).abs().max()),
            "max_rel_diff_grad": float((g_fused - g_ref).abs().max() / g_ref.abs().max()),
            "h_scale": float(h_ref.abs().max())}


def spmm_worker(cache: Path, repeats: int) -> dict:
    """``A @ X`` with A = ACM's normalised P-S-P: forward, torch's backward, SparseMM's backward."""
    warnings.simplefilter("ignore", UserWarning)
    from hetcrf_lite.sparse import gcn_operators, sparse_mm

    blob = torch.load(cache)
    n = blob["x"].size(0)
    a, a_t = gcn_operators(blob["graphs"]["psp"], n)
    x = torch.randn(n, HIDDEN, requires_grad=True)
    grad = torch.randn(n, HIDDEN)
    res = {"edges": int(a.values().numel())}
    res["forward"] = _time_steps(lambda: torch.sparse.mm(a, x.detach()), repeats)
    res["torch_backward"] = _time_steps(lambda: torch.sparse.mm(a, x).backward(grad), repeats)
    res["sparse_mm_backward"] = _time_steps(lambda: sparse_mm(a, x, a_t).backward(grad), repeats)
    for k in ("torch_backward", "sparse_mm_backward"):  # the backward alone: minus the forward
        res[k]["backward_cpu_s"] = res[k]["cpu_s"] - res["forward"]["cpu_s"]
    res["torch_over_ours_backward"] = (res["torch_backward"]["backward_cpu_s"]
                                       / res["sparse_mm_backward"]["backward_cpu_s"])
    return res


# ------------------------------------------------------------------------------------------
# Driver.
# ------------------------------------------------------------------------------------------


def run_worker(args_list: list[str], threads: int, timeout: float) -> dict:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    cmd = [sys.executable, str(Path(__file__).resolve()), *args_list, "--threads", str(threads)]
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"error": f"timed out after {timeout:.0f} s"}
    if proc.returncode != 0:
        return {"error": (proc.stderr or proc.stdout).strip().splitlines()[-1:]}
    return json.loads(proc.stdout.strip().splitlines()[-1])


def machine() -> dict:
    import torch_geometric

    info = Path("/proc/cpuinfo")
    lines = info.read_text().splitlines() if info.exists() else []
    cpu = next((ln.split(":", 1)[1].strip() for ln in lines if ln.startswith("model name")),
               platform.processor())
    mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30
    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gib": round(mem, 1),
            "python": platform.python_version(), "torch": torch.__version__,
            "torch_geometric": torch_geometric.__version__, "numpy": np.__version__,
            "scipy": scipy.__version__,
            "mkl": torch.backends.mkl.is_available(), "platform": platform.platform(),
            "load_average_at_start": list(os.getloadavg())}


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--datasets", nargs="+", default=["acm", "dblp"], choices=sorted(METAPATHS))
    p.add_argument("--heads", nargs="+", type=int, default=list(HEADS))
    p.add_argument("--repeats", type=int, default=5, help="timed runs of our encoders")
    p.add_argument("--pyg-repeats", type=int, default=3, help="timed runs of HANConv")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu", help="cpu or cuda (timed with synchronisation)")
    p.add_argument("--skip-pyg", action="store_true", help="do not run HANConv")
    p.add_argument("--skip-check", action="store_true", help="skip the backends' equality check")
    p.add_argument("--skip-infonce", action="store_true", help="skip the InfoNCE rows")
    p.add_argument("--spmm", action="store_true", help="also time the sparse product's backward")
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds per subprocess")
    p.add_argument("--json", type=Path, default=OUT / "encoder_speed.json")
    p.add_argument("--worker", help=argparse.SUPPRESS)
    p.add_argument("--cache", type=Path, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def _run_worker_here(args: argparse.Namespace) -> int:
    if args.worker == "check":
        res = check_worker(args.cache)
    elif args.worker == "spmm":
        res = spmm_worker(args.cache, args.repeats)
    else:
        res = worker(args.worker, args.heads[0], args.cache, args.repeats, args.device)
    print(json.dumps(res))
    return 0


def _dataset_rows(name: str, args: argparse.Namespace) -> dict:
    x, graphs, source = load(name)
    graphs = {m: graphs[m] for m in METAPATHS[name]}
    cache = OUT / f"encoder_speed_{name}.pt"
    torch.save({"x": x, "graphs": graphs}, cache)
    edges = {m: int(ei.size(1)) for m, ei in graphs.items()}
    res = {"source": source, "num_nodes": int(x.size(0)), "in_channels": int(x.size(1)),
           "edges": edges, "encoder": {}}
    common = ["--cache", str(cache), "--device", args.device]
    kinds = [k for k in KINDS if not (k == "pyg" and args.skip_pyg)]
    for heads in args.heads:
        for kind in kinds:
            print(f"[{name}] {kind}, {heads} head(s) ...", flush=True)
            repeats = args.pyg_repeats if kind == "pyg" else args.repeats
            res["encoder"][f"{kind}/{heads}"] = run_worker(
                ["--worker", kind, "--heads", str(heads), "--repeats", str(repeats), *common],
                args.threads, args.timeout)
    if not args.skip_infonce:
        res["infonce"] = {k: run_worker(["--worker", f"infonce-{k}", "--repeats",
                                         str(args.repeats), *common], args.threads, args.timeout)
                          for k in ("reference", "fused")}
    if not args.skip_check and name == "acm":
        res["check"] = run_worker(["--worker", "check", *common], args.threads, args.timeout)
    if args.spmm and name == "acm":
        res["spmm"] = run_worker(["--worker", "spmm", "--repeats", str(args.repeats), *common],
                                 args.threads, args.timeout)
    cache.unlink()
    return res


def main(argv: list[str] | None = None) -> int:
    args = _parse(argv)
    torch.set_num_threads(args.threads)
    if args.worker:
        return _run_worker_here(args)
    OUT.mkdir(parents=True, exist_ok=True)
    report = {"machine": machine(), "threads": args.threads, "hidden": HIDDEN,
              "heads": args.heads, "device": args.device, "results": {},
              "started": time.strftime("%Y-%m-%d %H:%M:%S %Z")}
    for name in args.datasets:
        report["results"][name] = _dataset_rows(name, args)
    report["load_average_at_end"] = list(os.getloadavg())
    print_table(report)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2))
    print(f"wrote {args.json}")
    return 0


def _fmt(d: dict, key: str, fmt: str) -> str:
    return format(d[key], fmt) if key in d else "-"


def print_table(report: dict) -> None:
    dev = report["device"]
    print(f"\nforward+backward, hidden {HIDDEN}, {report['threads']} thread(s), device {dev}; "
          "medians of wall clock and of process CPU time; memory is the peak growth (MB); "
          f"load average {report['machine']['load_average_at_start']} at start")
    print(f"{'dataset':8} {'heads':>5} {'backend':10} {'wall s':>8} {'CPU s':>8} {'peak MB':>8}")
    for name, r in report["results"].items():
        for key, row in r["encoder"].items():
            kind, heads = key.split("/")
            label = "HANConv" if kind == "pyg" else kind
            print(f"{name:8} {heads:>5} {label:10} {_fmt(row, 'wall_s', '8.3f'):>8} "
                  f"{_fmt(row, 'cpu_s', '8.3f'):>8} {_fmt(row, 'peak_mb', '8.0f'):>8}"
                  + (f"  failed: {row['error']}" if "error" in row else ""))
        for kind, row in r.get("infonce", {}).items():
            print(f"{name:8} {'':>5} {'InfoNCE ' + kind[:3]:10} {_fmt(row, 'wall_s', '8.3f'):>8} "
                  f"{_fmt(row, 'cpu_s', '8.3f'):>8} {_fmt(row, 'peak_mb', '8.0f'):>8}")
        if "check" in r:
            print(f"  fused vs reference on {name}: {r['check']}")
        if "spmm" in r:
            print(f"  sparse product backward, torch's / SparseMM's (CPU s): "
                  f"{r['spmm'].get('torch_over_ours_backward', r['spmm'])}")
    if dev == "cpu":
        print("cuda rows: unmeasured (no GPU on this machine)")


if __name__ == "__main__":
    sys.exit(main())
