"""CME detection, linking and track-processing speed, and accuracy against simulator truth.

Speed: frames per second of ``detect_movie`` (prefilter + LoG candidates + batched Gaussian
fits of clathrin, auxilin fitted at the clathrin positions) on 512 x 512 simulated frames with
~1,000 spots per frame, on 1 and 2 threads (target >= 5 frames/s on 2 cores); time of
trackpy and laptrack linking and of the cmeAnalysis track processing on the same movie.

Accuracy (``domains.cme.tracking.accuracy``): detection precision / recall by amplitude bin (Hungarian
matching within 2 px, scored inside the ceil(4 sigma) border cmeAnalysis cannot fit), link
recall / precision and whole-track recovery, at the simulator's default density on a 256^2
cell, for the default detection level and for cmeAnalysis' alpha = 0.05.

Writes ``benchmarks/out/cme_detect.md`` (and ``.json``).

    python benchmarks/bench_cme_detect.py [--frames 40] [--quick]
"""
from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from awd.io import atomic_path  # noqa: E402
from benchmarks.common import timed  # noqa: E402
from domains.cme.tracking import accuracy as acc  # noqa: E402
from domains.cme.tracking.detect import DetectionConfig, detect_movie  # noqa: E402
from domains.cme.tracking.simulate import SimulationConfig, simulate_cell  # noqa: E402
from domains.cme.tracking.link import link  # noqa: E402
from domains.cme.tracking.processing import process_tracks  # noqa: E402


def speed(n_frames: int, size: int, spots: int, seed: int) -> dict:
    """512^2 movie with ~``spots`` clathrin spots per frame (cell covering 90 % of the frame)."""
    coverage = 0.9
    sim = SimulationConfig.from_dict({"height": size, "width": size, "n_frames": n_frames,
                                      "mask_coverage": [coverage, coverage],
                                      "density": spots / (coverage * size * size)})
    t_sim, cell = timed(lambda: simulate_cell(sim, seed))
    truth = cell.truth_detections[cell.truth_detections["A_clathrin"] > 0]
    out = {"size": size, "frames": n_frames, "true_spots_per_frame": len(truth) / n_frames, "simulate_s": t_sim}
    out["load_average_before"] = os.getloadavg()[0]
    for threads in (1, 2):
        cpu0 = os.times()
        t, (det, masks) = timed(lambda: detect_movie(cell.movie, {}, threads=threads, return_masks=True))
        cpu1 = os.times()
        cpu = (cpu1.user + cpu1.system + cpu1.children_user + cpu1.children_system
               - cpu0.user - cpu0.system - cpu0.children_user - cpu0.children_system)
        out[f"detect_{threads}t_s"] = t
        out[f"detect_{threads}t_fps"] = n_frames / t
        out[f"detect_{threads}t_cpu_s_per_frame"] = cpu / n_frames
    out["load_average_after"] = os.getloadavg()[0]
    out["detections_per_frame"] = len(det) / n_frames
    for linker in ("trackpy", "laptrack"):
        t, linked = timed(lambda: link(det, {"tracking": {"linker": linker}}))
        out[f"link_{linker}_s"] = t
        out[f"link_{linker}_tracks"] = int(linked["track_id"].max()) + 1
        if linker == "trackpy":
            default_linked = linked
    t, (tracks, frames) = timed(lambda: process_tracks(default_linked, cell.movie, masks, {}, cell=1,
                                                       cell_mask=cell.mask))
    out["process_s"] = t
    out["processed_tracks"] = len(tracks)
    margin = math.ceil(4 * sim.psf_sigma_clathrin)
    out["accuracy_dense"] = accuracy(default_linked, truth, (size, size), margin)
    return out


def accuracy(linked, truth, shape, margin) -> dict:
    pred = acc.interior(linked, shape, margin)
    true = acc.interior(truth, shape, margin)
    m = acc.match_detections(pred, true)
    det = acc.detection_metrics(pred, true, m)
    lnk = acc.link_metrics(pred, true, m)
    trk = acc.track_metrics(pred, true, m)
    return {"detection": det, "linking": lnk, "tracks": trk}


def accuracy_default(n_frames: int, seed: int) -> dict:
    sim = SimulationConfig.from_dict({"height": 256, "width": 256, "n_frames": n_frames})
    cell = simulate_cell(sim, seed)
    truth = cell.truth_detections[cell.truth_detections["A_clathrin"] > 0]
    margin = math.ceil(4 * sim.psf_sigma_clathrin)
    out = {}
    for alpha in (DetectionConfig().alpha, 0.05):
        det = detect_movie(cell.movie, {"detection": {"alpha": alpha}}, threads=2)
        for linker in ("trackpy", "laptrack"):
            linked = link(det, {"tracking": {"linker": linker}})
            out[f"alpha={alpha} {linker}"] = accuracy(linked, truth, (256, 256), margin)
    return out


def fmt(v) -> str:
    return f"{v:.3f}" if isinstance(v, float) else str(v)


def report(sp: dict, acc_runs: dict, args) -> str:
    lines = ["# CME detection, linking and accuracy", "",
             f"Machine: {platform.machine()}, {os.cpu_count()} CPUs, Python {platform.python_version()}; "
             f"numpy {np.__version__}.", "",
             f"## Speed ({sp['size']}x{sp['size']}, {sp['frames']} frames, "
             f"{sp['true_spots_per_frame']:.0f} true spots and {sp['detections_per_frame']:.0f} "
             "detections per frame)", "",
             f"Load average of the machine (shared with other jobs): {sp['load_average_before']:.1f} before, "
             f"{sp['load_average_after']:.1f} after the detection runs; the CPU seconds per frame do not depend on it.",
             "", "| step | seconds | rate |", "|---|---|---|"]
    for t in (1, 2):
        lines.append(f"| detect + fit, clathrin + auxilin ({t} process{'es' * (t > 1)}) | {sp[f'detect_{t}t_s']:.2f} | "
                     f"{sp[f'detect_{t}t_fps']:.2f} frames/s ({sp[f'detect_{t}t_cpu_s_per_frame']:.3f} CPU s/frame) |")
    for linker in ("trackpy", "laptrack"):
        lines.append(f"| link, {linker} (search 3 px, memory 2) | {sp[f'link_{linker}_s']:.2f} | "
                     f"{sp[f'link_{linker}_tracks']} segments |")
    lines.append(f"| track processing (gaps, buffers, categories, slave flags) | {sp['process_s']:.2f} | "
                 f"{sp['processed_tracks']} tracks |")
    target = "met" if sp["detect_2t_fps"] >= 5 else "NOT met"
    cpu_rate = 2 / sp["detect_1t_cpu_s_per_frame"]
    lines += ["", f"Target >= 5 frames/s on 2 cores: {target} in wall time ({sp['detect_2t_fps']:.2f} frames/s); "
              f"from the CPU cost, two free cores give {cpu_rate:.1f} frames/s.", ""]
    lines += ["## Accuracy vs simulator truth", "",
              "Scored inside the ceil(4 sigma) = 5 px image border (cmeAnalysis ignores windows that leave "
              "the image). Link precision counts links whose two ends match true spots; `precision_all` counts "
              "all predicted links. Track recovery: true tracks with >= 5 matched detections held >= 80 % by "
              "one predicted track; `frames`: the same against all true frames (dim phases included).", "",
              "| run | det. precision | det. recall | recall <500 / 500-800 / 800-1200 / 1200-2000 / >2000 | "
              "link recall | link precision (all) | track recovery (frames) | lifetime error median [IQR] |",
              "|---|---|---|---|---|---|---|---|"]
    runs = dict(acc_runs)
    runs[f"dense 512^2 (alpha={DetectionConfig().alpha}, trackpy)"] = sp["accuracy_dense"]
    for name, r in runs.items():
        d, lk, t = r["detection"], r["linking"], r["tracks"]
        bins = " / ".join(f"{b['recall']:.2f}" for b in d["recall_by_amplitude"])
        lines.append(f"| {name} | {d['precision']:.3f} | {d['recall']:.3f} | {bins} | {lk['recall']:.3f} | "
                     f"{lk['precision']:.3f} ({lk['precision_all']:.3f}) | {t['recovered_fraction']:.3f} "
                     f"({t['recovered_fraction_frames']:.3f}) | {t['lifetime_error_median']:.0f} "
                     f"[{t['lifetime_error_iqr'][0]:.0f}, {t['lifetime_error_iqr'][1]:.0f}] |")
    lines += ["", f"Settings: {vars(args)}.", ""]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=40, help="frames of the 512^2 speed movie")
    parser.add_argument("--accuracy-frames", type=int, default=100, help="frames of the 256^2 accuracy cell")
    parser.add_argument("--spots", type=int, default=1000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--quick", action="store_true", help="small counts, for a smoke run")
    args = parser.parse_args()
    if args.quick:
        args.frames, args.accuracy_frames = 8, 30
    sp = speed(args.frames, 512, args.spots, args.seed)
    acc_runs = accuracy_default(args.accuracy_frames, args.seed + 1)
    text = report(sp, acc_runs, args)
    print(text)
    out = ROOT / "benchmarks" / "out"
    with atomic_path(out / "cme_detect.md") as tmp:
        tmp.write_text(text)
    with atomic_path(out / "cme_detect.json") as tmp:
        tmp.write_text(json.dumps({"speed": sp, "accuracy": acc_runs}, indent=2, default=float))


if __name__ == "__main__":
    main()
