"""A cmeAnalysis export as labs publish it (MAT v7.3 outputs only: no movies, no slave-channel
folder, no positions in lifetimeData.mat) runs through the whole workflow: ingest with its
funnel, teacher, distillation, heads, every figure that the data allow, and the summary."""
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pandas as pd
import pytest
import yaml

from cmeanalysis_export import write_cmeanalysis_export

REPO = Path(__file__).resolve().parents[1]
FIGURES = {"example_traces.png", "wavelet.png", "aux_fraction_vs_lifetime.png", "intensity_cohorts.png",
           "feature_reconstruction.png", "predicted_vs_true.png", "selection.png"}


@pytest.mark.slow
def test_outputs_only_tree_runs_end_to_end(tmp_path):
    root = tmp_path / "export"
    cells = write_cmeanalysis_export(root, n_cells=4, n_tracks=160, n_frames=120, seed=4)
    # the tree is what a lab hands over: two MAT v7.3 files per cell and nothing else
    files = sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())
    assert files == sorted(f"A7D2/{c.name}/TagRFP/Analysis/{n}.mat" for c in cells
                           for n in ("lifetimeData", "Parameters"))
    with h5py.File(cells[0] / "TagRFP/Analysis/lifetimeData.mat") as f:
        n, N = f["A"].shape[2], f["catIdx"].shape[1]
        assert f["A"].shape == (2, 120, n) and f["sbA"].shape == (2, 5, n) and f["gapMat_Ia"].dtype == np.uint8
        assert f["significantSlave"].shape == (2, N) and n == int((f["catIdx"][0] == 1).sum()) < N
    config = {"label": "outputs-only", "domains": ["cme"], "threads": 1,
              "cme": {"data": {"source": "cmeanalysis", "root": str(root), "train_cells": [1, 2, 3],
                               "test_cells": [4]},
                      "teacher": {"epochs": 3}, "heads": {"cv_folds": 3}, "bootstrap": {"n": 50},
                      "distill": {"lambdas": [0.0001], "gammas": [0.0, 0.01274], "epochs": 1}}}
    cfg = tmp_path / "config.yaml"
    cfg.write_text(yaml.safe_dump(config))
    run = tmp_path / "run"
    res = subprocess.run([sys.executable, "-m", "snakemake", "-s", str(REPO / "Snakefile"), "--directory", str(run),
                          "--configfile", str(cfg), "--cores", "2"], capture_output=True, text=True, timeout=600)
    out = res.stdout + res.stderr
    assert res.returncode == 0, out[-6000:]
    results = run / "results" / "cme"
    assert {p.name for p in (results / "figures").glob("*.png")} == FIGURES
    logs = out + "".join(p.read_text() for p in run.rglob("*.log"))
    skipped = [line for line in logs.splitlines() if "kymograph.png not drawn" in line]
    assert skipped and "raw movies" in skipped[0] and "positions" in skipped[0]
    table = pd.read_csv(results / "table.csv")
    assert set(table["method"]) == {"AWD", "DB5", "AWD without interpretation loss", "LSTM"}
    assert table["r2"].notna().all()
    summary = pd.read_csv(run / "results" / "tables" / "summary.csv")
    assert set(summary["domain"]) == {"cme"}
    # the funnel adds up: per cell each filter keeps at most what the previous one kept, the
    # total row is the sum of the cells, and the split counts are the traces of the dataset
    funnel = pd.read_csv(results / "data" / "funnel.csv")
    steps = ["tracks_read", "kept_category", "kept_with_amplitudes", "kept_min_frames", "kept_no_hotspot",
             "kept_short_long", "kept_min_lifetime"]
    cells_rows, total = funnel[funnel["cell"] != "total"], funnel[funnel["cell"] == "total"].iloc[0]
    assert list(cells_rows["cell"]) == [c.name for c in cells]
    assert (np.diff(cells_rows[steps].to_numpy(), axis=1) <= 0).all()
    for col in steps + ["aux_positive", "n_train", "n_val", "n_test"]:
        assert total[col] == cells_rows[col].sum(), col
    with h5py.File(cells[0] / "TagRFP/Analysis/lifetimeData.mat") as f:
        assert cells_rows["tracks_read"].iloc[0] == f["catIdx"].shape[1]
        cat = f["catIdx"][0]
        assert cells_rows["kept_category"].iloc[0] == int(np.isin(cat, [1, 2]).sum())
        assert cells_rows["kept_with_amplitudes"].iloc[0] == int((cat == 1).sum())
    traces = pd.read_parquet(results / "data" / "traces.parquet")
    assert total["kept_min_lifetime"] == len(traces) == total[["n_train", "n_val", "n_test"]].sum()
    assert total["aux_fraction"] == pytest.approx(traces["aux_positive"].mean(), rel=1e-9)
    assert cells_rows["n_test"].tolist() == [0, 0, 0, int((traces["split"] == "test").sum())]
    assert (traces["n_frames"] > 15).all() and (traces["n_frames"] > total["thresh_short_frames"]).all()


def test_processed_tracks_export_ingest_and_figures_without_movies(tmp_path, caplog):
    """ProcessedTracks.mat exports (v7.3, positions, no movies): the dataset, napari files with
    the tables' track ids, and the kymograph left out with what it would need."""
    import logging

    from awd.config import validate
    from domains.cme.domain import CMEDomain
    from domains.cme.figures import kymograph

    root = tmp_path / "export"
    write_cmeanalysis_export(root, n_cells=3, n_tracks=40, n_frames=90, seed=5, files=("ProcessedTracks",))
    schema = yaml.safe_load((REPO / "domains/cme/schema.yaml").read_text())
    cfg = validate({"data": {"source": "cmeanalysis", "root": str(root), "train_cells": [1, 2],
                             "test_cells": [3]}}, schema, "cme")
    ds = CMEDomain().ingest(cfg, root, tmp_path / "data")
    assert set(ds.group) == {1, 2, 3} and len(ds.X) > 20
    frames = pd.read_parquet(tmp_path / "data" / "tracks_frames.parquet")
    napari = pd.read_csv(tmp_path / "data" / "napari" / "Cell2_1s_tracks.csv")
    rows = frames[(frames["cell"] == "Cell2_1s") & (frames["part"] == "track")]
    rows = rows.drop_duplicates(["track_id", "frame"])  # compound tracks: first segment per frame
    both = napari.merge(rows, left_on=["track_id", "t"], right_on=["track_id", "frame"], suffixes=("", "_tab"),
                        validate="one_to_one")
    assert len(both) == len(napari) == len(rows) and np.allclose(both["x"], both["x_tab"])
    traces = pd.read_parquet(tmp_path / "data" / "traces.parquet")
    with caplog.at_level(logging.WARNING):
        assert kymograph(cfg, root, traces, frames, tmp_path / "k.png") is None
    assert "kymograph.png not drawn: no raw movies" in caplog.text and not (tmp_path / "k.png").exists()
