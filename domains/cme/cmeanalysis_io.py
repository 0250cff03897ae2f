"""Existing cmeAnalysis outputs as flat tables, so labs can reuse tracking they already ran.

Reads ``<cell>/<master>/Tracking/ProcessedTracks.mat`` (the ``tracks`` struct array written
by ``runTrackProcessing.m``) and ``<cell>/<master>/Analysis/lifetimeData.mat`` (the compact
category-1 amplitude matrices written by ``getLifetimeData.m``), in MAT v5 (scipy) or
MAT v7.3 / HDF5 (h5py) format, into two tables. Only the MAT files are needed: no movies and
no slave-channel folder (cmeAnalysis stores every channel along the arrays' channel axis,
master first), as in the exports labs publish.

* ``tracks``: one row per track (``track_id`` = the 1-based MATLAB index of the track in
  the file), with start/end frames, lifetime, cmeAnalysis category ``catIdx`` (1-8),
  visibility, motion statistics and the slave-channel significance flags;
* ``detections``: one row per track frame, including the 5-frame start/end buffers
  (``part`` = 'start_buffer' / 'track' / 'end_buffer'), with every per-frame field of every
  channel as ``<field>_<channel>`` (``A_clathrin``, ``pval_Ar_auxilin``, ...; channels named
  clathrin, auxilin, then ch2, ...), the layout of the track-frame table of
  :mod:`domains.cme.tracking.processing`.

Conventions: frames are 0-based (MATLAB frame f -> f - 1); positions are 0-based pixel
coordinates, x = column, y = row (MATLAB pixel centres 1..N -> 0..N-1); ``x``/``y`` repeat
the master channel's position. Compound tracks (merges/splits) keep one row per segment
frame, numbered by ``segment`` (1..nSeg; 0 for buffer frames). Amplitudes stay in ADU.
"""
from __future__ import annotations

import logging
import re
from pathlib import Path
from typing import Any, NamedTuple, Sequence

import h5py
import numpy as np
import pandas as pd
import scipy.io
from scipy import stats

from awd.io import InputError
from domains.cme.tracking.movie_io import CHANNELS, MASTER

log = logging.getLogger(__name__)

#: per-frame fields, in the column order they get (other per-frame fields follow, sorted).
FRAME_FIELDS = ("x", "y", "A", "c", "x_pstd", "y_pstd", "A_pstd", "c_pstd", "sigma_r",
                "SE_sigma_r", "pval_Ar", "isPSF", "hval_Ar", "hval_AD", "RSS", "maskA", "maskN")
_POSITION_FIELDS = ("x", "y")
_NOT_PER_CHANNEL = ("t", "f", "gapVect", "start", "end", "lifetime_s", "catIdx", "nSeg",
                    "visibility", "isCCP", "significantMaster", "significantSlave")

_PARTS = ("start_buffer", "track", "end_buffer")
#: cmeAnalysis' amplitude test level: k = norminv(1 - 0.05/2).
K_LEVEL = float(stats.norm.ppf(1 - 0.05 / 2))


class TrackTables(NamedTuple):
    """A per-track table and a long per-detection table (see the module docstring)."""

    tracks: pd.DataFrame
    detections: pd.DataFrame


# ----------------------------------------------------------------------------- MAT files


def _from_scipy(value: Any) -> Any:
    """A scipy.io.loadmat value as plain Python (see :func:`load_mat`)."""
    if isinstance(value, np.ndarray):
        if value.dtype.names is not None:
            elements = [{name: _from_scipy(el[name]) for name in value.dtype.names}
                        for el in value.ravel(order="F")]
            return elements[0] if value.size == 1 else elements
        if value.dtype.kind == "O":
            return [_from_scipy(v) for v in value.ravel(order="F")]
        if value.dtype.kind == "U":
            strings = [str(s) for s in value.ravel()]
            return strings[0] if len(strings) == 1 else strings
        if value.size == 0:
            return np.zeros((0, 0))
        return value
    return None  # MATLAB objects, function handles: not used by the track readers


def _h5_class(obj: h5py.HLObject) -> str | None:
    cls = obj.attrs.get("MATLAB_class")
    return cls.decode() if isinstance(cls, bytes) else (None if cls is None else str(cls))


def _is_ref_dataset(obj: Any) -> bool:
    return isinstance(obj, h5py.Dataset) and h5py.check_dtype(ref=obj.dtype) is not None


def _double(data: np.ndarray) -> np.ndarray:
    data = data.T
    return data.reshape(1, -1) if data.ndim < 2 else data


def _deref(ref: h5py.Reference, file: h5py.File) -> Any:
    """The object ``ref`` points to, as :func:`_from_h5` returns it; MATLAB doubles (most of a
    struct array's elements) are read through the low-level API, about twice as fast."""
    oid = h5py.h5r.dereference(ref, file.id)
    if isinstance(oid, h5py.h5d.DatasetID) and oid.dtype == np.float64:
        data = np.empty(oid.get_space().shape, dtype=np.float64)
        if data.size:
            oid.read(h5py.h5s.ALL, h5py.h5s.ALL, data)
        return _double(data)
    return _from_h5(file[ref], file)


def _from_h5(obj: h5py.HLObject, file: h5py.File) -> Any:
    """A MAT v7.3 group/dataset as plain Python (see :func:`load_mat`)."""
    if isinstance(obj, h5py.Dataset) and obj.dtype == np.float64:
        # MATLAB doubles (most of a ProcessedTracks.mat): no attribute changes their meaning
        # (empty arrays are stored as uint64 shapes), so skip the slow attribute reads
        return _double(np.asarray(obj[()]))
    cls = _h5_class(obj)
    empty = bool(obj.attrs.get("MATLAB_empty", 0)) or cls == "canonical empty"
    if isinstance(obj, h5py.Group):
        if empty:
            return []
        names = obj.attrs.get("MATLAB_fields")
        fields = ([b"".join(np.asarray(n).ravel()).decode() for n in names] if names is not None
                  else sorted(obj.keys()))
        members = {f: obj[f] for f in fields}
        if any(_is_ref_dataset(m) and _h5_class(m) is None for m in members.values()):
            # struct array: each field is an array of references, one per element
            refs = {f: m[()].ravel() for f, m in members.items()}
            n = len(next(iter(refs.values())))
            elements = [{f: _deref(refs[f][i], file) for f in fields} for i in range(n)]
            return elements[0] if n == 1 else elements
        return {f: _from_h5(m, file) for f, m in members.items()}
    if cls == "cell" or (cls is None and _is_ref_dataset(obj)):
        return [] if empty else [_from_h5(file[ref], file) for ref in obj[()].ravel()]
    if empty:
        return "" if cls == "char" else np.zeros((0, 0))
    data = obj[()]
    if cls == "char":
        rows = ["".join(map(chr, row)) for row in np.atleast_2d(data.T)]
        return rows[0] if len(rows) == 1 else rows
    if data.dtype.names == ("real", "imag"):
        data = data["real"] + 1j * data["imag"]
    data = np.asarray(data).T
    if data.ndim < 2:
        data = data.reshape(1, -1)
    return data.astype(bool) if cls == "logical" else data


def load_mat(path: str | Path) -> dict[str, Any]:
    """All variables of a MAT file (v4/v5/v7 via scipy, v7.3 via h5py) as plain Python.

    Numeric and logical arrays keep MATLAB's orientation (at least 2-D); char arrays become
    str; a scalar struct becomes a dict, a struct array a list of dicts; a cell array a
    list (both flattened in MATLAB order); empty arrays ``np.zeros((0, 0))``.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "file not found")
    try:
        if h5py.is_hdf5(path):
            with h5py.File(path, "r") as file:
                return {k: _from_h5(file[k], file) for k in file.keys()
                        if k not in ("#refs#", "#subsystem#")}
        raw = scipy.io.loadmat(path, squeeze_me=False, struct_as_record=True,
                               chars_as_strings=True)
    except Exception as err:  # scipy/h5py raise many types on damaged files
        raise InputError(path, f"unreadable MAT file ({type(err).__name__}: {err})") from err
    return {k: _from_scipy(v) for k, v in raw.items() if not k.startswith("__")}


# ----------------------------------------------------------------------------- helpers


def amplitude_pvalue(A: np.ndarray, A_pstd: np.ndarray, sigma_r: np.ndarray,
                     SE_sigma_r: np.ndarray, k: float = K_LEVEL) -> np.ndarray:
    """cmeAnalysis ``pval_Ar``: one-sided Welch test of A > k*sigma_r, from stored fields.

    The residual pixel count is recovered as npx = round((sigma_r/SE_sigma_r)^2/2 + 1),
    since cmeAnalysis stores SE_sigma_r = sigma_r/sqrt(2(npx-1)) (``fitGaussians2D.m``).
    """
    A, A_pstd, sigma_r, SE = (np.asarray(v, dtype=float) for v in (A, A_pstd, sigma_r, SE_sigma_r))
    with np.errstate(divide="ignore", invalid="ignore"):
        npx = np.round((sigma_r / SE) ** 2 / 2 + 1)
        se_r = SE * k
        df = (npx - 1) * (A_pstd ** 2 + se_r ** 2) ** 2 / (A_pstd ** 4 + se_r ** 4)
        t = (A - sigma_r * k) / np.sqrt((A_pstd ** 2 + se_r ** 2) / npx)
        return stats.t.cdf(-t, df)


def _channel_names(n_channels: int, names: Sequence[str]) -> list[str]:
    return [names[i] if i < len(names) else f"ch{i}" for i in range(n_channels)]


def _scalar(value: Any) -> float:
    """A MATLAB scalar as float (NaN when empty)."""
    arr = np.asarray(value, dtype=float) if isinstance(value, np.ndarray) else None
    if arr is None or arr.size == 0:
        return np.nan
    return float(arr.ravel()[0])


def _cell_of(path: Path) -> tuple[str, str]:
    """(condition, cell) from <condition>/<cell>/<master>/{Tracking,Analysis}/<file>.mat."""
    parts = path.resolve().parents
    if path.parent.name in ("Tracking", "Analysis") and len(parts) > 3:
        return parts[3].name, parts[2].name
    return parts[1].name, parts[0].name


def _row_vector(track: dict, field: str, k: int, path: Path) -> np.ndarray:
    value = track.get(field)
    if not isinstance(value, np.ndarray) or value.ndim != 2 or min(value.shape) > 1:
        raise InputError(path, f"track {k}: field '{field}' is not a row vector")
    return value.astype(float).ravel()


def _per_channel(value: Any, n_ch: int, length: int) -> np.ndarray | None:
    """An (nCh, L) per-frame field as float, or None when the field is not per frame."""
    if not isinstance(value, np.ndarray) or value.ndim != 2 or value.dtype.kind not in "biuf":
        return None
    if value.shape == (n_ch, length):
        return value.astype(float)
    return None


def _field_order(names: set[str]) -> list[str]:
    return [f for f in FRAME_FIELDS if f in names] + sorted(names - set(FRAME_FIELDS))


def _detections_frame(columns: dict[str, list[np.ndarray]], fields: list[str],
                      channels: list[str]) -> pd.DataFrame:
    data: dict[str, Any] = {
        "track_id": np.concatenate(columns["track_id"]).astype(np.int64),
        "segment": np.concatenate(columns["segment"]).astype(np.int64),
        "part": pd.Categorical(np.concatenate(columns["part"]), categories=list(_PARTS)),
        "frame": np.concatenate(columns["frame"]).astype(np.int64),
        "t_s": np.concatenate(columns["t_s"]).astype(float),
        "gap": np.concatenate(columns["gap"]).astype(bool),
    }
    for name in fields:
        stacked = np.concatenate(columns[name], axis=1)
        if name in _POSITION_FIELDS:
            stacked = stacked - 1.0
        for c, channel in enumerate(channels):
            data[f"{name}_{channel}"] = stacked[c]
    out = pd.DataFrame(data)
    if "x" in fields:
        out.insert(6, "x", out[f"x_{channels[0]}"])
        out.insert(7, "y", out[f"y_{channels[0]}"])
    return out


def _struct_list(value: Any) -> list[dict]:
    if isinstance(value, dict):
        return [value]
    if isinstance(value, list) and all(isinstance(v, dict) for v in value):
        return value
    if isinstance(value, np.ndarray) and value.size == 0:
        return []
    raise TypeError


def _buffer_frames(buffer: Any, part: str, start: float, end: float) -> np.ndarray | None:
    """1-based frames of a start/end buffer struct, None when the track has none.

    ``runTrackProcessing.m`` stores buffers with ``t`` and the per-frame fields but no ``f``:
    the start buffer covers the frames just before ``start``, the end buffer those just after
    ``end``, as many as the buffer arrays have columns. An ``f`` field, where present, wins.
    """
    if not isinstance(buffer, dict):
        return None
    if isinstance(buffer.get("f"), np.ndarray) and buffer["f"].size:
        return np.asarray(buffer["f"], dtype=float).ravel()
    widths = {np.asarray(v).shape[-1] for k, v in buffer.items()
              if isinstance(v, np.ndarray) and v.ndim == 2 and v.size and k != "t"}
    if len(widths) != 1 or not np.isfinite(start) or not np.isfinite(end):
        return None
    n = widths.pop()
    return (start - n + np.arange(n) if part == "start_buffer" else end + 1 + np.arange(n)).astype(float)


def _bool_or_na(value: Any, index: int) -> Any:
    if not isinstance(value, np.ndarray) or value.size <= index:
        return pd.NA
    v = float(np.asarray(value, dtype=float).ravel()[index])
    return pd.NA if np.isnan(v) else bool(v)


# ----------------------------------------------------------------------------- ProcessedTracks


def read_processed_tracks(path: str | Path, *, cell: str | None = None,
                          condition: str | None = None,
                          channel_names: Sequence[str] = CHANNELS) -> TrackTables:
    """Tables of a cmeAnalysis ``ProcessedTracks.mat`` (v5 or v7.3).

    ``cell``/``condition`` default to the folder names of the cmeAnalysis tree
    (``<condition>/<cell>/<master>/Tracking/ProcessedTracks.mat``); ``channel_names``
    names the file's channels in order (master first, as cmeAnalysis stores them).
    """
    path = Path(path)
    mat = load_mat(path)
    if "tracks" not in mat:
        raise InputError(path, f"no 'tracks' variable (found {sorted(mat)}); expected a "
                         f"cmeAnalysis ProcessedTracks.mat")
    try:
        tracks = _struct_list(mat["tracks"])
    except TypeError:
        raise InputError(path, "'tracks' is not a struct array") from None
    default_condition, default_cell = _cell_of(path)
    cell = default_cell if cell is None else cell
    condition = default_condition if condition is None else condition
    required = {"f", "x", "y", "A", "start", "end"}
    n_ch = None
    track_rows, columns = [], {k: [] for k in ("track_id", "segment", "part", "frame", "t_s", "gap")}
    fields: list[str] | None = None
    for k, track in enumerate(tracks, start=1):
        missing = required - set(track)
        if missing:
            raise InputError(path, f"track {k} lacks the fields {sorted(missing)}")
        f = _row_vector(track, "f", k, path)
        length = f.size
        x = track["x"]
        if n_ch is None:
            if not isinstance(x, np.ndarray) or x.ndim != 2 or x.shape[1] != length:
                raise InputError(path, f"track {k}: 'x' has shape {getattr(x, 'shape', None)}, "
                                 f"expected (channels, {length})")
            n_ch = x.shape[0]
            fields = _field_order({name for name, v in track.items() if name not in
                                   _NOT_PER_CHANNEL and _per_channel(v, n_ch, length) is not None})
            for name in fields:
                columns[name] = []
        t = _row_vector(track, "t", k, path) if "t" in track else np.full(length, np.nan)
        gap = (_row_vector(track, "gapVect", k, path) if isinstance(track.get("gapVect"), np.ndarray)
               and track["gapVect"].size == length else np.zeros(length))
        valid = ~np.isnan(f)
        segment = 1 + np.cumsum(~valid)
        blocks = [("start_buffer", track.get("startBuffer")), ("track", None),
                  ("end_buffer", track.get("endBuffer"))]
        for part, buffer in blocks:
            if part == "track":
                source, keep, seg, b_f, b_t, b_gap = track, valid, segment[valid], f, t, gap
            else:
                b_f = _buffer_frames(buffer, part, _scalar(track["start"]), _scalar(track["end"]))
                if b_f is None:
                    continue
                b_t = (np.asarray(buffer["t"], dtype=float).ravel() if "t" in buffer
                       and np.asarray(buffer["t"]).size == b_f.size else np.full(b_f.size, np.nan))
                keep = ~np.isnan(b_f)
                source, seg, b_gap = buffer, np.zeros(int(keep.sum())), np.zeros(b_f.size)
            n = int(keep.sum())
            columns["track_id"].append(np.full(n, k))
            columns["segment"].append(seg)
            columns["part"].append(np.full(n, part))
            columns["frame"].append(b_f[keep] - 1)
            columns["t_s"].append(b_t[keep])
            columns["gap"].append(b_gap[keep] != 0)
            for name in fields:
                values = _per_channel(source.get(name), n_ch, b_f.size)
                if values is None:
                    if part == "track":
                        raise InputError(path, f"track {k}: field '{name}' is not ({n_ch}, {length})")
                    values = np.full((n_ch, b_f.size), np.nan)
                columns[name].append(values[:, keep])
        motion = track.get("MotionAnalysis")
        motion = motion if isinstance(motion, dict) else {}
        msd = np.asarray(motion.get("MSD", np.zeros((0, 0))), dtype=float)
        row = {"track_id": k, "start_frame": int(_scalar(track["start"])) - 1,
               "end_frame": int(_scalar(track["end"])) - 1,
               "lifetime_s": _scalar(track.get("lifetime_s")),
               "catIdx": _scalar(track.get("catIdx")), "nSeg": _scalar(track.get("nSeg")),
               "visibility": _scalar(track.get("visibility")),
               "isCCP": _bool_or_na(track.get("isCCP"), 0),
               "n_gaps": int(np.nansum(gap)),
               "total_displacement": _scalar(motion.get("totalDisplacement")),
               "msd_max": float(np.nanmax(msd)) if np.any(np.isfinite(msd)) else np.nan}
        for flag in ("significantMaster", "significantSlave"):
            for c, channel in enumerate(_channel_names(n_ch, channel_names)):
                row[f"{flag}_{channel}"] = _bool_or_na(track.get(flag), c)
        amplitude = _per_channel(track.get("A"), n_ch, length)
        for c, channel in enumerate(_channel_names(n_ch, channel_names)):
            values = amplitude[c][valid] if amplitude is not None else np.zeros(0)
            row[f"A_max_{channel}"] = float(np.nanmax(values)) if np.any(np.isfinite(values)) else np.nan
        track_rows.append(row)
    channels = _channel_names(n_ch or len(channel_names), channel_names)
    track_table = _tracks_frame(track_rows, channels, cell, condition)
    if not track_rows:
        detections = pd.DataFrame(columns=["condition", "cell", "track_id", "segment", "part",
                                           "frame", "t_s", "gap"])
    else:
        detections = _detections_frame(columns, fields or [], channels)
        detections.insert(0, "cell", cell)
        detections.insert(0, "condition", condition)
    return TrackTables(track_table, detections)


def _tracks_frame(rows: list[dict], channels: list[str], cell: str, condition: str) -> pd.DataFrame:
    flags = [f"{flag}_{ch}" for flag in ("significantMaster", "significantSlave") for ch in channels]
    maxima = [f"A_max_{ch}" for ch in channels]
    table = pd.DataFrame(rows, columns=["track_id", "start_frame", "end_frame", "lifetime_s",
                                        "catIdx", "nSeg", "visibility", "isCCP", "n_gaps",
                                        "total_displacement", "msd_max", *maxima, *flags])
    table = table.astype({"track_id": np.int64, "start_frame": np.int64, "end_frame": np.int64,
                          "lifetime_s": float, "n_gaps": np.int64, "total_displacement": float,
                          "msd_max": float})
    table.insert(3, "n_frames", table["end_frame"] - table["start_frame"] + 1)
    table.insert(table.columns.get_loc("msd_max") + 1, "mean_total_displacement",
                 table["total_displacement"] / table["lifetime_s"])
    for name in ("catIdx", "nSeg", "visibility"):
        table[name] = pd.array(table[name].to_numpy(dtype=float), dtype="Float64").astype("Int64")
    for name in ("isCCP", *flags):
        table[name] = table[name].astype("boolean")
    table.insert(0, "cell", cell)
    table.insert(0, "condition", condition)
    return table


# ----------------------------------------------------------------------------- lifetimeData


def _matrix3(mat: dict, name: str, n_rows: int, path: Path) -> np.ndarray:
    """A (tracks, frames, channels) matrix (MATLAB drops a trailing singleton channel axis)."""
    value = mat.get(name)
    if not isinstance(value, np.ndarray):
        raise InputError(path, f"variable '{name}' missing or not numeric")
    arr = value.astype(float)
    if arr.size == 0:
        return arr.reshape(0, 0, 1)
    if arr.ndim == 2:
        arr = arr[:, :, None]
    if arr.ndim != 3 or arr.shape[0] != n_rows:
        raise InputError(path, f"'{name}' has shape {value.shape}; expected ({n_rows} category-1 "
                         f"tracks, frames, channels)")
    return arr


def read_lifetime_data(path: str | Path, *, cell: str | None = None, condition: str | None = None,
                       channel_names: Sequence[str] = CHANNELS) -> TrackTables:
    """Tables of a cmeAnalysis ``lifetimeData.mat`` (v5 or v7.3).

    The file keeps per-frame amplitudes only for category-1 tracks, so ``detections`` covers
    those (A, A_pstd, sigma_r, SE_sigma_r and ``pval_Ar`` recomputed with
    :func:`amplitude_pvalue`, per channel; no positions); ``tracks`` lists every track with
    its start, length, lifetime, catIdx and significance flags (and ``A_max_<channel>`` of
    the category-1 tracks).
    """
    path = Path(path)
    mat = load_mat(path)
    required = ["lifetime_s", "trackLengths", "start", "catIdx"]
    missing = [name for name in required if not isinstance(mat.get(name), np.ndarray)]
    if missing:
        raise InputError(path, f"missing variables {missing}; expected a cmeAnalysis lifetimeData.mat")
    vectors = {name: mat[name].astype(float).ravel() for name in required}
    n = vectors["catIdx"].size
    if any(v.size != n for v in vectors.values()):
        raise InputError(path, f"per-track vectors differ in length: "
                         f"{ {k: v.size for k, v in vectors.items()} }")
    default_condition, default_cell = _cell_of(path)
    cell = default_cell if cell is None else cell
    condition = default_condition if condition is None else condition
    index = mat.get("index")
    track_id = (index.astype(float).ravel() if isinstance(index, np.ndarray) and index.size == n
                and np.all(np.isfinite(index)) else np.arange(1, n + 1, dtype=float))
    A = _matrix3(mat, "A", int(np.sum(vectors["catIdx"] == 1)), path)
    channels = _channel_names(A.shape[2], channel_names)
    rows = {"track_id": track_id.astype(np.int64),
            "start_frame": vectors["start"].astype(np.int64) - 1,
            "end_frame": (vectors["start"] + vectors["trackLengths"] - 2).astype(np.int64),
            "n_frames": vectors["trackLengths"].astype(np.int64),
            "lifetime_s": vectors["lifetime_s"],
            "catIdx": pd.array(vectors["catIdx"].astype(np.int64), dtype="Int64")}
    for flag in ("significantMaster", "significantSlave"):
        value = mat.get(flag)
        for c, channel in enumerate(channels):
            column = [pd.NA] * n
            if isinstance(value, np.ndarray) and value.shape[:1] == (n,) and value.ndim == 2 \
                    and value.shape[1] > c:
                column = [bool(v) if np.isfinite(v) else pd.NA for v in value[:, c].astype(float)]
            rows[f"{flag}_{channel}"] = pd.array(column, dtype="boolean")
    cat1 = vectors["catIdx"] == 1
    for c, channel in enumerate(channels):
        a_max = np.full(n, np.nan)
        if A.shape[0]:
            finite = np.isfinite(A[:, :, c])
            peak = np.max(np.where(finite, A[:, :, c], -np.inf), axis=1)
            a_max[cat1] = np.where(finite.any(axis=1), peak, np.nan)
        rows[f"A_max_{channel}"] = a_max
    tracks = pd.DataFrame(rows)
    tracks.insert(0, "cell", cell)
    tracks.insert(0, "condition", condition)
    frame_s = float(np.nanmedian(vectors["lifetime_s"] / vectors["trackLengths"])) if n else np.nan
    detections = _lifetime_detections(mat, A, tracks[tracks["catIdx"] == 1], channels, frame_s, path)
    detections.insert(0, "cell", cell)
    detections.insert(0, "condition", condition)
    return TrackTables(tracks, detections)


def _lifetime_detections(mat: dict, A: np.ndarray, valid: pd.DataFrame, channels: list[str],
                         frame_s: float, path: Path) -> pd.DataFrame:
    nt = A.shape[0]
    matrices = {"A": A}
    for name in ("A_pstd", "sigma_r", "SE_sigma_r"):
        matrices[name] = _matrix3(mat, name, nt, path) if name in mat else np.full_like(A, np.nan)
        if matrices[name].shape != A.shape:
            raise InputError(path, f"'{name}' has shape {matrices[name].shape}, 'A' has {A.shape}")
    gap_mat = mat.get("gapMat_Ia")
    gaps = (np.asarray(gap_mat, dtype=float) != 0 if isinstance(gap_mat, np.ndarray)
            and gap_mat.shape == A.shape[:2] else np.zeros(A.shape[:2], dtype=bool))
    ids = valid["track_id"].to_numpy()
    starts = valid["start_frame"].to_numpy()
    lengths = valid["n_frames"].to_numpy()
    if np.any(lengths > A.shape[1]):
        raise InputError(path, f"track lengths up to {lengths.max()} exceed the {A.shape[1]} "
                         f"frames of 'A'")
    blocks = []
    j = np.arange(A.shape[1])
    inside = j[None, :] < lengths[:, None]
    rows, cols = np.nonzero(inside)
    blocks.append(dict(track_id=ids[rows], part="track", frame=starts[rows] + cols, gap=gaps[rows, cols],
                       values={name: m[rows, cols, :] for name, m in matrices.items()}))
    for part, a_name, s_name in (("start_buffer", "sbA", "sbSigma_r"), ("end_buffer", "ebA", "ebSigma_r")):
        if not isinstance(mat.get(a_name), np.ndarray) or mat[a_name].size == 0 or nt == 0:
            continue
        buf = _matrix3(mat, a_name, nt, path)
        sig = _matrix3(mat, s_name, nt, path) if s_name in mat else np.full_like(buf, np.nan)
        nb = buf.shape[1]
        rows, cols = np.divmod(np.arange(nt * nb), nb)
        frames = (starts[rows] - nb + cols if part == "start_buffer"
                  else starts[rows] + lengths[rows] + cols)
        values = {"A": buf[rows, cols, :], "sigma_r": sig[rows, cols, :]}
        values.update({name: np.full_like(values["A"], np.nan) for name in ("A_pstd", "SE_sigma_r")})
        blocks.append(dict(track_id=ids[rows], part=part, frame=frames,
                           gap=np.zeros(rows.size, dtype=bool), values=values))
    order = {"start_buffer": 0, "track": 1, "end_buffer": 2}
    data: dict[str, Any] = {
        "track_id": np.concatenate([b["track_id"] for b in blocks]).astype(np.int64),
        "part": np.concatenate([np.full(b["track_id"].size, b["part"]) for b in blocks]),
        "frame": np.concatenate([b["frame"] for b in blocks]).astype(np.int64),
        "gap": np.concatenate([b["gap"] for b in blocks]).astype(bool)}
    for name in ("A", "A_pstd", "sigma_r", "SE_sigma_r"):
        stacked = np.concatenate([b["values"][name] for b in blocks], axis=0)
        for c, channel in enumerate(channels):
            data[f"{name}_{channel}"] = stacked[:, c]
    for channel in channels:
        data[f"pval_Ar_{channel}"] = amplitude_pvalue(
            data[f"A_{channel}"], data[f"A_pstd_{channel}"], data[f"sigma_r_{channel}"],
            data[f"SE_sigma_r_{channel}"])
    out = pd.DataFrame(data)
    out["t_s"] = out["frame"] * frame_s
    out["_order"] = out["part"].map(order)
    out = out.sort_values(["track_id", "_order", "frame"], kind="stable").drop(columns="_order")
    out["part"] = pd.Categorical(out["part"], categories=list(_PARTS))
    front = ["track_id", "part", "frame", "t_s", "gap"]
    return out[front + [c for c in out.columns if c not in front]].reset_index(drop=True)


# ----------------------------------------------------------------------------- folder tree

#: where each output lies under ``<cell>/<master>/`` and its reader.
OUTPUT_FILES = {"ProcessedTracks": ("Tracking", "ProcessedTracks.mat"),
                "lifetimeData": ("Analysis", "lifetimeData.mat")}


def scan_output_tree(root: str | Path, *, master: str = MASTER, source: str = "auto",
                     condition: str | None = None) -> tuple[pd.DataFrame, str]:
    """Cells of a cmeAnalysis tree that hold outputs, and the output kind read.

    A cell is a folder ``<root>/<condition>/<cell>/`` with a ``<master>/`` subfolder; movies
    and the slave-channel folder are not needed (the MAT files hold both channels).
    ``source`` 'auto' reads ProcessedTracks.mat when a cell has one, else lifetimeData.mat.
    Returns (table with condition, cell, path, missing (the file is absent); the source used).
    """
    root = Path(root)
    if source not in ("auto", *OUTPUT_FILES):
        raise InputError(None, f"cme.data.cmeanalysis_file must be auto, ProcessedTracks or "
                         f"lifetimeData, got {source!r}")
    if not root.is_dir():
        raise InputError(root, "data root is not a directory")
    rows = []
    for cond in sorted(p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")):
        if condition is not None and cond.name != condition:
            continue
        skipped = [p.name for p in cond.iterdir() if p.is_dir() and not p.name.startswith(".")
                   and not (p / master).is_dir()]
        if skipped:
            log.warning("%s: left out %s (no '%s' subfolder, cme.data.master)", cond, sorted(skipped), master)
        for cell in sorted((p for p in cond.iterdir() if (p / master).is_dir()),
                           key=lambda p: [(0, int(t)) if t.isdigit() else (1, t)
                                          for t in re.split(r"(\d+)", p.name) if t]):
            rows.append({"condition": cond.name, "cell": cell.name, "cell_dir": cell,
                         **{kind: (cell / master).joinpath(*where).is_file()
                            for kind, where in OUTPUT_FILES.items()}})
    conditions = sorted({p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")})
    if not rows:
        where = f"condition {condition!r} (cme.data.condition; conditions: {conditions})" \
            if condition is not None else "any condition folder"
        hint = ""
        if (root / master).is_dir():
            hint = "; the data root is a cell folder: point cme.data.root two levels higher"
        elif any((p / master).is_dir() for p in root.iterdir() if p.is_dir()):
            hint = "; the data root holds the cell folders: point cme.data.root at the folder above it"
        raise InputError(root, f"no cell folders with a '{master}' subfolder in {where}; expected "
                         f"<root>/<condition>/<cell>/{master}/{{Tracking/ProcessedTracks.mat,"
                         f"Analysis/lifetimeData.mat}} (cme.data.master names the folder){hint}")
    table = pd.DataFrame(rows)
    if source == "auto":
        source = next((kind for kind in OUTPUT_FILES if table[kind].any()), None)
        if source is None:
            raise InputError(root, f"no cmeAnalysis output in any of the cells {list(table['cell'])}: "
                             f"expected <cell>/{master}/Tracking/ProcessedTracks.mat or "
                             f"<cell>/{master}/Analysis/lifetimeData.mat")
    table["path"] = [Path(d, master, *OUTPUT_FILES[source]) for d in table["cell_dir"]]
    table["missing"] = ~table[source]
    return table[["condition", "cell", "path", "missing"]], source


def read_cmeanalysis_tree(root: str | Path, *, master: str = MASTER, source: str = "auto",
                          condition: str | None = None,
                          channel_names: Sequence[str] = CHANNELS) -> TrackTables:
    """Concatenated tables of every cell of a cmeAnalysis tree (see :func:`scan_output_tree`).

    Channel ``k`` of the MAT arrays is ``channel_names[k]``: cmeAnalysis stores the master
    (clathrin) first and the slave channels after it, so no movie or slave folder is needed.
    """
    table, source = scan_output_tree(root, master=master, source=source, condition=condition)
    reader = read_processed_tracks if source == "ProcessedTracks" else read_lifetime_data
    log.info("reading %s.mat of %d cells under %s", source, len(table), root)
    tables = []
    for row in table.itertuples():
        if row.missing:
            missing = list(table.loc[table["missing"], "cell"])
            raise InputError(row.path, f"cmeAnalysis output missing for the cells {missing} "
                             f"(cme.data.cmeanalysis_file: {source}); every cell needs the same output")
        t = reader(row.path, cell=row.cell, condition=row.condition, channel_names=channel_names)
        channels = [c for c in t.tracks.columns if c.startswith("A_max_")]
        if len(channels) < 2:
            raise InputError(row.path, f"the file holds {len(channels)} channel; the auxilin labels need "
                             f"the slave channel as the second channel of its arrays")
        tables.append(t)
    return TrackTables(pd.concat([t.tracks for t in tables], ignore_index=True),
                       pd.concat([t.detections for t in tables], ignore_index=True))
