"""Throughput of the cosmology models: teacher training, AWD distillation and the peak-count heads.

Measures maps per second at the default shapes (128^2 maps, narrow ResNet) and the paper's
shapes (256^2 maps, full ResNet-18) on this machine's CPU:

* teacher epoch: ``awd.teacher.fit_teacher`` for one epoch (forward + backward + Adam);
* distillation epoch: ``awd.distill.distill_path`` with gamma > 0 (TRIM interpretation loss,
  fast path from precomputed input gradients), timed between the per-epoch callbacks; the
  one-off input-gradient pass (one teacher forward + backward per map) is reported separately;
* heads: peak finding + histograms of all 7 filters (height, Laplace, Roberts, 4 wavelet
  kernels) + chi^2 fit and predict.

Maps are mock convergence maps (``domains.cosmology.mock``). Writes
``benchmarks/out/cosmology_models.md``. Usage::

    python benchmarks/bench_cosmology_models.py [--threads 1] [--quick]
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import time
from pathlib import Path

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402
import pywt  # noqa: E402
import torch  # noqa: E402
from threadpoolctl import threadpool_limits  # noqa: E402

from awd.distill import DistillConfig, distill_path  # noqa: E402
from awd.transform import DWT2d  # noqa: E402
from awd.domain import Dataset  # noqa: E402
from awd.io import atomic_path  # noqa: E402
from awd.teacher import TeacherConfig, fit_teacher  # noqa: E402
from domains.cosmology import peaks as pk  # noqa: E402
from domains.cosmology.mock import MapGenerator  # noqa: E402
from domains.cosmology.resnet import ResNet  # noqa: E402

# name -> (map side in pixels, field generated at, side in degrees, ResNet width, batch size, DWT levels)
SHAPES = {"default": (128, 256, 1.75, 8, 32, 3), "paper": (256, 512, 3.5, 64, 64, 4)}


def mock_maps(n: int, npix: int, npix_generate: int, side_deg: float, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``n`` mock maps of two cosmologies (alternating) and their (m_nu, omega_m, a_s)."""
    gens = [MapGenerator(c, npix=npix_generate, side_deg=side_deg, rebin=npix_generate // npix) for c in (0, 1)]
    maps = np.stack([gens[i % 2].generate(seed + i) for i in range(n)]).astype(np.float32)
    params = np.array([[g.params[k] for k in ("m_nu", "omega_m", "a_s")] for g in gens])
    return maps, params[np.arange(n) % 2]


def dataset(maps: np.ndarray, params: np.ndarray) -> Dataset:
    split = np.array(["train"] * len(maps))
    split[-2:] = "val"
    return Dataset(maps, params, ["m_nu", "omega_m", "a_s"], split, np.arange(len(maps)) % 2)


def bench_teacher(ds: Dataset, width: int, batch: int) -> float:
    core = ResNet(width=width, augment=True)
    n = int((ds.split == "train").sum())
    start = time.perf_counter()
    fit_teacher(core, ds, TeacherConfig(epochs=1, batch_size=batch))
    return n / (time.perf_counter() - start)


def bench_distill(maps: np.ndarray, width: int, J: int) -> tuple[float, float]:
    """(maps/s of one distillation epoch, maps/s of the input-gradient pass)."""
    teacher = ResNet(width=width).eval()
    stamps: list[float] = []
    cfg = DistillConfig(J=J, epochs=2, batch_size=min(100, len(maps)), target=1, progress=False)
    # the transform kernels' one-time compilation (or loading from numba's cache) is not the pass
    dwt = DWT2d(cfg.wave, J=1, mode=cfg.mode, dtype=torch.float32)
    dwt.inverse(dwt(torch.zeros(1, 32, 32))).sum().backward()
    start = time.perf_counter()
    distill_path(teacher, maps, maps[:2], lam=0.005, gammas=[0.00368], config=cfg,
                 callback=lambda info: stamps.append(time.perf_counter()))
    epoch = stamps[1] - stamps[0]
    setup = stamps[0] - start - epoch  # gradient pass(es) before the first epoch
    return len(maps) / epoch, (len(maps) + 2) / max(setup, 1e-9)


def bench_heads(maps: np.ndarray, params: np.ndarray) -> float:
    w = pywt.Wavelet("db5")
    kernels = pk.extract_patches(w.rec_lo, w.rec_hi)
    start = time.perf_counter()
    patches, index = pk.peak_patches(maps)
    feats = [pk.histogram_features(pk.values_from_patches(patches, m, kernels), index, len(maps), e)
             for m, e in (("height", pk.HEIGHT_EDGES), ("laplace", pk.FILTER_EDGES), ("roberts", pk.FILTER_EDGES),
                          ("wavelet", pk.wavelet_edges(0.025)))]
    for F in feats:
        pk.NearestCosmologyChi2().fit(F, params).predict(F)
    return len(maps) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--quick", action="store_true", help="fewer maps (a smoke run)")
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out" / "cosmology_models.md")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    counts = {"default": (64, 200, 400), "paper": (16, 32, 200)} if not args.quick else \
        {"default": (16, 20, 40), "paper": (4, 8, 20)}
    rows = []
    with threadpool_limits(limits=args.threads):
        for name, (npix, npix_gen, side, width, batch, J) in SHAPES.items():
            n_teacher, n_distill, n_heads = counts[name]
            maps, params = mock_maps(max(n_teacher + 2, n_distill, n_heads), npix, npix_gen, side)
            teacher = bench_teacher(dataset(maps[:n_teacher + 2], params[:n_teacher + 2]), width, batch)
            distill, grads = bench_distill(maps[:n_distill], width, J)
            heads = bench_heads(maps[:n_heads], params[:n_heads])
            rows.append((name, npix, width, teacher, distill, grads, heads))
            print(f"{name}: teacher {teacher:.1f}, distill {distill:.1f} (gradients {grads:.1f}), heads {heads:.1f} maps/s",
                  flush=True)
    lines = ["# Cosmology models: throughput (maps per second)", "",
             f"CPU: {platform.processor() or platform.machine()}, {os.cpu_count()} logical cores; "
             f"torch {torch.__version__}, {args.threads} thread(s){' (quick run)' if args.quick else ''}.", "",
             "| shapes | map | ResNet width | teacher epoch | distill epoch (gamma > 0) | input-gradient pass | "
             "heads (7 filters + chi^2) |", "|---|---|---|---|---|---|---|"]
    for name, npix, width, teacher, distill, grads, heads in rows:
        lines.append(f"| {name} | {npix}x{npix} | {width} | {teacher:.1f} | {distill:.1f} | {grads:.1f} | {heads:.0f} |")
    lines += ["", "Teacher: one Adam epoch with dihedral augmentation (`awd.teacher.fit_teacher`). Distill: "
              "one epoch of `awd.distill.distill_path` (db5, J=3 at 128^2 and 4 at 256^2 as the configs, batch 100, fast TRIM path), excluding the "
              "one-off input-gradient pass shown in its own column. Heads: `domains.cosmology.peaks` peak "
              "finding, histograms and the chi^2 nearest-cosmology fit + predict.", ""]
    with atomic_path(args.out) as tmp:
        tmp.write_text("\n".join(lines))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
