"""CME models: LSTM teacher epoch time, and AWD distillation epochs of the LSTM, exact vs fast path.

The LSTM teacher (hidden 20) has sigmoid/tanh gates, so the TRIM interpretation loss needs
double back-propagation through it for an exact gradient w.r.t. the filter h
(``fast_path: never``, what ``auto`` picks for it). ``fast_path: always`` precomputes the
input gradients once and is exact in the attribution values but drops the teacher-curvature
term of the gradient w.r.t. h. This script measures:

* teacher: seconds per training epoch (Adam, MSE, batch 100) on the paper's training size;
* distillation: seconds per epoch for one gamma > 0 grid point, exact and fast path;
* the difference: relative L2 difference of the interpretation-loss gradient w.r.t. h on
  batches of 100 traces (float64), and the max |h_exact - h_fast| after the timed epochs.

Data: synthetic 40-point traces with CME-like shapes (rise, plateau, drop, noise, zero
padding of short tracks) and a target that depends on the final drop; the LSTM is trained on
them first, so the curvature it has is that of a fitted teacher. Timings use
``torch.set_num_threads(threads)``. Writes ``benchmarks/out/cme_models.md`` (and ``.json``).

    python benchmarks/bench_cme_models.py [--n-train 2936] [--epochs 3] [--threads 1] [--quick]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import torch  # noqa: E402

from awd.distill import DistillConfig, distill_path  # noqa: E402
from awd.domain import Dataset  # noqa: E402
from awd.io import atomic_path  # noqa: E402
from awd.teacher import TeacherConfig, fit_teacher  # noqa: E402
from awd.transform import DWT1d  # noqa: E402
from awd.trim import attributions_from_gradients, input_gradients, trim_attributions  # noqa: E402
from domains.cme.lstm import build_lstm  # noqa: E402


def synthetic_traces(n: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """CME-like z-scored 40-point traces and a target driven by the size of the final drop."""
    rng = np.random.default_rng(seed)
    X = np.zeros((n, 40))
    y = np.zeros(n)
    for i in range(n):
        length = int(rng.integers(16, 80))
        t = np.linspace(0, 1, length)
        peak = rng.lognormal(0, 0.4)
        drop = rng.uniform(0, 1)
        uncoat = rng.uniform(0.1, 0.3)
        shape = np.where(t < 1 - uncoat, peak * (0.3 + 0.7 * t / (1 - uncoat)),
                         peak * (1 - drop * (t - 1 + uncoat) / uncoat))
        trace = shape + 0.15 * rng.normal(size=length)
        if length >= 40:
            X[i] = trace[((length - 1) * np.arange(40)) // 39]
        else:
            X[i, :length] = trace
        y[i] = drop * peak + 0.2 * rng.normal()
    X = (X - X.mean()) / X.std()
    return X.astype(np.float32), ((y - y.mean()) / y.std()).astype(np.float32)


def teacher_epochs(X: np.ndarray, y: np.ndarray, epochs: int, seed: int):
    """Train the LSTM for ``epochs`` epochs; return it and the mean seconds per epoch."""
    n = len(X)
    ds = Dataset(X, y, ["auxilin"], np.array(["train"] * n), np.zeros(n, np.int64))
    start = time.perf_counter()
    teacher, _ = fit_teacher(build_lstm(seed=seed), ds, TeacherConfig(epochs=epochs, batch_size=100, seed=seed))
    return teacher, (time.perf_counter() - start) / epochs


def distill_epochs(teacher, X_train, X_val, fast_path: str, epochs: int, gamma: float):
    """One grid point for ``epochs`` epochs; seconds per epoch (from the epoch callback)."""
    stamps = [time.perf_counter()]
    cfg = DistillConfig(epochs=epochs, batch_size=100, fast_path=fast_path, progress=False, seed=0)
    res = distill_path(teacher, X_train, X_val, lam=0.00188, gammas=[gamma], config=cfg,
                       callback=lambda info: stamps.append(time.perf_counter()))
    return res[0], np.diff(stamps)[1:] if len(stamps) > 2 else np.diff(stamps)


def gradient_difference(teacher, X: np.ndarray, n_batches: int) -> list[float]:
    """Relative L2 difference of d(L1 saliency)/dh, fast vs exact, per batch of 100 (float64)."""
    model = teacher.double().eval()
    for p in model.parameters():
        p.requires_grad_(False)
    dwt = DWT1d("db5", J=4, mode="zero", dtype=torch.float64)
    out = []
    for b in range(n_batches):
        x = torch.as_tensor(X[b * 100:(b + 1) * 100], dtype=torch.float64)
        exact = trim_attributions(model, dwt, x, 0, "saliency", create_graph=True)
        (g_exact,) = torch.autograd.grad(sum(a.abs().sum() for a in exact), dwt.h)
        grads = input_gradients(model, x, 0, batch_size=100)
        fast = attributions_from_gradients(dwt, x, grads, "saliency", create_graph=True)
        (g_fast,) = torch.autograd.grad(sum(a.abs().sum() for a in fast), dwt.h)
        out.append(float((g_exact - g_fast).norm() / g_exact.norm()))
    model.float()
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n-train", type=int, default=2936, help="training traces (paper: 2,936)")
    ap.add_argument("--n-val", type=int, default=300)
    ap.add_argument("--epochs", type=int, default=3, help="timed epochs per measurement")
    ap.add_argument("--teacher-epochs", type=int, default=20, help="teacher training epochs (all timed)")
    ap.add_argument("--gammas", type=float, nargs="+", default=[0.01274, 0.14384],
                    help="gamma > 0 points compared exact vs fast (the default grid's)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--quick", action="store_true", help="small sizes for a smoke run")
    ap.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out" / "cme_models.md")
    args = ap.parse_args()
    if args.quick:
        args.n_train, args.n_val, args.epochs, args.teacher_epochs = 400, 100, 2, 3
    torch.set_num_threads(args.threads)
    X, y = synthetic_traces(args.n_train + args.n_val, seed=0)
    X_train, X_val = X[:args.n_train], X[args.n_train:]

    teacher, teacher_time = teacher_epochs(X_train, y[:args.n_train], args.teacher_epochs, seed=2)
    runs = []
    for gamma in args.gammas:
        exact, exact_times = distill_epochs(teacher, X_train, X_val, "never", args.epochs, gamma)
        fast, fast_times = distill_epochs(teacher, X_train, X_val, "always", args.epochs, gamma)
        runs.append({"gamma": gamma, "exact_s": float(np.median(exact_times)), "fast_s": float(np.median(fast_times)),
                     "h_max_abs_diff": float(np.abs(exact.h - fast.h).max()),
                     "h_moved_exact": float(np.abs(exact.h - exact.init_h).max()),
                     "h_moved_fast": float(np.abs(fast.h - fast.init_h).max()),
                     "interpretation_val_exact": exact.losses.get("interpretation"),
                     "interpretation_val_fast": fast.losses.get("interpretation")})
    _, plain_times = distill_epochs(teacher, X_train, X_val, "never", args.epochs, 0.0)
    rel = gradient_difference(teacher, X_train, n_batches=min(5, args.n_train // 100))
    result = {
        "n_train": args.n_train, "threads": args.threads, "epochs_timed": args.epochs,
        "teacher_epochs": args.teacher_epochs, "teacher_epoch_s": float(teacher_time),
        "distill_epoch_gamma0_s": float(np.median(plain_times)), "gamma_runs": runs,
        "grad_rel_diff_median": float(np.median(rel)), "grad_rel_diff_max": float(np.max(rel)),
        "torch": torch.__version__, "cpu": platform.processor() or platform.machine(), "cores": os.cpu_count(),
    }
    r = result
    lines = [
        "# CME models: LSTM teacher and AWD distillation epochs", "",
        f"Synthetic CME-like traces (n_train = {r['n_train']}, 40 samples), batch 100, "
        f"torch {r['torch']}, {r['threads']} thread(s) of {r['cores']} cores ({r['cpu']}); distillation: median "
        f"over epochs 2-{r['epochs_timed']} of each run; teacher: mean over {r['teacher_epochs']} epochs.", "",
        "| measurement | seconds per epoch |", "|---|---|",
        f"| LSTM teacher training (Adam, MSE) | {r['teacher_epoch_s']:.3f} |",
        f"| AWD, gamma = 0 (no teacher in the loss) | {r['distill_epoch_gamma0_s']:.3f} |",
    ]
    for g in runs:
        lines += [f"| AWD, gamma = {g['gamma']:g}, exact (double back-prop; `fast_path: never`, and `auto` for "
                  f"the LSTM) | {g['exact_s']:.3f} |",
                  f"| AWD, gamma = {g['gamma']:g}, fast path (`fast_path: always`) | {g['fast_s']:.3f} "
                  f"({g['exact_s'] / g['fast_s']:.1f}x faster) |"]
    lines += ["", "Difference of the fast path (not exact for an LSTM):", "",
              f"* relative L2 difference of the gradient of the interpretation loss w.r.t. h (float64, db5, "
              f"batches of 100, trained teacher): median {r['grad_rel_diff_median']:.3g}, "
              f"max {r['grad_rel_diff_max']:.3g};"]
    for g in runs:
        lines.append(f"* gamma = {g['gamma']:g}, after {r['epochs_timed']} epochs from db5 (lambda 0.00188): "
                     f"max |h_exact - h_fast| = {g['h_max_abs_diff']:.3g} (h moved by {g['h_moved_exact']:.3g} "
                     f"exact, {g['h_moved_fast']:.3g} fast); validation interpretation loss exact "
                     f"{g['interpretation_val_exact']:.6g}, fast {g['interpretation_val_fast']:.6g}.")
    exact_s, fast_s = np.mean([g["exact_s"] for g in runs]), np.mean([g["fast_s"] for g in runs])
    paper_points = 5 * 20 * 100  # lambdas x (gamma > 0) x epochs of the reference grid, per seed
    scale = 2936 / r["n_train"]
    lines += ["", "Attribution values agree exactly between the paths (tested in `tests/test_cme_head.py`); only "
              "the gradient w.r.t. the filter differs, by the LSTM's curvature term.", "",
              f"Paper grid estimate (5 lambdas x 20 gammas > 0 x 100 epochs on 2,936 traces, one seed, this "
              f"machine): exact {paper_points * exact_s * scale / 3600:.1f} h, fast path "
              f"{paper_points * fast_s * scale / 3600:.1f} h, plus the gamma = 0 points "
              f"({5 * 100 * r['distill_epoch_gamma0_s'] * scale / 60:.1f} min).", ""]
    text = "\n".join(lines)
    print(text)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(args.out) as tmp:
        tmp.write_text(text)
    with atomic_path(args.out.with_suffix(".json")) as tmp:
        tmp.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
