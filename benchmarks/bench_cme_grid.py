"""Speed of the exact CME distillation grid: the plain engine (one path per job, double
back-propagation through the LSTM at every step) against the batched engine (all lambdas of
a seed in one computation, per-sample teacher Hessians), measured in the same run.

Problem: the paper's CME protocol at 3,000 training traces of 40 points (300 validation),
float32, db5, J=4, 'zero' mode, saliency, batch 100, the 5 x 21 (lambda, gamma) grid of
``workflow/config/paper.yaml``, 100 epochs, the reference LSTM (hidden 20). Speed does not depend
on the teacher's weights or the traces' values, so both are random (teacher: ``build_lstm``
seed 2; traces: standard normal).

Measured: the plain engine on one lambda path for ``--old-epochs`` epochs at gamma 0 and at
one gamma > 0; the batched engine on one seed's whole grid (5 lambdas x 21 gammas) for
``--epochs`` epochs (100 = the full grid); with ``--seeds`` the five seeds' jobs on
``--workers`` processes at once (the 2-core wall time), for ``--seed-epochs`` epochs (100 =
the five full grids, measured, nothing extrapolated).
Extrapolated to 100 epochs (labelled so): per grid point the median epoch time times 100, plus
the measured one-off costs (Hessians, input gradients, validation). Writes
``benchmarks/out/cme_grid.{md,json}`` and the ``## CME exact grid`` section of
``benchmarks/README.md``.

Run: ``OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_cme_grid.py``
"""
from __future__ import annotations

import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")  # must precede the OpenMP runtime start

import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import math  # noqa: E402
import multiprocessing as mp  # noqa: E402
import platform  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import warnings  # noqa: E402
from pathlib import Path  # noqa: E402

import numpy as np  # noqa: E402
import torch  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
from benchmarks.common import write_section  # noqa: E402
from awd.distill import DistillConfig, distill_job, distill_path  # noqa: E402
from awd.io import atomic_path  # noqa: E402
from domains.cme.lstm import build_lstm  # noqa: E402

SECTION = "## CME exact grid"
OUT = ROOT / "benchmarks" / "out" / "cme_grid"
LAMBDAS = [0.0001, 0.00027, 0.00071, 0.00188, 0.005]
GAMMAS = [0.0, 0.0001, 0.00018, 0.00034, 0.00062, 0.00113, 0.00207, 0.00379, 0.00695, 0.01274, 0.02336,
          0.04281, 0.07848, 0.14384, 0.26367, 0.48329, 0.88587, 1.62378, 2.97635, 5.45559, 10.0]
FULL_EPOCHS = 100
log = logging.getLogger("bench_cme_grid")


def problem(n_train: int, n_val: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    return (build_lstm(seed=2).eval(), rng.standard_normal((n_train, 40)).astype(np.float32),
            rng.standard_normal((n_val, 40)).astype(np.float32))


def config(engine: str, epochs: int, seeds: list[int], gammas=GAMMAS) -> DistillConfig:
    return DistillConfig.from_dict(dict(wave="db5", J=4, mode="zero", lambdas=LAMBDAS, gammas=gammas, epochs=epochs,
                                        batch_size=100, lr=1e-3, fast_path="never", dtype="float32", progress=False,
                                        seeds=seeds, engine=engine))


def epoch_ends(stamps: list[tuple[int, int, float]]) -> dict[int, list[float]]:
    """Per grid point, the wall time at the end of each epoch (first callback of the epoch)."""
    ends: dict[int, dict[int, float]] = {}
    for point, epoch, t in stamps:
        ends.setdefault(point, {}).setdefault(epoch, t)
    return {p: [e[k] for k in sorted(e)] for p, e in ends.items()}


def extrapolate(total: float, ends: dict[int, list[float]], epochs: int, per_point: dict[int, int] | None = None
                ) -> tuple[float, dict[int, float]]:
    """(time at FULL_EPOCHS, median epoch time per measured point): measured one-off part
    (everything but the epochs) + per point FULL_EPOCHS x its median epoch time (epochs 2..)."""
    med = {p: float(np.median(np.diff(t))) for p, t in ends.items()}
    counts = per_point or {p: 1 for p in med}
    one_off = total - sum(epochs * med[p] for p in med)
    return one_off * sum(counts.values()) / len(med) + sum(FULL_EPOCHS * med[p] * counts[p] for p in med), med


def run_plain(teacher, X, Xv, epochs: int) -> dict:
    """One lambda path at gamma 0 and one gamma > 0 (the plain engine's unit is one path)."""
    stamps: list[tuple[int, int, float]] = []
    cfg = config("plain", epochs, [1], gammas=[0.0, 0.00695])
    start = time.perf_counter()
    distill_path(teacher, X, Xv, lam=LAMBDAS[2], gammas=cfg.gammas, config=cfg,
                 callback=lambda i: stamps.append((i["point"], i["epoch"], time.perf_counter())))
    total = time.perf_counter() - start
    ends = epoch_ends(stamps)
    # one path of the full grid: point 0 (gamma 0) once, the gamma > 0 point 20 times
    path, med = extrapolate(total, ends, epochs, per_point={0: 1, 1: len(GAMMAS) - 1})
    return {"measured_s": total, "epochs": epochs, "epoch_s": {"gamma=0": med[0], "gamma>0": med[1]},
            "steps_per_epoch": math.ceil(len(X) / 100), "path_s_extrapolated": path}


def run_batched(teacher, X, Xv, epochs: int, seed: int) -> dict:
    stamps: list[tuple[int, int, float]] = []
    cfg = config("batched", epochs, [seed])
    start = time.perf_counter()
    distill_job(teacher, X, Xv, config=cfg, job=0,
                callback=lambda i: stamps.append((i["point"], i["epoch"], time.perf_counter())))
    total = time.perf_counter() - start
    full, med = extrapolate(total, epoch_ends(stamps), epochs)
    full = total if epochs >= FULL_EPOCHS else full
    return {"measured_s": total, "epochs": epochs, "seed_s": full, "measured_full": epochs >= FULL_EPOCHS,
            "epoch_s_gamma0": med.get(0), "epoch_s_gamma_pos_median": float(np.median([v for p, v in med.items() if p]))
            if med else None}


def _seed_worker(args) -> float:
    seed, epochs, n_train, n_val = args
    torch.set_num_threads(1)
    warnings.filterwarnings("ignore", "Level value")
    teacher, X, Xv = problem(n_train, n_val)
    start = time.perf_counter()
    distill_job(teacher, X, Xv, config=config("batched", epochs, [seed]), job=0)
    return time.perf_counter() - start


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n-train", type=int, default=3000)
    parser.add_argument("--n-val", type=int, default=300)
    parser.add_argument("--old-epochs", type=int, default=3, help="plain engine epochs per measured point (>= 2)")
    parser.add_argument("--epochs", type=int, default=10, help="batched engine epochs over one seed's grid")
    parser.add_argument("--seeds", type=int, nargs="*", default=[1, 10, 100, 1000, 10000])
    parser.add_argument("--seed-epochs", type=int, default=5, help="epochs of the parallel five-seed run")
    parser.add_argument("--workers", type=int, default=2, help="processes of the five-seed run (cores)")
    parser.add_argument("--no-readme", action="store_true")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(message)s")
    logging.getLogger("awd").setLevel(logging.WARNING)
    warnings.filterwarnings("ignore", "Level value")
    torch.set_num_threads(1)
    teacher, X, Xv = problem(args.n_train, args.n_val)
    load = [os.getloadavg()[0]]
    plain = run_plain(teacher, X, Xv, args.old_epochs)
    log.info("plain: %s", plain)
    load.append(os.getloadavg()[0])
    batched = run_batched(teacher, X, Xv, args.epochs, args.seeds[0] if args.seeds else 1)
    log.info("batched: %s", batched)
    load.append(os.getloadavg()[0])
    five = None
    if args.seeds:
        start = time.perf_counter()
        ctx = mp.get_context("spawn")
        with ctx.Pool(args.workers) as pool:
            per_seed = pool.map(_seed_worker, [(s, args.seed_epochs, args.n_train, args.n_val) for s in args.seeds])
        wall = time.perf_counter() - start
        if args.seed_epochs >= FULL_EPOCHS:
            full_wall = wall  # the five full grids ran: nothing to extrapolate
        else:
            # one seed at the same epochs in this process gives the full/measured ratio of a seed
            # job; the wall's remainder (process start, imports) is kept as measured
            one = run_batched(teacher, X, Xv, args.seed_epochs, args.seeds[0])
            rounds = math.ceil(len(args.seeds) / args.workers)
            busy = rounds * float(np.mean(per_seed))
            full_wall = (wall - busy) + busy * one["seed_s"] / one["measured_s"]
        five = {"seeds": args.seeds, "workers": args.workers, "epochs": args.seed_epochs, "wall_s": wall,
                "per_seed_s": per_seed, "wall_s_extrapolated": full_wall,
                "measured_full": args.seed_epochs >= FULL_EPOCHS}
        log.info("five seeds: %s", five)
        load.append(os.getloadavg()[0])
    seed_jobs, paths = len(LAMBDAS), len(LAMBDAS) * max(1, len(args.seeds))
    old_path = plain["path_s_extrapolated"]
    old_seed_cpu = seed_jobs * old_path
    old_seed_wall = math.ceil(seed_jobs / args.workers) * old_path
    old_five_wall = math.ceil(paths / args.workers) * old_path
    new_seed = batched["seed_s"]
    result = {"n_train": args.n_train, "n_val": args.n_val, "plain": plain, "batched": batched, "five_seeds": five,
              "plain_seed_cpu_s": old_seed_cpu, "plain_seed_wall_s": old_seed_wall, "plain_five_wall_s": old_five_wall,
              "ratio_seed_cpu": old_seed_cpu / new_seed, "load_average": load, "torch": torch.__version__,
              "threads_per_process": 1}
    OUT.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(OUT.with_suffix(".json")) as tmp:
        tmp.write_text(json.dumps(result, indent=2) + "\n")

    def mins(s: float) -> str:
        return f"{s / 60:.1f} min"
    measured = "measured" if batched["measured_full"] else f"extrapolated from {args.epochs} measured epochs"
    command = "OMP_WAIT_POLICY=PASSIVE python benchmarks/bench_cme_grid.py " + " ".join(argv or sys.argv[1:])
    lines = [
        SECTION, "",
        f"The exact CME distillation grid of the paper protocol: {args.n_train:,} training traces of 40 points "
        f"({args.n_val} validation), float32, db5, J=4, zero mode, saliency, batch 100, 5 lambdas x 21 gammas, "
        "100 epochs, the reference LSTM (hidden 20); 1 torch thread per process. Plain = today's engine "
        "(`distill.engine: plain`, one lambda path per job, double back-propagation through the LSTM at every "
        "step); batched = `distill.engine: batched` (one job per seed with its 5 lambdas in one computation, "
        "per-sample teacher Hessians computed once; same filters to float rounding, tested in "
        "`tests/test_distill.py`). Written by `benchmarks/bench_cme_grid.py`.", "",
        f"Command: `{command.strip()}`", "",
        "| quantity | plain (today) | batched (new) | ratio |",
        "|---|---|---|---|",
        f"| epoch at gamma > 0, one path, {plain['steps_per_epoch']} steps (s, measured) | "
        f"{plain['epoch_s']['gamma>0']:.2f} | {batched['epoch_s_gamma_pos_median'] / len(LAMBDAS):.3f} per path "
        f"({batched['epoch_s_gamma_pos_median']:.2f} for 5 paths) | "
        f"**{plain['epoch_s']['gamma>0'] * len(LAMBDAS) / batched['epoch_s_gamma_pos_median']:.1f}x** |"
        if batched["epoch_s_gamma_pos_median"] else None,
        f"| one seed's grid (105 points x 100 epochs), CPU time | {mins(old_seed_cpu)} (extrapolated from "
        f"{args.old_epochs} epochs at 2 points) | {mins(new_seed)} ({measured}) | **{old_seed_cpu / new_seed:.1f}x** |",
        f"| one seed's grid, wall on {args.workers} cores | {mins(old_seed_wall)} (extrapolated: "
        f"{math.ceil(seed_jobs / args.workers)} rounds of path jobs) | {mins(new_seed)} (one job; goal <= 20 min) | "
        f"{old_seed_wall / new_seed:.1f}x |",
    ]
    if five:
        how = (f"measured: the {len(args.seeds)} seed jobs of {args.seed_epochs} epochs on {args.workers} processes"
               if five["measured_full"] else
               f"extrapolated from the measured {five['wall_s']:.0f} s of {args.seed_epochs} epochs, "
               f"{len(args.seeds)} seed jobs on {args.workers} processes, one-off costs scaled too, so an upper bound")
        lines.append(f"| five seeds, wall on {args.workers} cores | {mins(old_five_wall)} (extrapolated: "
                     f"{math.ceil(paths / args.workers)} rounds of path jobs) | {mins(five['wall_s_extrapolated'])} "
                     f"({how}; goal <= 60 min) | "
                     f"{old_five_wall / five['wall_s_extrapolated']:.1f}x |")
    lines += [
        "",
        f"- environment: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
        f"{os.cpu_count()} cores, load average (1 min) during the run: "
        f"{', '.join(f'{v:.1f}' for v in load)} (shared machine: a load above the core count slows both engines; "
        "the ratio is the robust number).",
        "- extrapolation: per grid point 100 x the median epoch time, plus the measured one-off costs "
        "(Hessians and input gradients, validation passes).",
    ]
    text = "\n".join(line for line in lines if line is not None) + "\n"
    with atomic_path(OUT.with_suffix(".md")) as tmp:
        tmp.write_text(text)
    log.info("%s", text)
    if not args.no_readme:
        write_section(text, SECTION)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
