"""Throughput of the cosmology data side: mock generation and FITS ingest, in maps per second.

Shapes: the default/AWD shape (generated at 512^2 over 3.5 deg, 2x2 block means -> 256^2),
smaller CI shapes, and MassiveNuS's native 512^2 files ingested with 2x2 rebinning to 256^2.
Also times the default mock data set (10 cosmologies x N maps, ``write_mock_tree``) with 1 and
2 worker processes. Prints a markdown table and writes ``benchmarks/out/cosmology_data.md``.

    python benchmarks/bench_cosmology_data.py [--maps-per-cosmology 250] [--quick]
"""
from __future__ import annotations

import argparse
import os
import platform
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from domains.cosmology.fits_io import load_maps  # noqa: E402
from domains.cosmology.mock import MapGenerator, cosmology_seed, write_mock_tree  # noqa: E402
from awd.io import atomic_path  # noqa: E402
from benchmarks.common import timed  # noqa: E402
from domains.cosmology import theory  # noqa: E402
from domains.cosmology.theory import DEFAULT_COSMOLOGY_INDICES  # noqa: E402


def bench_generation(npix_generate: int, npix_out: int, n_maps: int) -> dict:
    setup, gen = timed(lambda: MapGenerator(0, npix=npix_generate, side_deg=3.5, rebin=npix_generate // npix_out))
    seconds, _ = timed(lambda: [gen.generate(cosmology_seed(0, gen.params, r)) for r in range(n_maps)])
    return {"what": f"generate {npix_generate}^2 -> {npix_out}^2 (1 core)", "maps": n_maps,
            "seconds": seconds, "rate": n_maps / seconds, "note": f"setup {setup:.2f} s per cosmology"}


def bench_tree(tmp: Path, n_per: int, threads: int) -> dict:
    theory._log_cl_table.cache_clear()  # both runs pay for their C_ell
    seconds, paths = timed(lambda: write_mock_tree(tmp / f"tree{threads}", cosmologies=DEFAULT_COSMOLOGY_INDICES,
                                                   n_maps=n_per, seed=0, threads=threads))
    return {"what": f"write_mock_tree 10 cosmologies, 512^2 -> 256^2 ({threads} proc)", "maps": len(paths),
            "seconds": seconds, "rate": len(paths) / seconds, "note": "incl. C_ell and FITS writing"}


def bench_ingest(root: Path, target: int, threads: int, label: str) -> dict:
    seconds, ms = timed(lambda: load_maps(root, redshift=1.0, target_size=target, threads=threads))
    return {"what": f"load_maps {label} ({threads} thread{'s' if threads > 1 else ''})", "maps": len(ms),
            "seconds": seconds, "rate": len(ms) / seconds, "note": f"-> {ms.maps.shape[1]}^2 float32"}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--maps-per-cosmology", type=int, default=250)
    parser.add_argument("--quick", action="store_true", help="small counts, for a smoke run")
    args = parser.parse_args()
    n_per = 20 if args.quick else args.maps_per_cosmology
    n_gen = 20 if args.quick else 200
    rows = [bench_generation(512, 256, n_gen), bench_generation(256, 128, n_gen), bench_generation(128, 64, n_gen)]
    with tempfile.TemporaryDirectory(dir=ROOT / "benchmarks") as tmp:
        tmp = Path(tmp)
        rows.append(bench_tree(tmp, n_per, 1))
        rows.append(bench_tree(tmp, n_per, 2))
        rows.append(bench_ingest(tmp / "tree1", 256, 1, "256^2 files"))
        rows.append(bench_ingest(tmp / "tree1", 256, 2, "256^2 files"))
        native = tmp / "native"
        write_mock_tree(native, cosmologies=DEFAULT_COSMOLOGY_INDICES[:2], n_maps=max(10, n_per // 5),
                        npix_generate=512, npix_out=512, seed=0, threads=2)
        rows.append(bench_ingest(native, 256, 1, "512^2 files, 2x2 rebin"))
        rows.append(bench_ingest(native, 256, 2, "512^2 files, 2x2 rebin"))

    lines = [f"# Cosmology data throughput ({platform.processor() or platform.machine()}, "
             f"{os.cpu_count()} CPUs, {time.strftime('%Y-%m-%d %H:%M')})", "",
             "| step | maps | seconds | maps/s | note |", "|---|---:|---:|---:|---|"]
    lines += [f"| {r['what']} | {r['maps']} | {r['seconds']:.2f} | {r['rate']:.1f} | {r['note']} |" for r in rows]
    text = "\n".join(lines) + "\n"
    print(text)
    out = ROOT / "benchmarks" / "out" / "cosmology_data.md"
    with atomic_path(out) as tmp_out:
        tmp_out.write_text(text)
    print(f"written {out}")


if __name__ == "__main__":
    main()
