"""2D distillation throughput at the paper's map size: five implementations in one run.

One AWD distillation epoch (``awd.distill.distill_path``, fast TRIM path, gamma > 0) on
256^2 maps, db5, J=4, zero mode, batch 100, float32, timed between the per-epoch callbacks
(epochs 2.. of each run; the one-off input-gradient pass is excluded). Five implementations,
interleaved round by round at every thread count:

* before: the attributions as a double backward through the synthesis
  (``awd.trim.ANALYSIS_ADJOINT = False``), batches of 100 taken whole (``micro_batch: 100``),
  the transforms as GEMMs (``awd.transform.DIRECT = False``);
* gemm: the attributions as the analysis of the input gradient (exact in zero mode) and
  batches taken in pieces of at most 32 maps (``micro_batch: null``: 4 x 25), which run side by
  side, one per torch thread; the transforms still GEMMs;
* kernels: as gemm, with the transforms on the direct zero-mode kernels of ``awd.kernels``;
* fused: as kernels, with the reconstruction error and the two L1 terms as single fused passes
  (``awd.losses.FUSED``; torch's ``mse_loss`` and ``abs``/``sum`` before), each of the three
  passes of a 2D level an autograd node of its own;
* nodes: as fused, with a whole 2D transform one autograd node whose backward calls the kernels directly
  (``awd.kernels.LEVEL_NODES``, ``awd.kernels.DIRECT_BACKWARD``): the default.

All five gather a batch's maps with ``index_select`` and train the same filter (checked: largest
|h difference| reported). The teacher is a small ReLU CNN: on the fast path its cost is only in
the input-gradient pass, so any piecewise-linear teacher gives the same epoch time. Maps are
white noise (the transform's cost does not depend on the values). Two cores are also measured as
the workflow uses them for a grid: two single-threaded runs at once (two distillation jobs), their
rates added. Writes
``benchmarks/out/distill_throughput.md``::

    python benchmarks/bench_distill_throughput.py [--maps 400] [--epochs 3] [--threads 1 2] [--rounds 2]

(the recorded run: ``--rounds 3 --epochs 4``)
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402
from torch import nn  # noqa: E402

import awd.kernels  # noqa: E402
import awd.losses  # noqa: E402
import awd.transform  # noqa: E402
import awd.trim  # noqa: E402
from awd.distill import DistillConfig, distill_path  # noqa: E402
from awd.io import atomic_path  # noqa: E402

OUT = ROOT / "benchmarks" / "out" / "distill_throughput.md"
GOAL = 1000.0  # maps/s per epoch on two cores (issue 11)
IMPLEMENTATIONS = {"before": dict(adjoint=False, micro_batch=100, direct=False, fused=False, nodes=False),
                   "gemm": dict(adjoint=True, micro_batch=None, direct=False, fused=False, nodes=False),
                   "kernels": dict(adjoint=True, micro_batch=None, direct=True, fused=False, nodes=False),
                   "fused": dict(adjoint=True, micro_batch=None, direct=True, fused=True, nodes=False),
                   "nodes": dict(adjoint=True, micro_batch=None, direct=True, fused=True, nodes=True)}


def teacher() -> nn.Module:
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        return nn.Sequential(nn.Unflatten(1, (1, 256)), nn.Conv2d(1, 4, 5, stride=4), nn.ReLU(),
                             nn.AdaptiveAvgPool2d(4), nn.Flatten(), nn.Linear(64, 1)).eval()


def epoch_rates(impl: str, maps: np.ndarray, epochs: int, threads: int) -> tuple[list[float], np.ndarray]:
    """Maps/s of epochs 2.. of one run, and the filter it trained."""
    spec = IMPLEMENTATIONS[impl]
    awd.trim.ANALYSIS_ADJOINT = spec["adjoint"]
    awd.transform.DIRECT = spec["direct"]
    awd.losses.FUSED = spec["fused"]
    awd.kernels.LEVEL_NODES = awd.kernels.DIRECT_BACKWARD = spec["nodes"]
    torch.set_num_threads(threads)
    cfg = DistillConfig(J=4, mode="zero", epochs=epochs, batch_size=100, micro_batch=spec["micro_batch"],
                        progress=False)
    stamps: list[float] = []
    try:
        (res,) = distill_path(teacher(), maps, maps[:4], lam=0.005, gammas=[0.00368], config=cfg,
                              callback=lambda info: stamps.append(time.perf_counter()))
    finally:
        awd.trim.ANALYSIS_ADJOINT = True
        awd.transform.DIRECT = True
        awd.losses.FUSED = True
        awd.kernels.LEVEL_NODES = awd.kernels.DIRECT_BACKWARD = True
    return [len(maps) / (b - a) for a, b in zip(stamps, stamps[1:])], res.h


def pair_rates(impl: str, args) -> list[list[float]]:
    """Epoch rates of two single-threaded runs started together (separate processes)."""
    cmd = [sys.executable, __file__, "--child", impl, "--maps", str(args.maps), "--epochs", str(args.epochs)]
    procs = [subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True) for _ in range(2)]
    outs = [p.communicate()[0] for p in procs]
    if any(p.returncode for p in procs):
        sys.exit(f"a paired run of {impl} failed")
    return [json.loads(out.strip().splitlines()[-1]) for out in outs]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--maps", type=int, default=400)
    parser.add_argument("--epochs", type=int, default=3)
    parser.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--no-write", action="store_true", help="print only")
    parser.add_argument("--child", choices=list(IMPLEMENTATIONS), help=argparse.SUPPRESS)
    args = parser.parse_args()
    maps = (0.02 * np.random.default_rng(0).standard_normal((args.maps, 256, 256))).astype(np.float32)
    if args.child:  # one single-threaded run of a pair: its epoch rates as JSON
        print(json.dumps(epoch_rates(args.child, maps, args.epochs, 1)[0]))
        return
    load_before = os.getloadavg()
    rates: dict[tuple[int, str], list[float]] = {}
    filters: dict[str, np.ndarray] = {}
    for rnd in range(args.rounds):
        for threads in args.threads:
            for impl in IMPLEMENTATIONS:
                r, h = epoch_rates(impl, maps, args.epochs, threads)
                rates.setdefault((threads, impl), []).extend(r)
                filters[impl] = h
                print(f"round {rnd + 1}, {threads} thread(s), {impl}: {', '.join(f'{x:.0f}' for x in r)} maps/s",
                      flush=True)
        for impl in IMPLEMENTATIONS:
            a, b = pair_rates(impl, args)
            rates.setdefault(("pair", impl), []).extend(x + y for x, y in zip(a, b))
            together = ", ".join(f"{x + y:.0f}" for x, y in zip(a, b))
            print(f"round {rnd + 1}, two 1-thread runs at once, {impl}: {together} maps/s together", flush=True)
    load_after = os.getloadavg()
    dh = {impl: float(np.abs(filters[impl] - filters["before"]).max()) for impl in list(IMPLEMENTATIONS)[1:]}
    lines = ["# 2D distillation throughput: five implementations", "",
             f"{args.maps} maps of 256x256 (float32), db5, J=4, zero mode, batch 100, fast TRIM path, gamma > 0; "
             f"maps/s of epochs 2..{args.epochs} of each run ({args.rounds} rounds, implementations interleaved). "
             "Before: attributions by a double backward through the synthesis, batches whole, transforms as GEMMs. "
             "Gemm: attributions as the analysis of the input gradient (exact in zero mode), batches in 4 pieces of "
             "25 maps, side by side on the torch threads, transforms as GEMMs. Kernels: as gemm, transforms on the "
             "direct zero-mode kernels (`awd.kernels`). Fused: as kernels, the reconstruction error and the L1 "
             "terms as single fused passes (`awd.losses.FUSED`), three autograd nodes per 2D level. Nodes: as "
             "fused, a whole 2D transform one autograd node whose backward calls the kernels directly "
             "(`awd.kernels.LEVEL_NODES`, `awd.kernels.DIRECT_BACKWARD`; the default). All gather batches with "
             "`index_select`. Written by `benchmarks/bench_distill_throughput.py`.", "",
             "| torch threads | " + " | ".join(f"{impl}: maps/s median (best)" for impl in IMPLEMENTATIONS)
             + f" | nodes / fused | nodes / kernels | goal {GOAL:.0f} maps/s on 2 cores (nodes) |",
             "|---" * (len(IMPLEMENTATIONS) + 4) + "|"]
    for threads in [*args.threads, "pair"]:
        r = {impl: np.asarray(rates[(threads, impl)]) for impl in IMPLEMENTATIONS}
        med = {impl: float(np.median(v)) for impl, v in r.items()}
        met = ("yes" if med["nodes"] >= GOAL else "NO") if threads in (2, "pair") else "—"
        label = "1 + 1 (two 1-thread runs at once, rates added)" if threads == "pair" else threads
        lines.append(f"| {label} | " + " | ".join(f"{med[i]:.0f} ({r[i].max():.0f})" for i in IMPLEMENTATIONS)
                     + f" | {med['nodes'] / med['fused']:.2f} | {med['nodes'] / med['kernels']:.2f} | {met} |")
    lines += ["", "- same filter: largest |h - h_before| after "
              f"{args.epochs} epochs = " + ", ".join(f"{v:.2e} ({k})" for k, v in dh.items()) + " (float32 rounding)",
              f"- environment: {platform.machine()}, {os.cpu_count()} logical cores, torch {torch.__version__}, "
              f"OMP_WAIT_POLICY={os.environ.get('OMP_WAIT_POLICY')}; load average (1, 5, 15 min) before "
              f"{', '.join(f'{x:.2f}' for x in load_before)}, after {', '.join(f'{x:.2f}' for x in load_after)}"]
    text = "\n".join(lines) + "\n"
    print(text)
    if not args.no_write:
        OUT.parent.mkdir(parents=True, exist_ok=True)
        with atomic_path(OUT) as tmp:
            tmp.write_text(text)


if __name__ == "__main__":
    main()
