"""Peak memory (RSS) and time of the cosmology stages at the paper's data size.

Every stage runs as the workflow runs it (``awd.pipeline.run_<stage>`` in a child process, the
``cosmology`` section of ``workflow/config/paper-cpu.yaml``, 2 threads) under ``/usr/bin/time -v``;
the results are kept per stage in ``benchmarks/out/cosmology_memory.json`` (a stage measured again
replaces its entry) and rendered into ``benchmarks/out/cosmology_memory.md``.

* ``ingest``: a paper-sized MassiveNuS tree (10 cosmologies x 2,500 FITS maps of 256^2, 3.5 deg;
  ``--tree-base`` genuine mock maps per cosmology from ``write_mock_tree``, the other realisations
  hard links to them) -> ``dataset.npz`` (6.5 GB of float32), with the paper's split.
* ``teacher-all``: the teacher on the whole train split (``max_train`` null, 20,000 maps: the
  standardisation and fingerprint pass over all of them, then training) stopped after
  ``--teacher-seconds`` seconds of training.
* ``teacher``: a whole teacher stage on seeded subsets (``--teacher-train`` / ``--teacher-val`` maps,
  one epoch) including the predictions of all 2,000 test maps; its weights feed ``distill``.
* ``distill``: distillation job 0 (lambda 0.005) bounded to one epoch, two gammas and
  ``--distill-train`` training maps; the whole val split (3,000 maps) and its input gradients
  are held as in the real job.
* ``distill-all`` (only when asked for): one plain distillation path on the whole train split
  (``max_train`` null, 20,000 maps, as ``paper.yaml``) and the val split, both index views of
  the memory-mapped dataset, one epoch, gamma 0.00368, with a narrow ResNet teacher (width 8):
  the data the distiller holds (maps, input gradients in their scratch memory map) at full
  size; the ResNet-18 teacher's own working set per batch is what the ``distill`` row holds.
* ``distill-all-resnet18`` (only when asked for): the same path with the paper's teacher, a
  full ResNet-18 (untrained: memory and time do not depend on its weights), whose input
  gradients of all 23,000 train and val maps take most of the time (about 40 minutes here).
* ``heads`` (only when asked for in ``--stages``): ``CosmologyDomain.fit_heads`` with the paper's
  heads settings on a dataset built without holding X (``--base`` genuine maps per cosmology,
  the other realisations symmetries and periodic shifts of them), an untrained ResNet-18 and
  ``--grid`` learned-wavelet stand-ins.

    python benchmarks/bench_cosmology_memory.py --workdir /tmp/cosmo-memory [--stages ingest,teacher,distill]
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import re
import signal
import subprocess
import sys
import time
import zipfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import numpy as np  # noqa: E402

from awd.io import atomic_path  # noqa: E402

SPLIT = (2000, 300, 200)  # realisations per cosmology (AWD)
WAVELETS = ("db5", "sym5", "coif2", "db4", "sym6", "db6")
STAGES = ("ingest", "teacher-all", "teacher", "distill", "distill-all", "distill-all-resnet18", "heads")
OUT_MD = ROOT / "benchmarks" / "out" / "cosmology_memory.md"


def _variant(m: np.ndarray, k: int) -> np.ndarray:
    """The k-th variant of a periodic map: one of the 8 symmetries of the square, then a shift."""
    d, shift = k % 8, k // 8
    out = np.rot90(m, d % 4)
    if d >= 4:
        out = out.T
    if shift:
        out = np.roll(out, (37 * shift % m.shape[0], 91 * shift % m.shape[1]), axis=(0, 1))
    return np.ascontiguousarray(out)


def build(path: Path, n_cosmo: int, per: int, base: int, npix: int = 256) -> dict:
    """Write the dataset file member by member (X streamed map by map)."""
    from domains.cosmology.mock import MapGenerator, cosmology_seed

    split_counts = [round(s * per / sum(SPLIT)) for s in SPLIT]
    split_counts[0] = per - sum(split_counts[1:])
    split_one = np.repeat(["train", "val", "test"], split_counts)
    n = n_cosmo * per
    start = time.perf_counter()
    params = []
    with atomic_path(path) as tmp, zipfile.ZipFile(tmp, "w", zipfile.ZIP_STORED, allowZip64=True) as zf:
        with zf.open("X.npy", "w", force_zip64=True) as fh:
            np.lib.format.write_array_header_2_0(fh, {"descr": "<f4", "fortran_order": False,
                                                      "shape": (n, npix, npix)})
            for c in range(n_cosmo):
                gen = MapGenerator(c, npix=2 * npix, side_deg=3.5, rebin=2)
                params.append([gen.params[k] for k in ("m_nu", "omega_m", "a_s")])
                maps = [gen.generate(cosmology_seed(c, gen.params, r)).astype(np.float32) for r in range(base)]
                for r in range(per):
                    fh.write(_variant(maps[r % base], r // base).astype("<f4").tobytes())
                print(f"cosmology {c}: {per} maps ({time.perf_counter() - start:.0f} s)", flush=True)
        small = {"y": np.repeat(np.asarray(params, np.float32), per, axis=0), "split": np.tile(split_one, n_cosmo),
                 "group": np.repeat(np.arange(n_cosmo, dtype=np.int64), per),
                 "target_names": np.asarray(["m_nu", "omega_m", "a_s"], dtype="U64"),
                 "meta": np.asarray(json.dumps({"source": "memory benchmark", "map_size": npix})),
                 "extra__realisation": np.tile(np.arange(per, dtype=np.int64), n_cosmo)}
        for name, arr in small.items():
            with zf.open(f"{name}.npy", "w", force_zip64=True) as fh:
                np.lib.format.write_array(fh, arr, allow_pickle=False)
    return {"maps": n, "seconds": time.perf_counter() - start, "bytes": path.stat().st_size}


def build_tree(root: Path, n_cosmo: int, per: int, base: int) -> dict:
    """A paper-sized MassiveNuS tree: ``base`` genuine mock maps per cosmology (512^2 -> 256^2
    over 3.5 deg), realisations ``base + 1 .. per`` hard links to them (no extra disk)."""
    from domains.cosmology.fits_io import map_file_name
    from domains.cosmology.mock import write_mock_tree

    start = time.perf_counter()
    written = write_mock_tree(root, cosmologies=list(range(n_cosmo)), n_maps=base, npix_generate=512, npix_out=256,
                              side_deg=3.5, seed=0, threads=2)
    for folder in sorted({p.parent for p in written}):
        for r in range(base + 1, per + 1):
            os.link(folder / map_file_name(1.0, 1 + (r - 1) % base), folder / map_file_name(1.0, r))
    return {"maps": n_cosmo * per, "genuine": len(written), "seconds": time.perf_counter() - start}


def paper_cpu_section(**overrides) -> dict:
    """The validated ``cosmology`` section of paper-cpu.yaml with ``overrides`` ({section: {key: value}})."""
    from awd.config import load_yaml, validate
    from awd.domain import get_domain

    section = load_yaml(ROOT / "workflow" / "config" / "paper-cpu.yaml")["cosmology"]
    for name, values in overrides.items():
        section[name] = {**section.get(name, {}), **values}
    return validate(section, get_domain("cosmology", "domains.cosmology").schema_path, where="cosmology")


class _TimeUp(Exception):
    pass


def child(stage_name: str, work: Path, args) -> None:
    """One stage, as the workflow's job runs it (the child process under ``/usr/bin/time -v``)."""
    from awd import pipeline

    data = work / "data" / "dataset.npz"
    log = work / f"{stage_name}.log"
    start = time.perf_counter()
    if stage_name == "ingest":
        with pipeline.stage("ingest", str(log), args.threads):
            pipeline.run_ingest("cosmology", paper_cpu_section(), work / "tree", work / "data", data,
                                threads=args.threads)
    elif stage_name in ("teacher", "teacher-all"):
        from domains.cosmology.domain import CosmologyDomain

        steps = [0]
        build = CosmologyDomain.build_teacher

        def counted(self, cfg, ds):  # counts training steps (forward passes in training mode)
            core = build(self, cfg, ds)
            core.register_forward_pre_hook(lambda m, a: steps.__setitem__(0, steps[0] + m.training))
            return core

        CosmologyDomain.build_teacher = counted
        if stage_name == "teacher":
            cfg = paper_cpu_section(teacher={"epochs": 1, "max_train": args.teacher_train, "max_val": args.teacher_val})
            out = work / "teacher"
        else:
            cfg = paper_cpu_section(teacher={"epochs": 1, "max_train": None, "max_val": None})
            out = work / "teacher_all"
            first = [None]

            def stop(*_):
                raise _TimeUp

            def arm(m, a):  # the alarm starts with the first training step
                if m.training and first[0] is None:
                    first[0] = time.perf_counter()
                    signal.signal(signal.SIGALRM, stop)
                    signal.alarm(args.teacher_seconds)

            CosmologyDomain.build_teacher = lambda self, c, d: _armed(counted(self, c, d), arm)
        out.mkdir(parents=True, exist_ok=True)
        try:
            with pipeline.stage("teacher", str(log), args.threads):
                pipeline.run_teacher("cosmology", cfg, data, out / "model.pt", out / "metrics.json")
        except _TimeUp:
            print(f"SETUP_SECONDS {first[0] - start:.1f}", flush=True)
        print(f"TRAIN_STEPS {steps[0]}", flush=True)
    elif stage_name == "distill":
        cfg = paper_cpu_section(distill={"epochs": 1, "gammas": [0.0, 0.00368], "max_train": args.distill_train})
        with pipeline.stage("distill", str(log), args.threads):
            pipeline.run_distill("cosmology", cfg, data, work / "teacher" / "model.pt", 0, work / "distill_0.json")
    elif stage_name in ("distill-all", "distill-all-resnet18"):
        distill_all(data, work / "distill_all.pt", args.threads, full_teacher=stage_name.endswith("resnet18"))
    elif stage_name == "heads":
        heads(work / f"dataset_{args.per}.npz", work / "heads_out", args.grid, args.threads)
    print(f"STAGE_SECONDS {time.perf_counter() - start:.1f}", flush=True)


def distill_all(data: Path, checkpoint: Path, threads: int, full_teacher: bool = False) -> None:
    """One distillation path on every training map, read as index views (see the module doc);
    the teacher is a narrow ResNet or, with ``full_teacher``, the paper's ResNet-18."""
    import torch

    from awd.distill import DistillConfig, distill_path
    from awd.domain import Dataset
    from domains.cosmology.resnet import ResNet

    torch.set_num_threads(threads)
    ds = Dataset.load(data)
    section = paper_cpu_section()["distill"]
    cfg = DistillConfig.from_dict({**{k: v for k, v in section.items() if k not in ("lambdas", "gammas", "target")},
                                   "lambdas": [0.005], "gammas": [0.00368], "epochs": 1, "max_train": None,
                                   "target": 1, "progress": False})  # target 1: Omega_m
    teacher = (ResNet(n_outputs=3, seed=0) if full_teacher
               else ResNet(width=8, blocks=(1, 1), n_outputs=3, stem="resnet", seed=0)).eval()
    distill_path(teacher, ds.view("train"), ds.view("val"), lam=0.005, gammas=cfg.gammas, config=cfg,
                 checkpoint=checkpoint)
    checkpoint.unlink(missing_ok=True)


def _armed(core, hook):
    core.register_forward_pre_hook(hook)
    return core


def heads(dataset: Path, out: Path, n_grid: int, threads: int) -> None:
    """The heads stage as the workflow runs it."""
    import pywt
    import torch

    from awd.domain import Dataset, get_domain
    from domains.cosmology.resnet import ResNet

    torch.set_num_threads(threads)
    dom = get_domain("cosmology", "domains.cosmology")
    cfg = {"heads": {"edge_candidates": [0.015, 0.02, 0.025, 0.03, 0.035], "knn_neighbors": 10, "chunk_size": 512,
                     "attribution_top_k": 0.01}, "bootstrap": {"n": 10000, "seed": 1}, "teacher": {"batch_size": 64}}
    grid = [{"h": np.asarray(pywt.Wavelet(w).rec_lo), "lam": 0.005, "gamma": 0.0 if i == 0 else 0.00368, "J": 4,
             "mode": "zero"} for i, w in enumerate(WAVELETS[:n_grid])]
    ds = Dataset.load(dataset)
    teacher = ResNet(width=64, blocks=(2, 2, 2, 2), seed=0).eval()  # the paper's ResNet-18 (untrained)
    dom.fit_heads(cfg, ds, grid, teacher, out, threads=threads)


def _load() -> str:
    return ", ".join(f"{v:.2f}" for v in os.getloadavg())


def measure(stage_name: str, args) -> dict:
    """Run one stage in a child under ``/usr/bin/time -v``; its peak RSS, wall time and notes."""
    before = _load()
    cmd = ["/usr/bin/time", "-v", sys.executable, __file__, "--workdir", str(args.workdir), "--threads",
           str(args.threads), "--per", str(args.per), "--grid", str(args.grid), "--teacher-seconds",
           str(args.teacher_seconds), "--teacher-train", str(args.teacher_train), "--teacher-val",
           str(args.teacher_val), "--distill-train", str(args.distill_train), "--child", stage_name]
    proc = subprocess.run(cmd, capture_output=True, text=True, env={**os.environ, "OMP_WAIT_POLICY": "PASSIVE"})
    if proc.returncode:
        sys.exit(f"{stage_name} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    found = {key: m.group(1) for key in ("STAGE_SECONDS", "SETUP_SECONDS", "TRAIN_STEPS")
             if (m := re.search(rf"{key} (\S+)", proc.stdout))}
    rss_kb = int(re.search(r"Maximum resident set size \(kbytes\): (\d+)", proc.stderr).group(1))
    wall = re.search(r"Elapsed \(wall clock\) time \(h:mm:ss or m:ss\): (\S+)", proc.stderr).group(1)
    result = {"rss_gib": round(rss_kb / 2**20, 2), "wall": wall, "seconds": float(found["STAGE_SECONDS"]),
              "load_before": before, "load_after": _load(), "threads": args.threads,
              "measured": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())}
    if "TRAIN_STEPS" in found:
        result["train_steps"] = int(found["TRAIN_STEPS"])
    if "SETUP_SECONDS" in found:
        result["setup_seconds"] = float(found["SETUP_SECONDS"])
    print(stage_name, result, flush=True)
    return result


def what_ran(stage_name: str, r: dict) -> str:
    """The table's description of one measured run."""
    if stage_name == "ingest":
        return "`run_ingest`: 25,000 FITS files -> dataset.npz (paper split)"
    if stage_name == "teacher-all":
        return (f"`run_teacher`, `max_train: null` (all 20,000 training maps): standardisation and fingerprint "
                f"over all of them ({r.get('setup_seconds', float('nan')):.0f} s), then {r.get('train_steps', 0)} "
                f"training steps of 64 maps; stopped after {r.get('teacher_seconds', '?')} s of training")
    if stage_name == "teacher":
        return (f"`run_teacher`, whole stage: 1 epoch on a seeded subset of {r.get('max_train')} maps "
                f"({r.get('train_steps', 0)} steps), val loss on {r.get('max_val')} maps, predictions of the "
                "2,000 test maps")
    if stage_name.startswith("distill-all"):
        teacher = ("the paper's ResNet-18 teacher (width 64, 2-2-2-2 blocks)" if stage_name.endswith("resnet18")
                   else "narrow ResNet teacher (width 8)")
        return ("`distill_path`, `max_train: null`: 1 epoch (gamma 0.00368) on all 20,000 training maps and "
                "the 3,000 val maps as index views of the memory-mapped dataset, input gradients of the train "
                f"split (5.2 GB) in a scratch memory map; {teacher}")
    if stage_name == "distill":
        return (f"`run_distill` job 0 (lambda 0.005), 1 epoch x 2 gammas on {r.get('max_train')} training maps; "
                "input gradients and loss terms of all 3,000 val maps")
    return (f"`fit_heads` on 25,000 maps: the paper's edges, 10,000 bootstrap resamples, untrained ResNet-18, "
            f"learning curve, DB5 + {r.get('grid', 3)} grid wavelets")


def render(results: dict, out: Path) -> None:
    rows = ["| stage | what ran (10 cosmologies x 2,500 maps of 256^2, split 2,000 / 300 / 200 per cosmology; "
            "X 6.55 GB) | peak RSS | wall time | load average before; after (1/5/15 min) | measured |",
            "|---|---|---:|---:|---|---|"]
    for name in STAGES:
        if name in results:
            r = results[name]
            rows.append(f"| {name} | {what_ran(name, r)} | **{r['rss_gib']:.2f} GiB** | {r['wall']} | "
                        f"{r['load_before']}; {r['load_after']} | {r['measured']} |")
    limit = max(r["rss_gib"] for r in results.values())
    lines = ["# Cosmology stages: peak memory at the paper's data size", "",
             f"CPU: {platform.machine()}, {os.cpu_count()} logical cores; every stage a child process under "
             "`/usr/bin/time -v` (maximum resident set size), 2 threads, on a machine shared with other jobs "
             "(wall times depend on the load shown). Produced by `benchmarks/bench_cosmology_memory.py`; "
             "the stages run as the workflow runs them (`awd.pipeline.run_<stage>`, the cosmology section of "
             "`workflow/config/paper-cpu.yaml`), bounded in time where noted.", "", *rows, "",
             f"Largest peak: **{limit:.2f} GiB** (goal: at most 8 GiB per stage).", "",
             "How memory stays bounded: ingest reads the FITS files 512 at a time into a memory-mapped scratch "
             "file (unlinked at once) whose pages are handed back after every chunk, and `Dataset.save` streams "
             "X into `dataset.npz` chunk by chunk. Teacher and distillation read X memory-mapped inside "
             "`dataset.npz` through index views (`awd.domain.Rows`): every batch is gathered from the map by "
             "row number and its pages are handed back, so no split is ever copied; the teacher's input "
             "standardisation and data fingerprint stream over the training maps (float64 sums above 1 GiB). "
             "The distiller holds what it trains on: its `max_train` subset and the val split with their "
             "input gradients (3,000 val maps: 0.8 GB each at 256^2). Heads: X streamed in chunks of 512 maps, "
             "the peaks kept as float32 3x3 patches (about 36 bytes per peak) and reduced to histograms chunk "
             "by chunk; each wavelet is scored in one streaming pass.", "",
             "The distiller reads its maps the same way (index views, batch by batch) and keeps input "
             "gradients above 1 GiB in a scratch memory map whose pages are handed back after every chunk, so "
             "`distill.max_train: null` (`paper.yaml`: all 20,000 training maps, 2 x 5.2 GB of maps and "
             "gradients) holds about what a subset does: the `distill-all` row. With the paper's ResNet-18 "
             "teacher the same job (`distill-all-resnet18`) adds the teacher's input-gradient working set per "
             "batch of 100 and stays below the `distill` row (the workflow's job on a 100-map subset); most "
             "of its time is the input gradients of the 23,000 maps. Before, the "
             "distiller held its training maps and their gradients in memory: about 15 GB for "
             "`max_train: null` (an estimate).", "",
             "Before X was memory-mapped and read through index views, the same stages measured at 2,500 and "
             "5,000 maps (17:03-17:06 UTC the same day, `/usr/bin/time -v`): ingest 1.18 and 1.82 GiB (about "
             "one copy of X: ~7.0 GiB extrapolated to 25,000 maps), teacher 3.81 GiB at 5,000 maps in its first "
             "100 s (the train "
             "and val splits copied by `Dataset.subset`: ~8.5 GiB or more extrapolated); the distillation "
             "copied the train and val splits too (about 6 GB at this size) before taking its subset.", "",
             "Data: ingest, teacher and distill use the dataset written by the measured ingest (a mock tree of "
             "genuine maps repeated by hard links: the maps only need the right size); heads used 250 genuine "
             "mock maps per cosmology and symmetries and periodic shifts of them (same peak density).", ""]
    with atomic_path(out) as tmp:
        tmp.write_text("\n".join(lines))
    print("\n".join(lines))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--workdir", type=Path, required=True, help="where the tree and the 6.5 GB dataset go")
    parser.add_argument("--stages", default="ingest,teacher-all,teacher,distill",
                        help=f"comma-separated, of {', '.join(STAGES)}")
    parser.add_argument("--per", type=int, default=2500, help="maps per cosmology (paper 2,500)")
    parser.add_argument("--base", type=int, default=250, help="genuine mock maps per cosmology (heads data)")
    parser.add_argument("--tree-base", type=int, default=50, help="genuine mock maps per cosmology (FITS tree)")
    parser.add_argument("--grid", type=int, default=3, help="learned-wavelet stand-ins in the heads' grid")
    parser.add_argument("--teacher-seconds", type=int, default=180, help="training time of teacher-all")
    parser.add_argument("--teacher-train", type=int, default=320, help="teacher.max_train of the teacher run")
    parser.add_argument("--teacher-val", type=int, default=128, help="teacher.max_val of the teacher run")
    parser.add_argument("--distill-train", type=int, default=100, help="distill.max_train of the distill run")
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(args.child, args.workdir, args)
        return
    stages = [s.strip() for s in args.stages.split(",") if s.strip()]  # empty: re-render the recorded results
    unknown = set(stages) - set(STAGES)
    if unknown:
        sys.exit(f"unknown stage(s) {sorted(unknown)}; choose from {STAGES}")
    if args.per != 2500:
        sys.exit("--per must be 2500: the recorded numbers are for the paper's size")
    args.workdir.mkdir(parents=True, exist_ok=True)
    store = OUT_MD.with_suffix(".json")
    results = json.loads(store.read_text()) if store.exists() else {}
    if "ingest" in stages and not (args.workdir / "tree").exists():
        print("tree:", build_tree(args.workdir / "tree", 10, args.per, args.tree_base), flush=True)
    if any(s.startswith("distill-all") for s in stages) and not (args.workdir / "data" / "dataset.npz").exists():
        (args.workdir / "data").mkdir(parents=True, exist_ok=True)
        print("dataset:", build(args.workdir / "data" / "dataset.npz", 10, args.per, 4), flush=True)
    if "heads" in stages and not (args.workdir / f"dataset_{args.per}.npz").exists():
        print("heads data:", build(args.workdir / f"dataset_{args.per}.npz", 10, args.per, args.base), flush=True)
    for name in [s for s in STAGES if s in stages]:
        result = measure(name, args)
        result.update({"teacher-all": {"teacher_seconds": args.teacher_seconds},
                       "teacher": {"max_train": args.teacher_train, "max_val": args.teacher_val},
                       "distill": {"max_train": args.distill_train},
                       "heads": {"grid": args.grid}}.get(name, {}))
        results[name] = result
        with atomic_path(store) as tmp:
            tmp.write_text(json.dumps(results, indent=2, sort_keys=True) + "\n")
    render(results, OUT_MD)


if __name__ == "__main__":
    main()
