"""The CME Domain hooks end to end on a tiny simulated tree: simulate -> ingest (detection,
tracking, track processing, traces) -> LSTM teacher (one epoch) -> heads on a fake 2-point
grid -> figures; the cmeAnalysis-output ingest on the same tracks; the schema's defaults."""
import logging
from dataclasses import fields
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import pywt
import scipy.io
import yaml
from sklearn.linear_model import LinearRegression

from awd.config import validate
from awd.figures import capture_figures, label_problems
from awd.io import InputError
from awd.stats import r2
from domains.cme.domain import CMEDomain, assign_splits, validation_split
from domains.cme.head import METHODS
from domains.cme.tracking.processing import CHANNELS
from domains.cme.traces import downsample

SCHEMA = Path(__file__).resolve().parents[1] / "domains" / "cme" / "schema.yaml"
DB5 = np.array(pywt.Wavelet("db5").rec_lo)


def _config(**sections) -> dict:
    base = {"simulator": {"n_cells": 3, "height": 128, "width": 128, "n_frames": 100, "density": 0.004, "seed": 1},
            "data": {"train_cells": [1, 2], "test_cells": [3], "val_fraction": 0.2, "split_seed": 3},
            "labels": {"min_lifetime": 8},
            "teacher": {"epochs": 1, "batch_size": 16},
            "heads": {"m": 3, "cv_folds": 5},
            "bootstrap": {"n": 50, "seed": 0}}
    base.update(sections)
    return validate(base, yaml.safe_load(SCHEMA.read_text()), "cme")


@pytest.fixture(scope="module")
def ingested(tmp_path_factory):
    root = tmp_path_factory.mktemp("cme")
    cfg = _config()
    dom = CMEDomain()
    dom.simulate(cfg, root / "raw", threads=1)
    ds = dom.ingest(cfg, root / "raw", root / "data", threads=1)
    ds.save(root / "data" / "dataset.npz")  # as the workflow's ingest stage does
    return cfg, dom, root, ds


def test_ingest_dataset_and_tables(ingested):
    cfg, dom, root, ds = ingested
    data = root / "data"
    assert ds.X.shape[1] == 40 and len(ds.X) >= 25
    assert ds.target_names == ["auxilin"]
    assert set(np.unique(ds.group)) == {1, 2, 3}
    assert set(ds.group[ds.split == "test"]) == {3}
    assert set(ds.group[ds.split != "test"]) <= {1, 2}
    n_train_cells = int((ds.split != "test").sum())
    assert (ds.split == "val").sum() == round(0.2 * n_train_cells)
    # X and y are z-scored per cell, over all of that cell's traces
    for c in (1, 2, 3):
        m = ds.group == c
        assert ds.X[m].mean() == pytest.approx(0, abs=1e-5) and ds.X[m].std() == pytest.approx(1, rel=1e-4)
        assert ds.y[m, 0].mean() == pytest.approx(0, abs=1e-5) and ds.y[m, 0].std() == pytest.approx(1, rel=1e-4)
    for name in ("tracks.parquet", "tracks_frames.parquet", "detections.parquet", "traces.parquet", "cells.csv"):
        assert (data / name).is_file(), name
    assert len(list((data / "napari").glob("*_tracks.csv"))) == 3
    traces = pd.read_parquet(data / "traces.parquet")
    frames = pd.read_parquet(data / "tracks_frames.parquet")
    assert len(traces) == len(ds.X)
    np.testing.assert_array_equal(traces["cell_id"], ds.group)
    np.testing.assert_array_equal(traces["track_id"], ds.extra["track_id"])
    # one trace recomputed from the per-frame table: 40-point subsample / zero pad, then the cell's z-score
    cell = traces["cell"].iloc[0]
    same_cell = traces["cell"] == cell
    raw = []
    for tid in traces.loc[same_cell, "track_id"]:
        rows = frames[(frames["cell"] == cell) & (frames["track_id"] == tid) & (frames["part"].astype(str) == "track")]
        raw.append(downsample(rows.sort_values("frame")["A_clathrin"].to_numpy(), 40)[0])
    raw = np.array(raw)
    np.testing.assert_allclose(ds.X[same_cell.to_numpy()], (raw - raw.mean()) / raw.std(), rtol=1e-4, atol=1e-4)
    # the target is Y_sig_mean z-scored per cell
    ysm = traces.loc[same_cell, "Y_sig_mean"].to_numpy()
    np.testing.assert_allclose(ds.y[same_cell.to_numpy(), 0], (ysm - ysm.mean()) / ysm.std(), rtol=1e-4, atol=1e-4)
    cells = pd.read_csv(data / "cells.csv")
    assert list(cells["split"]) == ["train", "train", "test"] and list(cells["cell_id"]) == [1, 2, 3]
    # the funnel of the movie route: tracks of the processed tracks table, traces of the dataset
    funnel = pd.read_csv(data / "funnel.csv").set_index("cell")
    tracks = pd.read_parquet(data / "tracks.parquet")
    assert funnel.loc["total", "tracks_read"] == len(tracks)
    assert funnel.loc["total", "kept_category"] == int(tracks["catIdx"].isin([1, 2]).sum())
    assert funnel.loc["total", "kept_min_lifetime"] == len(ds.X)
    assert [funnel.loc["total", f"n_{s}"] for s in ("train", "val", "test")] == \
        [int((ds.split == s).sum()) for s in ("train", "val", "test")]
    assert funnel.loc["total", "aux_positive"] == int(ds.extra["aux_positive"].sum())


def test_one_track_id_across_all_tables(ingested):
    """detections, tracks, track frames, traces and the napari files use the same track ids:
    a detection joins the frame row of its track at the same frame and position."""
    cfg, dom, root, ds = ingested
    data = root / "data"
    det = pd.read_parquet(data / "detections.parquet")
    tracks = pd.read_parquet(data / "tracks.parquet")
    frames = pd.read_parquet(data / "tracks_frames.parquet")
    traces = pd.read_parquet(data / "traces.parquet")
    own = frames[(frames["part"].astype(str) == "track") & ~frames["gap"]]
    linked = det[det["track_id"] >= 0]
    assert len(linked) == len(own) and len(linked) > 0.5 * len(det)
    joined = linked.merge(own, on=["cell", "track_id", "frame"], suffixes=("_det", "_trk"), validate="one_to_one")
    assert len(joined) == len(linked)
    np.testing.assert_array_equal(joined["x_det"], joined["x_trk"])
    np.testing.assert_array_equal(joined["y_det"], joined["y_trk"])
    spans = joined.merge(tracks[["cell", "track_id", "start_frame", "end_frame", "linked_track_id"]],
                         on=["cell", "track_id"], suffixes=("", "_track"))
    assert spans["frame"].between(spans["start_frame"], spans["end_frame"]).all()
    np.testing.assert_array_equal(spans["linked_track_id"], spans["linked_track_id_track"])
    # the other detections belong to linked tracks that were dropped (single frames, border)
    dropped = det.loc[det["track_id"] < 0, ["cell", "linked_track_id", "frame"]]
    own_linked = own.merge(tracks[["cell", "track_id", "linked_track_id"]], on=["cell", "track_id"])
    assert dropped.merge(own_linked, on=["cell", "linked_track_id", "frame"]).empty
    assert set(zip(traces["cell"], traces["track_id"])) <= set(zip(tracks["cell"], tracks["track_id"]))
    for path in (data / "napari").glob("*_tracks.csv"):
        napari = pd.read_csv(path)
        rows = frames[(frames["cell"] == path.name[: -len("_tracks.csv")]) & (frames["part"].astype(str) == "track")]
        both = napari.merge(rows, left_on=["track_id", "t"], right_on=["track_id", "frame"], validate="one_to_one",
                            suffixes=("_napari", ""))
        assert len(both) == len(napari) == len(rows)
        np.testing.assert_allclose(both[["x_napari", "y_napari"]].to_numpy(), both[["x", "y"]].to_numpy())


def test_teacher_heads_and_figures(ingested, tmp_path):
    import torch

    from awd.teacher import TeacherConfig, fit_teacher, predict
    from awd.trim import is_piecewise_linear
    from awd.wavelet import load_wavelet

    cfg, dom, root, ds = ingested
    core = dom.build_teacher(cfg, ds)
    assert not is_piecewise_linear(core)
    assert core(torch.as_tensor(ds.X[:3])).shape == (3, 1)
    teacher, history = fit_teacher(core, ds, TeacherConfig.from_dict(cfg["teacher"]))
    assert len(history) == 1

    sym5 = np.array(pywt.Wavelet("sym5").rec_lo)
    grid = [{"h": DB5 + 0.01 * np.arange(10) / 10, "lam": 0.001, "gamma": 0.0, "J": 4, "mode": "zero"},
            {"h": sym5, "lam": 0.001, "gamma": 0.05, "J": 4, "mode": "zero"}]
    out = tmp_path / "cme"
    summary = dom.fit_heads(cfg, ds, grid, teacher, out)
    table = pd.read_csv(out / "table.csv")
    assert list(table["method"]) == list(METHODS)
    assert {"method", "r2", "r2_se", "cv_r2", "lam", "gamma"} <= set(table.columns)
    rows = table.set_index("method")

    fit = np.isin(ds.split, ["train", "val"])
    test = ds.split == "test"
    y = ds.y[:, 0].astype(float)
    # DB5 head recomputed independently: pywt.wavedec features (top 3 per scale, descending) + OLS
    def feats(X):
        with pytest.warns(UserWarning, match="Level value"):  # J = 4 is "too high" for 40 samples in pywt's view
            cs = pywt.wavedec(X.astype(float), "db5", mode="zero", level=4, axis=-1)
        return np.hstack([np.sort(c, axis=1)[:, ::-1][:, :3] for c in cs])
    pred_db5 = LinearRegression().fit(feats(ds.X[fit]), y[fit]).predict(feats(ds.X[test]))
    assert rows.loc["DB5", "r2"] == pytest.approx(r2(y[test], pred_db5), abs=1e-9)
    assert np.isnan(rows.loc["DB5", "gamma"])
    lstm_pred = predict(teacher, ds.X[test])[:, 0]
    assert rows.loc["LSTM", "r2"] == pytest.approx(r2(y[test], lstm_pred), abs=1e-6)
    assert (table["r2_se"] > 0).all()

    sel = pd.read_csv(out / "heads" / "selection.csv")
    awd = sel[sel["grid_index"] >= 0]
    best = awd.loc[awd["cv_r2"].idxmax()]
    assert bool(best["selected"]) and awd["selected"].sum() == 1
    assert rows.loc["AWD", "gamma"] == best["gamma"] and rows.loc["AWD", "cv_r2"] == pytest.approx(best["cv_r2"])
    assert rows.loc["AWD without interpretation loss", "gamma"] == 0.0
    assert rows.loc["AWD without interpretation loss", "cv_r2"] == pytest.approx(awd["cv_r2"].iloc[0])
    assert summary["selected"]["gamma"] == best["gamma"]
    loaded = load_wavelet(out / "wavelet.json")
    np.testing.assert_array_equal(loaded.h, grid[int(best["grid_index"])]["h"])
    assert (loaded.J, loaded.mode, loaded.ndim) == (4, "zero", 1)
    assert loaded.meta["gamma"] == best["gamma"] and loaded.meta["cv_r2"] == pytest.approx(best["cv_r2"])
    preds = pd.read_csv(out / "heads" / "predictions.csv")
    assert len(preds) == test.sum()
    np.testing.assert_allclose(preds["pred_db5"], pred_db5, atol=1e-8)

    # figures read the ingest side tables beside the heads outputs: results/<name>/data
    (out / "data").symlink_to(root / "data", target_is_directory=True)
    with capture_figures() as drawn:
        paths = dom.figures(cfg, out, root / "raw", tmp_path / "figures")
    # every figure is legible: labelled axes (units) and colour bars, ticks that do not overlap
    problems = {path.name: label_problems(fig) for path, fig in drawn}
    assert len(problems) == len(paths)
    assert not any(problems.values()), "\n".join(p for ps in problems.values() for p in ps)
    names = {p.name for p in paths}
    assert names == {"example_traces.png", "wavelet.png", "aux_fraction_vs_lifetime.png", "intensity_cohorts.png",
                     "kymograph.png", "feature_reconstruction.png", "predicted_vs_true.png", "selection.png"}
    for p in paths:
        assert p.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and p.stat().st_size > 5000


# ----------------------------------------------------------------------------- cmeAnalysis outputs


def _struct(elements: list[dict]) -> np.ndarray:
    out = np.empty((1, len(elements)), dtype=[(k, "O") for k in elements[0]])
    for i, el in enumerate(elements):
        for k, v in el.items():
            out[0, i][k] = v
    return out


def _per_channel(rows: pd.DataFrame, field: str) -> np.ndarray:
    return np.vstack([rows[f"{field}_{ch}"].to_numpy(float) for ch in CHANNELS])


def write_processed_tracks(path: Path, tracks: pd.DataFrame, frames: pd.DataFrame) -> None:
    """A cmeAnalysis ProcessedTracks.mat (v5) holding the given processed tracks."""
    per_frame = ("x", "y", "A", "c", "A_pstd", "c_pstd", "sigma_r", "SE_sigma_r", "pval_Ar")
    elements = []
    for _, tr in tracks.iterrows():
        rows = frames[frames["track_id"] == tr["track_id"]].sort_values("frame")
        part = rows["part"].astype(str)
        core = rows[part == "track"]
        el = {"f": core["frame"].to_numpy(float)[None] + 1, "t": core["t_s"].to_numpy(float)[None],
              **{k: _per_channel(core, k) for k in per_frame},
              "gapVect": core["gap"].to_numpy(float)[None],
              "start": np.array([[tr["start_frame"] + 1.0]]), "end": np.array([[tr["end_frame"] + 1.0]]),
              "lifetime_s": np.array([[tr["lifetime_s"]]]), "catIdx": np.array([[float(tr["catIdx"])]]),
              "nSeg": np.array([[1.0]]), "visibility": np.array([[float(tr["visibility"])]])}
        for name, which in (("startBuffer", "start_buffer"), ("endBuffer", "end_buffer")):
            buf = rows[part == which]
            el[name] = (_struct([{"f": buf["frame"].to_numpy(float)[None] + 1, "t": buf["t_s"].to_numpy(float)[None],
                                  **{k: _per_channel(buf, k) for k in per_frame}}]) if len(buf) else np.zeros((0, 0)))
        elements.append(el)
    scipy.io.savemat(path, {"tracks": _struct(elements)})


def test_cmeanalysis_outputs_give_the_same_dataset(ingested, tmp_path):
    import shutil

    cfg, dom, root, ds = ingested
    tracks = pd.read_parquet(root / "data" / "tracks.parquet")
    frames = pd.read_parquet(root / "data" / "tracks_frames.parquet")
    tree = tmp_path / "cmeanalysis"
    shutil.copytree(root / "raw", tree)
    for cell_dir in sorted((tree / "sim").iterdir()):
        out = cell_dir / "TagRFP" / "Tracking"
        out.mkdir()
        keep = tracks["cell"] == cell_dir.name
        write_processed_tracks(out / "ProcessedTracks.mat", tracks[keep], frames[frames["cell"] == cell_dir.name])
    cfg2 = _config(data={**cfg["data"], "source": "cmeanalysis", "root": str(tree)})
    ds2 = dom.ingest(cfg2, tree, tmp_path / "data2")
    np.testing.assert_array_equal(ds2.split, ds.split)
    np.testing.assert_array_equal(ds2.group, ds.group)
    np.testing.assert_allclose(ds2.X, ds.X, rtol=1e-6, atol=1e-6)
    np.testing.assert_allclose(ds2.y, ds.y, rtol=1e-6, atol=1e-6)
    assert not (tmp_path / "data2" / "detections.parquet").exists()


# ----------------------------------------------------------------------------- splits and schema


def test_splits_by_cell_number_or_name_and_bad_cells(tmp_path, caplog):
    names = ["Cell1_1s", "Cell2_1s", "Cell10_1s"]
    assert assign_splits(names, {"train_cells": None, "test_cells": [10]}, tmp_path) == \
        {"Cell1_1s": "train", "Cell2_1s": "train", "Cell10_1s": "test"}
    assert assign_splits(names, {"train_cells": ["Cell2_1s"], "test_cells": [1]}, tmp_path) == \
        {"Cell2_1s": "train", "Cell1_1s": "test"}
    with pytest.raises(InputError, match="cell 7 not found") as err:
        assign_splits(names, {"train_cells": [1], "test_cells": [7]}, tmp_path)
    # the error names the key, lists the cells found and suggests a split that fits them
    assert "cme.data.test_cells" in str(err.value) and "['Cell1_1s', 'Cell2_1s', 'Cell10_1s']" in str(err.value)
    assert "cme.data.train_cells: [1, 2] and cme.data.test_cells: [10]" in str(err.value)
    four = ["Cell1_1s", "Cell2_1s", "Cell3_1s", "Cell4_1s"]
    with pytest.raises(InputError, match=r"train_cells: \[1, 2, 3\] and cme.data.test_cells: \[4\]"):
        assign_splits(four, {"train_cells": None, "test_cells": [7, 8]}, tmp_path)
    with caplog.at_level(logging.WARNING):
        assert assign_splits(four, {"train_cells": [1], "test_cells": [4]}, tmp_path) == \
            {"Cell1_1s": "train", "Cell4_1s": "test"}
    assert "left out: Cell2_1s, Cell3_1s" in caplog.text
    with pytest.raises(InputError, match="share the cells"):
        assign_splits(names, {"train_cells": [1, 2], "test_cells": [2]}, tmp_path)
    split = validation_split(np.array(["train"] * 10 + ["test"] * 3), 0.3, seed=0)
    assert (split == "val").sum() == 3 and (split == "test").sum() == 3
    np.testing.assert_array_equal(split, validation_split(np.array(["train"] * 10 + ["test"] * 3), 0.3, seed=0))


def test_ingest_rejects_missing_test_cells(ingested, tmp_path):
    cfg, dom, root, _ = ingested
    bad = _config(data={**cfg["data"], "test_cells": [9]})
    with pytest.raises(InputError, match="cell 9 not found"):
        dom.ingest(bad, root / "raw", tmp_path / "data")


def test_schema_mirrors_the_pipeline_settings():
    """Every simulator/detection/tracking/processing/label setting is in the schema with the
    pipeline's own default (the simulator's frame size and length are smaller on purpose)."""
    from domains.cme.tracking.detect import DetectionConfig
    from domains.cme.tracking.simulate import SimulationConfig
    from domains.cme.tracking.link import TrackingConfig
    from domains.cme.tracking.processing import ProcessingConfig
    from domains.cme.traces import LabelConfig

    schema = yaml.safe_load(SCHEMA.read_text())
    cfg = validate({}, schema, "cme")
    overrides = {"height": 192, "width": 192, "n_frames": 200}
    for section, cls, extra in (("simulator", SimulationConfig, {"n_cells", "seed", "condition"}),
                                ("detection", DetectionConfig, set()), ("tracking", TrackingConfig, set()),
                                ("track_processing", ProcessingConfig, set()), ("labels", LabelConfig, set())):
        assert set(cfg[section]) == {f.name for f in fields(cls)} | extra, section
        for f in fields(cls):
            want = overrides.get(f.name, f.default) if section == "simulator" else f.default
            got = cfg[section][f.name]
            assert (list(got) if isinstance(got, (list, tuple)) else got) == \
                (list(want) if isinstance(want, tuple) else want), (section, f.name)

    def walk(node, path):
        if isinstance(node, dict) and "properties" in node:
            assert node.get("additionalProperties") is False, path
            for key, sub in node["properties"].items():
                # distill.target alone has no default: unset means the domain's own target
                assert ("default" in sub or f"{path}.{key}" == "cme.distill.target") and "description" in sub, \
                    f"{path}.{key}"
                walk(sub, f"{path}.{key}")
    walk(schema, "cme")
    # the defaults build valid settings for every stage
    from awd.distill import DistillConfig
    from awd.teacher import TeacherConfig

    TeacherConfig.from_dict(cfg["teacher"])
    DistillConfig.from_dict({**cfg["distill"], "target": 0})
    SimulationConfig.from_dict({k: v for k, v in cfg["simulator"].items() if k not in ("n_cells", "seed", "condition")})
    assert cfg["distill"]["gammas"] == [0.0, 0.01274, 0.14384] and cfg["lstm"]["hidden_size"] == 20
    # real data needs a root
    from awd.config import ConfigError

    with pytest.raises(ConfigError, match="root"):
        validate({"data": {"source": "files"}}, schema, "cme")
    with pytest.raises(ConfigError, match="cme.data.root"):
        validate({"data": {"source": "cmeanalysis", "root": None}}, schema, "cme")
    assert validate({"data": {"source": "files", "root": "movies"}}, schema, "cme")["data"]["root"] == "movies"
    assert validate({"data": {"channel_indices": [1, 0]}}, schema, "cme")["data"]["channel_indices"] == [1, 0]
    assert validate({}, schema, "cme")["data"]["cmeanalysis_file"] == "auto"
    with pytest.raises(ConfigError, match="cme.data.channel_indices"):
        validate({"data": {"channel_indices": [1]}}, schema, "cme")
