"""CME auxilin labels with perfect detection and linking: how much of the long-track goals is
lost to detection, how much to linking, and what the labels reach with neither (issue 13).

Each 144 x 144 'long aux-' cell of ``bench_cme_detect.py`` (300 frames, 0.0029 pits/px^2, 60 %
of abortive pits living ~60 s, so that aux- tracks > 80 s are numerous; seeds 3, 5, 7, ...: the
bench's cells first) is processed three ways and scored by ``accuracy.score_movie``:

* linker: the ingest's ``detect_movie`` -> ``link_with_pairs`` -> ``process_tracks``;
* oracle linking: the same detections linked by their true tracks (``accuracy.oracle_link``);
* oracle detection and linking: ``accuracy.oracle_detect`` (every true spot fitted at its true
  position with its neighbours in the model, kept where its amplitude is significant), linked
  by the true tracks.

The same track processing and labels run on all three, so the differences are what detection
and linking cost; the third row is what the labels themselves reach on this simulator. Rates
are pooled over the cells (binomial SE). Writes ``benchmarks/out/cme_bounds.md`` and ``.json``::

    nice -n 15 python benchmarks/bench_cme_bounds.py --cells 64
"""
from __future__ import annotations

import argparse
import json
import math
import multiprocessing
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from awd.io import atomic_path  # noqa: E402
from benchmarks.bench_cme_detect import DENSITY, LONG_ABORTIVE, movie_config, project_config  # noqa: E402
from benchmarks.common import timed  # noqa: E402
from domains.cme.tracking import accuracy as acc  # noqa: E402
from domains.cme.tracking.detect import detect_movie  # noqa: E402
from domains.cme.tracking.pairs import link_with_pairs  # noqa: E402
from domains.cme.tracking.processing import process_tracks  # noqa: E402
from domains.cme.tracking.simulate import simulate_cell  # noqa: E402

WAYS = {"linker": "linker", "oracle_link": "oracle linking", "oracle_detect": "oracle detection and linking"}

#: (column, rate key, population key) of the table; the rates are pooled over the cells' populations
RATES = (("aux+ sensitivity", "aux_sensitivity", "n_aux_positive"),
         ("aux+ FP", "aux_false_positive_rate", "n_aux_negative"),
         ("sens. >80 s", "aux_sensitivity_long", "n_aux_positive_long"),
         ("FP >80 s", "aux_false_positive_rate_long", "n_aux_negative_long"))


def run_cell(job: tuple[float, int]) -> dict:
    """The three scorings of one long-aux- cell (PSF ``sigma``, ``seed``)."""
    sigma, seed = job
    sim = movie_config(144, 300, DENSITY, sigma, **LONG_ABORTIVE)
    cell = simulate_cell(sim, seed)
    cfg = project_config(sim)
    det, masks = detect_movie(cell.movie, cfg, 1, return_masks=True)
    linked = {"linker": link_with_pairs(det, cell.movie, cfg),
              "oracle_link": acc.oracle_link(det, cell.truth_detections),
              "oracle_detect": acc.oracle_link(acc.oracle_detect(cell.movie, cell.truth_detections, masks, cfg),
                                               cell.truth_detections)}
    out = {"seed": seed}
    for way, table in linked.items():
        tracks, frames = process_tracks(table, cell.movie, masks, cfg)
        out[way] = acc.score_movie(cell.truth_detections, cell.truth_tracks, table, shape=cell.movie.shape,
                                   sigma=sigma, project_tracks=tracks, project_rows=frames)
    return out


def pooled(cells: list[dict], way: str, rate: str, population: str) -> tuple[int, int]:
    """(hits, population) of ``rate`` summed over the cells."""
    hits = sum(round(c[way][rate] * c[way][population]) for c in cells if c[way][population])
    return hits, sum(c[way][population] for c in cells)


def report(results: dict, args, wall_s: float) -> str:
    L = ["# CME auxilin labels with perfect detection and linking", "",
         f"{args.cells} long-aux- cells per PSF (144^2, 300 frames, {DENSITY} pits/px^2, seeds 3-{1 + 2 * args.cells}; "
         f"the first 32 are those of `bench_cme_detect.py`), {wall_s / 60:.1f} min on {args.processes} processes. "
         "Rates pooled over the cells (± binomial SE); whole and merged are means over cells. "
         "`FP >80 s` causes as `accuracy.aux_false_positive_causes` (merged / neighbour / no auxilin near).", "",
         "| cells | detection and linking | " + " | ".join(c for c, _, _ in RATES)
         + " | whole | merged | FP >80 s causes |",
         "|---|---|" + "---|" * (len(RATES) + 3)]
    for group, cells in results.items():
        for way, label in WAYS.items():
            row = []
            for _, rate, pop in RATES:
                k, n = pooled(cells, way, rate, pop)
                p = k / n if n else float("nan")
                row.append(f"{p:.3f} ± {math.sqrt(p * (1 - p) / n):.3f} ({k} of {n})" if n else "n/a")
            whole = sum(c[way]["whole_fraction"] for c in cells) / len(cells)
            merged = sum(c[way]["merged_fraction"] for c in cells) / len(cells)
            causes = " / ".join(str(sum(c[way][f"aux_fp_long_{k}"] for c in cells)) for k in acc.FALSE_POSITIVE_CAUSES)
            L.append(f"| {group} | {label} | " + " | ".join(row) + f" | {whole:.3f} | {merged:.3f} | {causes} |")
    return "\n".join(L) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cells", type=int, default=64, help="long-aux- cells per PSF")
    parser.add_argument("--processes", type=int, default=2)
    parser.add_argument("--out", type=Path, default=ROOT / "benchmarks" / "out" / "cme_bounds")
    args = parser.parse_args()
    jobs = [(sigma, 3 + 2 * r) for sigma in (1.45, 1.2) for r in range(args.cells)]
    with multiprocessing.get_context("fork").Pool(args.processes) as pool:
        wall_s, runs = timed(lambda: pool.map(run_cell, jobs, chunksize=1))
    results = {}
    for (sigma, _), run in zip(jobs, runs):
        results.setdefault(f"144^2, PSF {sigma}, long aux-", []).append(run)
    text = report(results, args, wall_s)
    with atomic_path(args.out.with_suffix(".json")) as tmp:
        tmp.write_text(json.dumps({"settings": vars(args) | {"out": str(args.out.name)}, "wall_s": wall_s,
                                   "results": results}, indent=1, default=float))
    with atomic_path(args.out.with_suffix(".md")) as tmp:
        tmp.write_text(text)
    print(text)


if __name__ == "__main__":
    main()
