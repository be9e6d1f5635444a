"""Vectorised vs plain-loop classification protocol on ACM-sized embeddings.

Runs the field's protocol (50 runs x 200 Adam steps of a logistic-regression probe, label rate 20)
on 4019 x 64 class-informative random embeddings with ACM's labels and splits (read from
``$HETCRF_DATA/acm`` when available, else synthetic splits of the same shape), once with
:func:`hetcrf_lite.eval.evaluate_classification_loop` and several times with
:func:`hetcrf_lite.eval.evaluate_classification`; asserts both give the same selected steps and
scores (to 1e-6), prints a table and writes JSON.

Usage::

    .venv/bin/python benchmarks/eval_speed.py        # writes benchmarks/out/eval_speed.json
    .venv/bin/python benchmarks/eval_speed.py --runs 5 --iters 50 --json /tmp/quick.json

The comparison runs in float64 by default: in float32 the two versions' logits differ in the
last bit (``Linear`` vs one batched product), which can swap the ranks of two near-tied test
nodes and move one run's AUC by a single pair (about 5e-4 points), so "identical" would need a
looser tolerance. The batched version is also timed in float32, for reference.

Both versions run with the same number of torch threads (``--threads``, default 1): on a small,
shared CPU torch's intra-op threads mostly wait for each other on these tiny matrices, which
would slow the loop's thousands of small calls far more than the batched version's few large ones
and inflate the ratio.
"""
from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import sklearn
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from hetcrf_lite.eval import evaluate_classification, evaluate_classification_loop  # noqa: E402
from hetcrf_lite.files import save_json  # noqa: E402

N, DIM, CLASSES, RATE = 4019, 64, 3, 20


def acm_labels_and_split(seed: int) -> tuple[torch.Tensor, dict[str, torch.Tensor], str]:
    """ACM's labels and rate-20 split, or synthetic ones of the same shape (60 / 1000 / 1000)."""
    root = os.environ.get("HETCRF_DATA")
    folder = Path(root) / "acm" if root else None
    files = ["labels.npy", f"train_{RATE}.npy", f"val_{RATE}.npy", f"test_{RATE}.npy"]
    if folder is not None and all((folder / f).exists() for f in files):
        labels = np.load(folder / "labels.npy").astype(np.int64)  # stored as float64
        labels = torch.from_numpy(labels)
        split = {p: torch.from_numpy(np.load(folder / f"{p}_{RATE}.npy").astype(np.int64))
                 for p in ("train", "val", "test")}
        return labels, split, f"ACM labels and splits from {folder}"
    rng = np.random.default_rng(seed)
    labels = rng.permutation(np.arange(N) % CLASSES)
    train = np.concatenate([rng.choice(np.flatnonzero(labels == c), RATE, replace=False)
                            for c in range(CLASSES)])
    rest = rng.permutation(np.setdiff1d(np.arange(N), train))
    split = {"train": train, "val": rest[:1000], "test": rest[1000:2000]}
    return (torch.from_numpy(labels), {k: torch.from_numpy(v) for k, v in split.items()},
            "synthetic labels and splits of ACM's shape (HETCRF_DATA not set)")


def informative_embeddings(labels: torch.Tensor, signal: float, seed: int) -> torch.Tensor:
    """Gaussian embeddings whose class means differ by ``signal`` (probe Macro-F1 ~ 80-90%)."""
    g = torch.Generator().manual_seed(seed)
    means = torch.randn(CLASSES, DIM, generator=g)
    means = signal * means / means.norm(dim=1, keepdim=True)  # [C, D]
    return means[labels] + torch.randn(labels.shape[0], DIM, generator=g)  # [N, D]


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--runs", type=int, default=50)
    ap.add_argument("--iters", type=int, default=200)
    ap.add_argument("--repeats", type=int, default=5, help="timed repeats, vectorised version")
    ap.add_argument("--loop-repeats", type=int, default=1, help="timed repeats of the loop")
    ap.add_argument("--threads", type=int, default=1, help="torch threads for both versions")
    ap.add_argument("--dtype", choices=["float32", "float64"], default="float64")
    ap.add_argument("--lr", type=float, default=0.05, help="HeCo's ACM probe learning rate")
    ap.add_argument("--signal", type=float, default=3.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "out" / "eval_speed.json")
    args = ap.parse_args(argv)

    torch.set_num_threads(args.threads)
    dtype = getattr(torch, args.dtype)
    labels, split, source = acm_labels_and_split(args.seed)
    emb = informative_embeddings(labels, args.signal, args.seed)
    common = dict(num_classes=CLASSES, lr=args.lr, runs=args.runs, iters=args.iters,
                  seed=args.seed, dtype=dtype)

    def fast():
        return evaluate_classification(emb, labels, {RATE: split}, rates=(RATE,), **common)[RATE]

    fast()  # warm-up: first-call allocations and lazy imports are not what we measure
    fast_times, fast_res = [], None
    for _ in range(args.repeats):
        t, fast_res = timed(fast)
        fast_times.append(t)
    fast32_times = []
    if dtype != torch.float32:  # the everyday dtype, timed for reference (not compared)
        common32 = {**common, "dtype": torch.float32}
        for _ in range(args.repeats):
            fast32_times.append(timed(lambda: evaluate_classification(
                emb, labels, {RATE: split}, rates=(RATE,), **common32))[0])
    loop_times, loop_res = [], None
    for _ in range(args.loop_repeats):
        t, loop_res = timed(lambda: evaluate_classification_loop(emb, labels, split, **common))
        loop_times.append(t)

    # Same steps and the same numbers, or the speed-up means nothing.
    assert fast_res.macro_step == loop_res.macro_step, "Macro-F1 steps differ"
    assert fast_res.micro_step == loop_res.micro_step, "Micro-F1 steps differ"
    for key in ("macro_f1", "micro_f1", "auc"):
        gap = float(np.max(np.abs(np.subtract(getattr(fast_res, key), getattr(loop_res, key)))))
        assert gap <= 1e-6, f"{key} differs by {gap}"

    t_fast, t_loop = statistics.median(fast_times), statistics.median(loop_times)
    summary = {k: {"mean": m, "std": s} for k, (m, s) in fast_res.summary().items()}
    report = {
        "benchmark": "eval_speed",
        "task": f"{args.runs} runs x {args.iters} Adam steps, rate {RATE}, {N} x {DIM} embeddings, "
                f"{CLASSES} classes",
        "data": source,
        "settings": {k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items()},
        "vectorised_s": fast_times, "loop_s": loop_times,
        "vectorised_median_s": t_fast, "loop_median_s": t_loop, "speedup": t_loop / t_fast,
        "vectorised_float32_s": fast32_times,
        "vectorised_float32_median_s": statistics.median(fast32_times) if fast32_times else None,
        "identical": True, "scores": summary,
        "machine": {"platform": platform.platform(), "processor": platform.processor(),
                    "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(),
                    "load_average": os.getloadavg() if hasattr(os, "getloadavg") else None},
        "versions": {"python": platform.python_version(), "torch": torch.__version__,
                     "sklearn": sklearn.__version__, "numpy": np.__version__},
    }
    print(f"eval_speed: {report['task']} ({source}), {args.dtype}, "
          f"{torch.get_num_threads()} torch thread(s)")
    print(f"{'version':<12} {'median s':>10} {'repeats':>8}")
    print(f"{'loop':<12} {t_loop:10.3f} {len(loop_times):8d}")
    print(f"{'vectorised':<12} {t_fast:10.3f} {len(fast_times):8d}")
    if fast32_times:
        print(f"{'vect. fp32':<12} {statistics.median(fast32_times):10.3f} "
              f"{len(fast32_times):8d}   (reference only)")
    print(f"speed-up {t_loop / t_fast:.1f}x; identical steps and scores (Macro-F1 "
          f"{summary['macro_f1']['mean']:.2f} ± {summary['macro_f1']['std']:.2f}, AUC "
          f"{summary['auc']['mean']:.2f})")
    save_json(report, args.json)
    print(f"wrote {args.json}")
    return report


if __name__ == "__main__":
    main()
