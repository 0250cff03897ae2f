"""The CME domain adapter: the hooks the generic AWD workflow calls (see ``awd.domain``).

* simulate: two-channel TIRF movies in the cmeAnalysis folder tree (``domains.cme.tracking.simulate``).
* ingest: per cell, read the movie, detect, link and process the tracks as cmeAnalysis does
  (``data.source`` mock / files), or read existing cmeAnalysis outputs (``data.source:
  cmeanalysis``); write the track tables; build the 40-point clathrin traces (input) and the
  per-cell z-scored ``Y_sig_mean`` (target ``auxilin``); split by cell.
* build_teacher: the reference LSTM (``domains.cme.lstm``).
* fit_heads: top-6 signed coefficients per scale + OLS for DB5 and every learned wavelet,
  selection by 5-fold CV R^2 on the training traces, test R^2 with bootstrap SE.
* figures: ``domains.cme.figures``.

Splits: ``data.test_cells`` are the test split; ``data.train_cells`` (all other cells when
null) give the training tracks, of which a seeded random ``data.val_fraction`` becomes the
"val" split (the distiller's validation set). The heads are fitted and cross-validated on
train + val (all training-cell tracks, as the reference refits on all training tracks); the
teacher trains on "train" only.
"""
from __future__ import annotations

import logging
import re
from pathlib import Path

import numpy as np
import pandas as pd

from awd.domain import Dataset, Domain, register
from awd.io import InputError, atomic_path, safe_name, write_csv

log = logging.getLogger(__name__)

_CELL_NUMBER = re.compile(r"\d+")


# ----------------------------------------------------------------------------- cells and splits


def cell_number(name: str) -> int | None:
    """The first integer in a cell folder/file name ('Cell7_1s' -> 7, '1_1.5s' -> 1)."""
    m = _CELL_NUMBER.search(str(name))
    return int(m.group()) if m else None


def _match_cells(spec: list | None, names: list[str], numbers: dict[str, int], key: str,
                 where: Path) -> list[str]:
    """Cell names selected by ``spec`` (ints = cell numbers, strings = folder/file names)."""
    chosen = []
    for item in spec or []:
        if isinstance(item, bool) or not isinstance(item, (int, str)):
            raise InputError(where, f"data.{key}: entries must be cell numbers or names, got {item!r}")
        hits = [n for n in names if (n == item if isinstance(item, str) else numbers[n] == item)]
        if not hits:
            raise InputError(where, f"cme.data.{key}: cell {item!r} not found; the cells found are "
                             f"{names} (numbers {[numbers[n] for n in names]}); {suggest_split(names, numbers)}")
        chosen += [h for h in hits if h not in chosen]
    return chosen


def suggest_split(names: list[str], numbers: dict[str, int]) -> str:
    """A config line that splits ``names`` about 3:1 by cell (the last quarter tests)."""
    if len(names) < 2:
        return "at least two cells are needed (one to train, one to test)"
    n_test = max(1, len(names) // 4)
    ids = [numbers[n] for n in names]
    return (f"for example set cme.data.train_cells: {ids[:-n_test]} and "
            f"cme.data.test_cells: {ids[-n_test:]}")


def cell_ids(names: list[str], where: Path) -> dict[str, int]:
    """Integer id per cell: its number in the name when those are unique, else its 1-based rank."""
    numbers = {n: cell_number(n) for n in names}
    values = list(numbers.values())
    if None in values or len(set(values)) != len(values):
        log.warning("%s: cell names %s do not carry unique numbers; numbering them 1..%d in order",
                    where, names, len(names))
        return {n: i + 1 for i, n in enumerate(names)}
    return numbers


def assign_splits(names: list[str], data_cfg: dict, where: Path) -> dict[str, str]:
    """'train' or 'test' per cell name; cells in neither list are left out (not in the dict)."""
    ids = cell_ids(names, where)
    test = _match_cells(data_cfg.get("test_cells"), names, ids, "test_cells", where)
    if data_cfg.get("train_cells") is None:
        train = [n for n in names if n not in test]
    else:
        train = _match_cells(data_cfg["train_cells"], names, ids, "train_cells", where)
    both = sorted(set(train) & set(test))
    if both:
        raise InputError(where, f"cme.data.train_cells and cme.data.test_cells share the cells {both}")
    if not train or not test:
        raise InputError(where, f"need at least one training and one test cell; cells found: {names}, "
                                f"cme.data.train_cells {data_cfg.get('train_cells')}, cme.data.test_cells "
                                f"{data_cfg.get('test_cells')}; {suggest_split(names, ids)}")
    unused = [n for n in names if n not in train and n not in test]
    if unused:
        log.warning("cells in neither cme.data.train_cells nor cme.data.test_cells are left out: %s",
                    ", ".join(unused))
    return {**{n: "train" for n in train}, **{n: "test" for n in test}}


def validation_split(split: np.ndarray, fraction: float, seed: int) -> np.ndarray:
    """A copy of ``split`` with a seeded random ``fraction`` of the 'train' rows set to 'val'."""
    split = split.copy()
    train = np.flatnonzero(split == "train")
    n_val = int(round(fraction * len(train)))
    if fraction > 0 and len(train) >= 2:
        n_val = min(max(n_val, 1), len(train) - 1)
    if n_val:
        split[np.random.default_rng(seed).choice(train, n_val, replace=False)] = "val"
    return split


# ----------------------------------------------------------------------------- reading raw data


def _select_condition(table: pd.DataFrame, condition: str | None, root: Path) -> pd.DataFrame:
    conditions = list(pd.unique(table["condition"]))
    if condition is None:
        if len(conditions) != 1:
            raise InputError(root, f"several conditions {conditions}; choose one with data.condition")
        return table
    if condition not in conditions:
        raise InputError(root, f"data.condition {condition!r} not found; conditions: {conditions}")
    return table[table["condition"] == condition]


def list_movies(root: Path, data_cfg: dict) -> pd.DataFrame:
    """Movies under ``root``: cmeAnalysis cell folders or multi-channel TIFF files of one
    condition. Columns condition, cell, path."""
    from domains.cme.tracking.movie_io import scan_cell_tree, scan_movie_files

    master, slave = data_cfg["master"], data_cfg["slave"]
    try:
        tree = scan_cell_tree(root, master=master, slave=slave)
        tree = tree.rename(columns={"cell_dir": "path"})[["condition", "cell", "path"]]
    except InputError as err:
        files = scan_movie_files(root) if root.is_dir() else pd.DataFrame()
        if files.empty:
            raise err
        tree = files[["condition", "cell", "path"]]
    return _select_condition(tree, data_cfg.get("condition"), root).reset_index(drop=True)


def _relative(path: str | Path, root: Path) -> str:
    """``path`` relative to the data root when inside it (portable provenance)."""
    try:
        return str(Path(path).resolve().relative_to(root.resolve()))
    except ValueError:
        return str(path)


def track_movies(cfg: dict, movies: pd.DataFrame, root: Path, out_dir: Path, threads: int = 1
                 ) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Detect, link and process every movie of ``movies`` (:func:`list_movies` of ``root``);
    writes the napari tracks file of each cell; returns (tracks, track frames, detections, cells)."""
    from domains.cme.tracking.detect import detect_movie
    from domains.cme.tracking.movie_io import read_movie
    from domains.cme.tracking.pairs import link_with_pairs
    from domains.cme.tracking.processing import detection_track_ids, process_tracks, write_napari_tracks

    d = cfg["data"]
    tracks, frames, detections, cells = [], [], [], []
    for row in movies.itertuples():
        movie = read_movie(row.path, frame_interval_s=d["frame_interval_s"], pixel_size_um=d["pixel_size_um"],
                           master=d["master"], slave=d["slave"], min_frames=d["min_frames"],
                           channels=d.get("channel_indices"), condition=row.condition)
        det, masks = detect_movie(movie, cfg, threads, return_masks=True)
        det = link_with_pairs(det, movie, cfg)
        tr, fr = process_tracks(det, movie, masks, cfg, cell=row.cell)
        det = det.rename(columns={"track_id": "linked_track_id"})
        det.insert(det.columns.get_loc("linked_track_id"), "track_id",
                   detection_track_ids(det.rename(columns={"linked_track_id": "track_id"}), tr, fr))
        det.insert(0, "cell", row.cell)
        det.insert(0, "condition", row.condition)
        det["t_s"] = det["frame"] * movie.frame_interval_s
        det["x_um"], det["y_um"] = det["x"] * movie.pixel_size_um, det["y"] * movie.pixel_size_um
        if len(fr):
            write_napari_tracks(out_dir / "napari" / f"{safe_name(row.cell)}_tracks.csv", fr)
        cells.append({"condition": row.condition, "cell": row.cell, "path": _relative(row.path, root),
                      "n_frames": movie.n_frames, "height": movie.shape[0], "width": movie.shape[1],
                      "frame_interval_s": movie.frame_interval_s, "pixel_size_um": movie.pixel_size_um,
                      "n_detections": len(det), "n_tracks": len(tr),
                      "n_cat1": int((tr["catIdx"] == 1).sum()) if len(tr) else 0,
                      **_cell_attrs(tr.attrs, row.cell)})
        log.info("cell %s: %d detections, %d tracks", row.cell, len(det), len(tr))
        tracks.append(tr)
        frames.append(fr)
        detections.append(det)
    return (pd.concat(tracks, ignore_index=True), pd.concat(frames, ignore_index=True),
            pd.concat(detections, ignore_index=True), pd.DataFrame(cells))


def _cell_attrs(attrs: dict, cell) -> dict:
    """The per-cell scalars that track processing leaves in a table's ``attrs`` (per-cell dicts,
    like the auxilin threshold of :func:`domains.cme.traces.add_labels`, give this cell's value)."""
    return {k: float(v[str(cell)] if isinstance(v, dict) else v) for k, v in attrs.items()}


def read_cmeanalysis(cfg: dict, root: Path, out_dir: Path) -> tuple[pd.DataFrame, pd.DataFrame, pd.DataFrame]:
    """Existing cmeAnalysis outputs of one condition (no movies needed), with the auxilin
    labels on the track table; writes the napari tracks file of each cell when the outputs
    hold positions. Returns (tracks, track frames, cells)."""
    from domains.cme.cmeanalysis_io import read_cmeanalysis_tree
    from domains.cme.tracking.processing import write_napari_tracks
    from domains.cme.traces import add_labels

    d = cfg["data"]
    condition = d.get("condition")
    if condition is None:
        conditions = sorted(p.name for p in root.iterdir() if p.is_dir() and any(
            (c / d["master"]).is_dir() for c in p.iterdir() if c.is_dir())) if root.is_dir() else []
        if len(conditions) > 1:
            raise InputError(root, f"several conditions {conditions}; choose one with cme.data.condition")
    tables = read_cmeanalysis_tree(root, master=d["master"], source=d["cmeanalysis_file"], condition=condition)
    tracks, frames = tables.tracks, tables.detections
    tracks = add_labels(tracks, frames, cfg)
    if {"x", "y"} <= set(frames.columns):
        for cell, fr in frames.groupby("cell", sort=False):
            write_napari_tracks(out_dir / "napari" / f"{safe_name(cell)}_tracks.csv", fr)
    cells = (tracks.groupby(["condition", "cell"], sort=False)
             .agg(n_tracks=("track_id", "size"), n_cat1=("catIdx", lambda c: int((c == 1).sum())))
             .reset_index())
    return tracks.reset_index(drop=True), frames.reset_index(drop=True), cells


def write_funnel(path: Path, funnel: list[dict], traces: pd.DataFrame, ids: dict, split_of: dict,
                 cfg: dict) -> pd.DataFrame:
    """``funnel.csv``: per cell and in total, the tracks read and kept after each filter, the
    aux+ fraction of the traces and the split counts; each row is logged as well."""
    lab = cfg["labels"]
    table = pd.DataFrame(funnel)
    table.insert(1, "cell_id", [ids[c] for c in table["cell"]])
    table.insert(2, "split", [split_of.get(c, "unused") for c in table["cell"]])
    table = table[table["split"] != "unused"].reset_index(drop=True)
    for s in ("train", "val", "test"):
        per_cell = traces.loc[traces["split"] == s].groupby("cell").size()
        table[f"n_{s}"] = [int(per_cell.get(c, 0)) for c in table["cell"]]
    counts = [c for c in table.columns if c.startswith(("tracks_", "kept_", "n_")) or c == "aux_positive"]
    total = {"cell": "total", "cell_id": -1, "split": "all", **table[counts].sum().to_dict(),
             "thresh_short_frames": table["thresh_short_frames"].iloc[0] if len(table) else np.nan,
             "thresh_long_frames": table["thresh_long_frames"].iloc[0] if len(table) else np.nan}
    table = pd.concat([table, pd.DataFrame([total])], ignore_index=True)
    with np.errstate(invalid="ignore", divide="ignore"):
        table["aux_fraction"] = table["aux_positive"] / table["kept_min_lifetime"]
    table["categories"] = " ".join(str(c) for c in lab["categories"])
    table["min_lifetime_frames"] = lab["min_lifetime"]
    write_csv(path, table, float_format="%.10g")
    first = table.iloc[-1]
    log.info("cme funnel (kept after each filter): catIdx in {%s}, with per-frame amplitudes, >= %d frames, "
             "hotspots %s, short <= %g / long >= %g frames (%.0f %% purity on the training cells), "
             "lifetime > %d frames", ", ".join(map(str, lab["categories"])), lab["min_frames"],
             "removed" if lab["drop_hotspots"] else "kept", first["thresh_short_frames"],
             first["thresh_long_frames"], 100 * lab["purity"], lab["min_lifetime"])
    for _, r in table.iterrows():
        log.info("cme funnel %s (%s): read %d -> category %d -> amplitudes %d -> frames %d -> hotspots %d -> "
                 "short/long %d -> min lifetime %d traces, aux+ %.1f %%; train %d, val %d, test %d",
                 r["cell"], r["split"], r["tracks_read"], r["kept_category"], r["kept_with_amplitudes"],
                 r["kept_min_frames"], r["kept_no_hotspot"], r["kept_short_long"], r["kept_min_lifetime"],
                 100 * r["aux_fraction"] if np.isfinite(r["aux_fraction"]) else float("nan"),
                 r["n_train"], r["n_val"], r["n_test"])
    return table


def _write_parquet(path: Path, df: pd.DataFrame) -> None:
    with atomic_path(path) as tmp:
        df.to_parquet(tmp, index=False)




# ----------------------------------------------------------------------------- the domain


@register
class CMEDomain(Domain):
    """Clathrin traces -> auxilin signal (regression, R^2), split by cell."""

    name = "cme"
    signal_ndim = 1
    target = "auxilin"
    metric = "r2"
    paper_reference = {"AWD": 0.262, "DB5": 0.197, "LSTM": 0.237, "AWD without interpretation loss": 0.231}
    paper_source = ("Ha et al., NeurIPS 2021, CME table: test R^2 on cells A7D2/7-8, mean over 5 seeds "
                    "(reference notebooks 03_analyze and 06_ablation_study)")
    # the hidden-20 LSTM on 40-step traces is fastest on one thread (0.4 s vs 1.6 s per epoch)
    max_torch_threads = 1
    # what each stage reads and runs (awd.stages); figures read the whole section
    stage_config = {
        "simulate": ("simulator",),
        "ingest": ("data", "detection", "tracking", "track_processing", "labels"),
        "teacher": ("teacher", "lstm"),
        "distill": ("distill", "lstm", "teacher.seed", "teacher.loss"),
        "heads": ("heads", "distill", "bootstrap", "lstm", "teacher.seed", "teacher.batch_size", "teacher.loss"),
    }
    stage_code = {
        "simulate": ("tracking/simulate.py", "tracking/movie_io.py"),
        "ingest": ("tracking/movie_io.py", "cmeanalysis_io.py", "tracking/detect.py", "tracking/link.py",
                   "tracking/pairs.py", "tracking/processing.py", "traces.py"),
        "teacher": ("lstm.py",),
        "distill": ("lstm.py",),
        "heads": ("head.py", "lstm.py"),
        "figures": ("figures.py",),
    }
    extra_outputs = {"ingest": ["funnel.csv"],
                     "heads": ["heads/selection.csv", "heads/predictions.csv", "heads/heads.json"]}

    # -- simulate ---------------------------------------------------------------------------
    def simulate(self, cfg: dict, raw_dir: Path, threads: int = 1) -> None:
        """Simulated cells in the cmeAnalysis layout (``simulator`` section)."""
        from domains.cme.tracking.simulate import SimulationConfig, write_simulated_dataset

        sim = dict(cfg["simulator"])
        n_cells, seed, condition = sim.pop("n_cells"), sim.pop("seed"), sim.pop("condition")
        write_simulated_dataset(raw_dir, SimulationConfig.from_dict(sim), n_cells=n_cells, seed=seed,
                                threads=threads, condition=condition)

    # -- ingest -----------------------------------------------------------------------------
    def ingest(self, cfg: dict, raw_dir: Path, out_dir: Path, threads: int = 1) -> Dataset:
        """Raw movies or cmeAnalysis outputs -> track tables in ``out_dir`` and the trace Dataset."""
        from domains.cme.tracking.processing import write_tables
        from domains.cme.traces import build_traces

        raw_dir, out_dir = Path(raw_dir), Path(out_dir)
        d = cfg["data"]
        out_dir.mkdir(parents=True, exist_ok=True)
        if d["source"] == "cmeanalysis":
            tracks, frames, cells = read_cmeanalysis(cfg, raw_dir, out_dir)
            names = [str(n) for n in cells["cell"]]
            split_of = assign_splits(names, d, raw_dir)
        else:
            movies = list_movies(raw_dir, d)
            names = [str(n) for n in movies["cell"]]
            split_of = assign_splits(names, d, raw_dir)  # before the expensive part: bad splits fail fast
            tracks, frames, detections, cells = track_movies(cfg, movies[movies["cell"].isin(split_of)], raw_dir,
                                                             out_dir, threads)
            _write_parquet(out_dir / "detections.parquet", detections)
        if tracks.empty:
            raise InputError(raw_dir, "no tracks found in any cell")
        ids = cell_ids(names, raw_dir)
        names = [str(n) for n in cells["cell"]]
        cells["cell_id"] = [ids[n] for n in names]
        cells["split"] = [split_of.get(n, "unused") for n in names]
        write_tables(out_dir, tracks, frames)
        train_cells = [n for n, s in split_of.items() if s == "train"]
        funnel: list[dict] = []
        X, y, cell_of, track_id, info = build_traces(tracks, frames, cfg, train_cells=train_cells, funnel=funnel)
        used = np.isin(cell_of, list(split_of))
        X, y, cell_of, track_id, info = X[used], y[used], cell_of[used], track_id[used], info[used]
        split = validation_split(np.array([split_of[c] for c in cell_of], dtype="U5"), d["val_fraction"],
                                 d["split_seed"])
        group = np.array([ids[c] for c in cell_of], dtype=np.int64)
        info = info.reset_index(drop=True)
        info.insert(1, "cell_id", group)
        info["split"] = split
        write_funnel(out_dir / "funnel.csv", funnel, info, ids, split_of, cfg)
        missing = [s for s in ("train", "test") if not np.any(split == s)]
        if missing:
            raise InputError(raw_dir, f"no {missing[0]} tracks pass the filters (catIdx "
                                      f"{cfg['labels']['categories']}, lifetime > {cfg['labels']['min_lifetime']} "
                                      f"frames, 95 % purity lifetime thresholds, hotspots removed); the funnel "
                                      f"above in the log shows where each cell's tracks were dropped")
        _write_parquet(out_dir / "traces.parquet", info)
        write_csv(out_dir / "cells.csv", cells, float_format="%.10g")
        counts = {s: int((split == s).sum()) for s in ("train", "val", "test")}
        meta = {"source": d["source"], "units": {"X": "clathrin amplitude z-scored per cell",
                                                 "auxilin": "Y_sig_mean z-scored per cell"},
                "cells": {n: {"id": ids[n], "split": split_of.get(n, "unused")} for n in names},
                "thresh_short_frames": float(info["thresh_short"].iloc[0]) if len(info) else None,
                "thresh_long_frames": float(info["thresh_long"].iloc[0]) if len(info) else None,
                "n_points": int(X.shape[1]), "counts": counts}
        log.info("cme ingest: %d traces %s from %d cells", len(X), counts, len(names))
        extra = {"track_id": np.asarray(track_id, dtype=np.int64),
                 "lifetime_s": info["lifetime_s"].to_numpy(np.float64),
                 "n_padded": info["n_padded"].to_numpy(np.int64),
                 "aux_positive": info["aux_positive"].astype("boolean").fillna(False).to_numpy(bool)}
        return Dataset(X, y, [self.target], split, group, extra, meta)

    # -- teacher ----------------------------------------------------------------------------
    def build_teacher(self, cfg: dict, dataset: Dataset):
        """The reference LSTM, one output per target column."""
        from domains.cme.lstm import build_lstm

        return build_lstm(n_outputs=dataset.y.shape[1], hidden_size=cfg["lstm"]["hidden_size"],
                          seed=cfg["teacher"]["seed"])

    # -- heads ------------------------------------------------------------------------------
    def fit_heads(self, cfg: dict, dataset: Dataset, grid: list, teacher, out_dir: Path,
                  threads: int = 1) -> dict:
        """Heads for DB5 and every grid wavelet; selection by CV R^2; table.csv and friends."""
        from domains.cme.head import evaluate_heads

        return evaluate_heads(cfg, dataset, grid, teacher, Path(out_dir), self.target)

    # -- figures ----------------------------------------------------------------------------
    def figures(self, cfg: dict, results_dir: Path, raw_dir: Path, fig_dir: Path) -> list[Path]:
        from domains.cme.figures import draw_all

        return draw_all(cfg, Path(results_dir), Path(raw_dir), Path(fig_dir))
