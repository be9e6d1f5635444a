"""Speed and memory of the HAN encoder next to PyG's ``HANConv``, on ACM and DBLP.

Same sizes for both: hidden 64 = 8 heads x 8 channels, the datasets' own features and meta-path
graphs (ACM: PAP, PSP; DBLP: APA, APCPA, APTPA). One forward + backward of ``output.sum()`` in
training mode (dropout 0, HANConv's default), timed as the median of ``--repeats`` runs after one
warm-up. Each encoder runs in its own fresh subprocess, one at a time (HANConv peaks at several GB);
peak memory is the growth of the peak RSS (``resource.getrusage``) over a baseline taken after
the data and the model are loaded. A third subprocess checks that the encoder equals a reference
built from PyG's ``GATConv`` on ACM (1e-5).

Also reported, to say what limits the encoder: the number of attention values (edges x heads) and
the time of the sparse products alone (two per head forward, two backward, ``C + 1`` wide), the
floor of the method.

    HETCRF_DATA=../shared/datasets/heco .venv/bin/python benchmarks/encoder_speed.py
    .venv/bin/python benchmarks/encoder_speed.py --datasets acm --skip-pyg --json /tmp/e.json

Threads default to 1 for both: on a shared machine multi-threaded timings of either encoder swing
by 10x with the other jobs' load; ``--threads`` changes it for both.
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
HIDDEN, HEADS = 64, 8
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


def _products_floor(x_rows: int, graphs: dict[str, torch.Tensor], repeats: int) -> float:
    """Seconds of the encoder's sparse products alone (its edge blocks, random weights): per head
    two forward (weights and their positive part) and two backward (transposed), C+1 wide."""
    from hetcrf_lite.encoder import _graph_plan

    dense = torch.randn(HEADS, x_rows, HIDDEN // HEADS + 1)
    plans = [_graph_plan(ei, x_rows) for ei in graphs.values()]
    blocks = [(crow, plan.col[e0:e1], n1 - n0, torch.rand(HEADS, e1 - e0))
              for plan in plans for (n0, n1, e0, e1), crow in zip(plan.blocks, plan.crows)]
    total = []
    for _ in range(repeats + 1):
        t = time.perf_counter()
        for _ in range(4):
            for crow, col, rows, vals in blocks:
                for h in range(HEADS):
                    a = torch.sparse_csr_tensor(crow, col, vals[h], (rows, x_rows),
                                                check_invariants=False)
                    torch.sparse.mm(a, dense[h])
        total.append(time.perf_counter() - t)
    return statistics.median(total[1:])


def worker(kind: str, cache: Path, repeats: int, device: str = "cpu") -> dict:
    warnings.simplefilter("ignore", UserWarning)
    blob = torch.load(cache)
    dev = torch.device(device)
    x, graphs = blob["x"].to(dev), {m: ei.to(dev) for m, ei in blob["graphs"].items()}
    torch.manual_seed(0)
    if kind == "ours":
        from hetcrf_lite.encoder import HANEncoder

        model = HANEncoder(x.size(1), HIDDEN, list(graphs), heads=HEADS).to(dev).train()

        def step():
            model.zero_grad(set_to_none=True)
            model(x, graphs).h.sum().backward()
    elif kind == "pyg":
        from torch_geometric.nn import HANConv

        eid = {("n", m, "n"): ei for m, ei in graphs.items()}
        model = HANConv(x.size(1), HIDDEN, (["n"], list(eid)), heads=HEADS).to(dev).train()

        def step():
            model.zero_grad(set_to_none=True)
            model({"n": x}, eid)["n"].sum().backward()
    else:
        raise ValueError(kind)
    base, method = _memory_baseline()
    res = _time_steps(step, repeats)
    peak = _peak_mb(method)
    res.update(peak_mb=peak - base, peak_rss_mb=peak, baseline_rss_mb=base, memory_method=method,
               device=str(dev))
    if dev.type == "cuda":  # device memory is what counts there: the peak the allocator held
        res["peak_mb"] = torch.cuda.max_memory_allocated(dev) / 2**20
        res["memory_method"] = "torch.cuda.max_memory_allocated"
        res["device_name"] = torch.cuda.get_device_name(dev)
    elif kind == "ours":
        res["products_floor_s"] = _products_floor(x.size(0), graphs, min(repeats, 3))
    return res


def check_worker(cache: Path) -> dict:
    """Our encoder vs the same function composed from PyG's GATConv (dense messages)."""
    warnings.simplefilter("ignore", UserWarning)
    from torch_geometric.nn import GATConv

    from hetcrf_lite.encoder import HANEncoder

    blob = torch.load(cache)
    x, graphs = blob["x"], blob["graphs"]
    torch.manual_seed(0)
    enc = HANEncoder(x.size(1), HIDDEN, list(graphs), heads=HEADS)
    refs = {}
    for m, conv in enc.convs[0].items():
        conv.bias.data.normal_(std=0.1)
        ref = GATConv(HIDDEN, HIDDEN // HEADS, HEADS, add_self_loops=False)
        for name in ("att_src", "att_dst", "bias"):
            getattr(ref, name).data.copy_(getattr(conv, name))
        ref.lin.weight.data.copy_(conv.lin.weight)
        refs[m] = ref
    out = enc(x, graphs)
    out.h.square().sum().backward()
    grad = enc.proj.weight.grad.clone()
    enc.zero_grad()
    h0 = enc.proj(x)
    zs = [torch.nn.functional.elu(refs[m](h0, graphs[m])) for m in graphs]
    h_ref, beta_ref = enc.semantic[0](zs)
    h_ref.square().sum().backward()
    grad_ref = enc.proj.weight.grad
    return {
        "max_abs_diff_h": float((out.h - h_ref).abs().max()),
        "max_abs_diff_beta": float((out.semantic_attention - beta_ref).abs().max()),
        "max_rel_diff_grad": float((grad - grad_ref).abs().max() / grad_ref.abs().max()),
        "h_scale": float(h_ref.abs().max()),
    }


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


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--datasets", nargs="+", default=["acm", "dblp"], choices=sorted(METAPATHS))
    p.add_argument("--repeats", type=int, default=5, help="timed runs of our encoder")
    p.add_argument("--pyg-repeats", type=int, default=3, help="timed runs of HANConv")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--device", default="cpu", help="cpu or cuda (timed with synchronisation)")
    p.add_argument("--skip-pyg", action="store_true", help="do not run HANConv")
    p.add_argument("--skip-check", action="store_true", help="skip the equality check")
    p.add_argument("--timeout", type=float, default=1800.0, help="seconds per subprocess")
    p.add_argument("--json", type=Path, default=OUT / "encoder_speed.json")
    p.add_argument("--worker", choices=["ours", "pyg", "check"], help=argparse.SUPPRESS)
    p.add_argument("--cache", type=Path, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    torch.set_num_threads(args.threads)
    if args.worker:
        res = check_worker(args.cache) if args.worker == "check" else worker(
            args.worker, args.cache, args.repeats, args.device)
        print(json.dumps(res))
        return 0

    OUT.mkdir(parents=True, exist_ok=True)
    report = {"machine": machine(), "threads": args.threads, "hidden": HIDDEN, "heads": HEADS,
              "device": args.device, "results": {}}
    for name in args.datasets:
        x, graphs, source = load(name)
        graphs = {m: graphs[m] for m in METAPATHS[name]}
        cache = OUT / f"encoder_speed_{name}.pt"
        torch.save({"x": x, "graphs": graphs}, cache)
        edges = {m: int(ei.size(1)) for m, ei in graphs.items()}
        res = {"source": source, "num_nodes": int(x.size(0)), "in_channels": int(x.size(1)),
               "edges": edges, "attention_values": sum(edges.values()) * HEADS,
               "product_macs": 4 * sum(edges.values()) * HEADS * (HIDDEN // HEADS + 1)}
        print(f"[{name}] N={x.size(0)} edges={edges}; running our encoder ...", flush=True)
        common = ["--cache", str(cache), "--device", args.device]
        res["ours"] = run_worker(["--worker", "ours", "--repeats", str(args.repeats), *common],
                                 args.threads, args.timeout)
        if not args.skip_pyg:  # one at a time: HANConv needs several GB
            print(f"[{name}] running PyG HANConv ...", flush=True)
            res["pyg"] = run_worker(
                ["--worker", "pyg", "--repeats", str(args.pyg_repeats), *common],
                args.threads, args.timeout)
        if not args.skip_check and name == "acm":
            print(f"[{name}] checking against a GATConv reference ...", flush=True)
            res["check"] = run_worker(["--worker", "check", *common], args.threads, args.timeout)
        cache.unlink()
        report["results"][name] = res
    print_table(report)
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=2))
    print(f"wrote {args.json}")
    return 0


def _ratio(num: dict, den: dict, key: str, fmt: str) -> str:
    return format(num[key] / den[key], fmt) if key in num and key in den else "-"


def print_table(report: dict) -> None:
    print(f"\nforward+backward, hidden {HIDDEN} = {HEADS} heads x {HIDDEN // HEADS}, "
          f"{report['threads']} thread(s); times are medians (wall clock, and CPU time of the "
          "process); memory is the peak RSS growth")
    print(f"{'dataset':8} {'edges':>10} {'ours s':>7} {'HANConv s':>10} {'speed-up':>9} "
          f"{'CPU speed-up':>13} {'ours MB':>8} {'HANConv MB':>11} {'mem ratio':>10} "
          f"{'products s':>11}")
    for name, r in report["results"].items():
        ours, pyg = r.get("ours", {}), r.get("pyg", {})

        def f(d, k, fmt):
            return format(d[k], fmt) if k in d else "-"

        print(f"{name:8} {sum(r['edges'].values()):>10} {f(ours, 'wall_s', '7.3f'):>7} "
              f"{f(pyg, 'wall_s', '.3f'):>10} {_ratio(pyg, ours, 'wall_s', '.1f') + 'x':>9} "
              f"{_ratio(pyg, ours, 'cpu_s', '.1f') + 'x':>13} {f(ours, 'peak_mb', '.0f'):>8} "
              f"{f(pyg, 'peak_mb', '.0f'):>11} {_ratio(ours, pyg, 'peak_mb', '.3f'):>10} "
              f"{f(ours, 'products_floor_s', '.3f'):>11}")
        for k in ("ours", "pyg"):
            if "error" in r.get(k, {}):
                print(f"  {k} failed: {r[k]['error']}")
        if "check" in r:
            print(f"  check vs GATConv reference: {r['check']}")


if __name__ == "__main__":
    sys.exit(main())
