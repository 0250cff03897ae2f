"""Two-channel TIRF movies (clathrin + auxilin) as labs have them: find, read, check, write.

Two input layouts are accepted:

* the cmeAnalysis folder tree ``<root>/<condition>/<cell>/{TagRFP,EGFP}/*.tif``: one
  multi-page TIFF (or a sequence of single-page TIFFs) per channel; the *master* folder
  holds clathrin, the *slave* folder auxilin (both names configurable). The frame interval
  may be encoded in the cell folder name the way cmeAnalysis parses it (``Cell1_1s``,
  ``1_1.5s``, ``Cell2_500ms``);
* single multi-channel TIFF / OME-TIFF files ``<root>[/<condition>]/<name>.tif`` whose axes
  (``TCYX``, ``CTYX``, ``TZCYX``, ...) come from the OME or ImageJ metadata. Which channel is
  clathrin and which auxilin comes from the channel names in the metadata (matched to the
  master/slave names) or from explicit indices; never from the order alone.

Frame interval and pixel size come from the caller (config), the file metadata (OME
``TimeIncrement``/``PhysicalSizeX``, ImageJ ``finterval``/``unit`` with the TIFF resolution
tags) or the folder name; there is no silent default. When the caller gives a value it
wins (a disagreeing file value is logged); otherwise all values found must agree.

Pixel values: cmeAnalysis expects raw camera counts (uint16). Files stored with another
dtype (float32 exports, uint8, int32) are accepted when every value is an integer in
[0, 65535], so the conversion to uint16 is exact, and uint16 data that look contrast-stretched
(exactly 0 to 65535) or 8-bit are accepted too; all of these get a warning naming what loses
its meaning (absolute ADU thresholds, amplitudes) and the settings to review. Fractional,
negative, non-finite or larger values (background-subtracted or rescaled data) are
rejected, because the downstream noise model and detection thresholds assume camera counts.

Every problem with an input raises :class:`awd.io.InputError` naming the file.
"""
from __future__ import annotations

import logging
import math
import re
import xml.etree.ElementTree as ET
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Iterator, Mapping

import numpy as np
import pandas as pd
import tifffile

from awd.io import InputError, atomic_dir, contained, safe_name, write_json

log = logging.getLogger(__name__)

#: channel order of :attr:`Movie.data`.
CHANNELS = ("clathrin", "auxilin")
#: default master (clathrin) and slave (auxilin) channel folder names of the cmeAnalysis tree.
MASTER, SLAVE = "TagRFP", "EGFP"
#: default minimum number of frames: cmeAnalysis needs 5-frame buffers on both ends of a
#: track plus the track itself, so shorter movies cannot give complete tracks.
MIN_FRAMES = 20

_TIFF_SUFFIXES = (".tif", ".tiff")
# cmeAnalysis reads the frame interval from '_<number>s' or '_<number>ms' in the path.
_INTERVAL_RE = re.compile(r"_(\d+(?:\.\d*)?|\.\d+)(ms|s)(?![A-Za-z0-9])")
_CELL_RE = re.compile(r"^cell\s*\d+", re.IGNORECASE)
_LENGTH_UM = {"nm": 1e-3, "nanometer": 1e-3, "um": 1.0, "µm": 1.0, "\u03bcm": 1.0,
              "micron": 1.0, "microns": 1.0, "micrometer": 1.0, "mm": 1e3, "millimeter": 1e3,
              "cm": 1e4, "centimeter": 1e4, "m": 1e6, "meter": 1e6, "å": 1e-4, "angstrom": 1e-4}
_TIME_S = {"s": 1.0, "sec": 1.0, "second": 1.0, "seconds": 1.0, "ms": 1e-3, "msec": 1e-3,
           "millisecond": 1e-3, "us": 1e-6, "µs": 1e-6, "\u03bcs": 1e-6, "min": 60.0,
           "minute": 60.0, "h": 3600.0, "hr": 3600.0, "hour": 3600.0}
# a plausible camera pixel projected into the sample, in µm; values outside are tag junk
# (e.g. the 72 dpi default of image editors gives 352.8 µm).
_PIXEL_UM_RANGE = (0.005, 20.0)
# messages of the tifffile logger that mean the file is damaged rather than just unusual.
_TIFF_DAMAGE = re.compile(r"invalid|corrupt|failed to read|truncat", re.IGNORECASE)


@dataclass
class Movie:
    """One two-channel movie: ``data`` is (T, 2, H, W) uint16, channel 0 clathrin, 1 auxilin."""

    data: np.ndarray
    frame_interval_s: float
    pixel_size_um: float
    name: str
    sources: tuple[Path, ...] = ()
    condition: str = ""

    def __post_init__(self) -> None:
        if self.data.ndim != 4 or self.data.shape[1] != 2 or self.data.dtype != np.uint16:
            raise ValueError(f"Movie data must be (T, 2, H, W) uint16, got {self.data.shape} "
                             f"{self.data.dtype}")
        self.frame_interval_s = float(self.frame_interval_s)
        self.pixel_size_um = float(self.pixel_size_um)
        self.sources = tuple(Path(p) for p in self.sources)

    @property
    def n_frames(self) -> int:
        return int(self.data.shape[0])

    @property
    def shape(self) -> tuple[int, int]:
        """(H, W) of one frame."""
        return int(self.data.shape[2]), int(self.data.shape[3])


# ----------------------------------------------------------------------------- names


def interval_from_name(name: str) -> float | None:
    """Frame interval in s parsed from a cmeAnalysis cell folder name ('Cell1_1s' -> 1.0)."""
    matches = _INTERVAL_RE.findall(name)
    if not matches:
        return None
    value, unit = matches[-1]
    return float(value) * (1e-3 if unit == "ms" else 1.0)


def interval_suffix(frame_interval_s: float) -> str:
    """The folder-name suffix cmeAnalysis parses back to ``frame_interval_s`` ('1s', '500ms')."""
    ms = frame_interval_s * 1000.0
    if frame_interval_s < 1.0 and abs(ms - round(ms)) < 1e-9:
        return f"{round(ms)}ms"
    return f"{frame_interval_s:g}s"


def _natural_key(name: str) -> list[tuple[int, Any]]:
    return [(0, int(part)) if part.isdigit() else (1, part.lower())
            for part in re.split(r"(\d+)", name) if part]


def _visible_children(folder: Path) -> list[Path]:
    """Entries of ``folder`` without hidden ones ('.x', macOS '._x' resource forks)."""
    return sorted((p for p in folder.iterdir() if not p.name.startswith(".")),
                  key=lambda p: _natural_key(p.name))


def _tiff_files(folder: Path) -> list[Path]:
    return [p for p in _visible_children(folder)
            if p.is_file() and p.suffix.lower() in _TIFF_SUFFIXES]


def _movie_stem(path: Path) -> str:
    name = path.name
    for suffix in (".ome.tiff", ".ome.tif", ".tiff", ".tif"):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


# ----------------------------------------------------------------------------- scanning


def _scan_cells(root: Path, master: str, slave: str) -> pd.DataFrame:
    rows = []
    for condition in (p for p in _visible_children(root) if p.is_dir()):
        if condition.name in (master, slave):
            raise InputError(condition, f"channel folder directly under the data root; expected "
                             f"<root>/<condition>/<cell>/{{{master},{slave}}} (point the data "
                             f"root two levels higher)")
        for cell in (p for p in _visible_children(condition) if p.is_dir()):
            has = {ch: (cell / ch).is_dir() for ch in (master, slave)}
            if not any(has.values()):
                if _CELL_RE.match(cell.name) or interval_from_name(cell.name) is not None:
                    found = [p.name for p in _visible_children(cell) if p.is_dir()]
                    raise InputError(cell, f"cell folder has neither channel folder "
                                     f"'{master}' nor '{slave}' (subfolders: {found}); set the "
                                     f"master/slave channel folder names (cme.data.master, cme.data.slave)")
                log.warning("%s: left out, holds neither channel folder '%s' nor '%s' (not a cell folder)",
                            cell, master, slave)
                continue
            missing = [ch for ch, ok in has.items() if not ok]
            if missing:
                raise InputError(cell, f"cell folder lacks the channel folder '{missing[0]}' "
                                 f"(master '{master}' = clathrin, slave '{slave}' = auxilin)")
            interval = interval_from_name(cell.name)
            rows.append({"condition": condition.name, "cell": cell.name,
                         "interval_s": np.nan if interval is None else interval,
                         "cell_dir": str(cell),
                         "master_path": str(_channel_source(cell / master)),
                         "slave_path": str(_channel_source(cell / slave))})
    columns = ["condition", "cell", "interval_s", "cell_dir", "master_path", "slave_path"]
    return pd.DataFrame(rows, columns=columns)


def _channel_source(channel_dir: Path) -> Path:
    """The single TIFF of a channel folder, or the folder itself for a frame sequence."""
    files = _tiff_files(channel_dir)
    if not files:
        other = [p.name for p in _visible_children(channel_dir) if p.is_file()][:5]
        raise InputError(channel_dir, "channel folder holds no .tif/.tiff file" + (
            f" (found {other}; export the movie as multi-page TIFF or OME-TIFF)" if other else ""))
    return files[0] if len(files) == 1 else channel_dir


def scan_cell_tree(root: str | Path, *, master: str = MASTER, slave: str = SLAVE) -> pd.DataFrame:
    """Cells of a cmeAnalysis tree ``<root>/<condition>/<cell>/{master,slave}/``.

    Columns: condition, cell (folder name), interval_s (from the folder name, NaN if absent),
    cell_dir, master_path, slave_path (the channel's TIFF file, or its folder when the
    channel is stored as a sequence of single-frame TIFFs). Sorted naturally (Cell2 < Cell10).
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError(root, "data root is not a directory")
    table = _scan_cells(root, master, slave)
    if table.empty:
        raise InputError(root, f"no cell folders found; expected <root>/<condition>/<cell>/"
                         f"{{{master},{slave}}}/*.tif")
    return table


def scan_movie_files(root: str | Path) -> pd.DataFrame:
    """Multi-channel TIFF/OME-TIFF files directly in ``root`` or in ``root/<condition>/``.

    Columns: condition (folder name; the root's own name for files directly in it), cell
    (file name without .ome.tif), interval_s (from the file name, NaN if absent), path.
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError(root, "data root is not a directory")
    rows = [{"condition": root.name, "path": p} for p in _tiff_files(root)]
    for condition in (p for p in _visible_children(root) if p.is_dir()):
        rows += [{"condition": condition.name, "path": p} for p in _tiff_files(condition)]
    for row in rows:
        row["cell"] = _movie_stem(row["path"])
        interval = interval_from_name(row["cell"])
        row["interval_s"] = np.nan if interval is None else interval
        row["path"] = str(row["path"])
    return pd.DataFrame(rows, columns=["condition", "cell", "interval_s", "path"])


# ----------------------------------------------------------------------------- TIFF reading


@contextmanager
def _tifffile_messages() -> Iterator[list[str]]:
    """Collect what tifffile logs while a file is read (it logs damage instead of raising)."""
    messages: list[str] = []

    class _Collect(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            messages.append(record.getMessage())

    handler = _Collect(logging.WARNING)
    logger = logging.getLogger("tifffile")
    logger.addHandler(handler)
    try:
        yield messages
    finally:
        logger.removeHandler(handler)


def _unit_factor(unit: Any, table: Mapping[str, float]) -> float | None:
    if unit is None:
        return None
    key = str(unit).strip().lower().replace("\\u00b5", "µ")
    return table.get(key)


def _ome_metadata(xml: str) -> dict[str, Any]:
    """PhysicalSizeX, TimeIncrement (or median Plane DeltaT) and the plane count of image 0."""
    out: dict[str, Any] = {}
    try:
        tree = ET.fromstring(xml)
    except ET.ParseError:
        return out
    pixels = next((el for el in tree.iter() if el.tag.rsplit("}", 1)[-1] == "Pixels"), None)
    if pixels is None:
        return out
    a = pixels.attrib
    if "PhysicalSizeX" in a:
        factor = _unit_factor(a.get("PhysicalSizeXUnit", "µm"), _LENGTH_UM)
        if factor is not None:
            out["pixel_size_um"] = (float(a["PhysicalSizeX"]) * factor, "OME PhysicalSizeX")
    if "TimeIncrement" in a:
        factor = _unit_factor(a.get("TimeIncrementUnit", "s"), _TIME_S)
        if factor is not None:
            out["frame_interval_s"] = (float(a["TimeIncrement"]) * factor, "OME TimeIncrement")
    else:
        stamps = {}
        for el in pixels:
            if el.tag.rsplit("}", 1)[-1] == "Plane" and "DeltaT" in el.attrib:
                if el.attrib.get("TheC", "0") == "0" and el.attrib.get("TheZ", "0") == "0":
                    factor = _unit_factor(el.attrib.get("DeltaTUnit", "s"), _TIME_S)
                    if factor is not None:
                        stamps[int(el.attrib.get("TheT", "0"))] = float(el.attrib["DeltaT"]) * factor
        if len(stamps) > 1:
            times = np.array([stamps[k] for k in sorted(stamps)])
            out["frame_interval_s"] = (float(np.median(np.diff(times))), "OME Plane DeltaT")
    sizes = [int(a.get(k, "1")) for k in ("SizeT", "SizeC", "SizeZ")]
    out["n_planes"] = int(np.prod(sizes))
    names = [el.attrib.get("Name", "").strip() for el in pixels if el.tag.rsplit("}", 1)[-1] == "Channel"]
    if names and all(names):
        out["channel_names"] = names
    return out


def _tiff_metadata(tf: tifffile.TiffFile) -> dict[str, Any]:
    """Frame interval and pixel size as (value, where-from) pairs, and the expected plane count."""
    out: dict[str, Any] = {}
    if tf.is_ome and tf.ome_metadata:
        out.update(_ome_metadata(tf.ome_metadata))
    ij = tf.imagej_metadata or {}
    if ij:
        if "images" in ij:
            out.setdefault("n_planes", int(ij["images"]))
        labels = ij.get("Labels")
        n_ch = int(ij.get("channels", 1))
        if "channel_names" not in out and isinstance(labels, list) and n_ch > 1 and len(labels) % n_ch == 0:
            # ImageJ slice labels run C fastest; channel names when they repeat every n_ch slices
            names = [str(v).strip() for v in labels[:n_ch]]
            if all(names) and list(labels) == names * (len(labels) // n_ch):
                out["channel_names"] = names
        if "finterval" in ij and "frame_interval_s" not in out:
            factor = _unit_factor(ij.get("tunit", "s"), _TIME_S)
            value = float(ij["finterval"])
            if factor is not None and value > 0:
                out["frame_interval_s"] = (value * factor, "ImageJ finterval")
    if "pixel_size_um" not in out:
        page = tf.pages.first
        xres = page.tags.get("XResolution")
        runit = page.tags.get("ResolutionUnit")
        runit = int(runit.value) if runit is not None else 2
        if xres is not None:
            num, den = xres.value
            per_unit = num / den if den else 0.0
            unit_um = {2: 25400.0, 3: 10000.0}.get(runit) or _unit_factor(ij.get("unit"), _LENGTH_UM)
            if per_unit > 0 and unit_um is not None:
                size = unit_um / per_unit
                if _PIXEL_UM_RANGE[0] <= size <= _PIXEL_UM_RANGE[1]:
                    out["pixel_size_um"] = (size, "TIFF resolution tags")
                else:
                    log.warning("%s: ignoring TIFF resolution tags (%.4g µm/pixel is not a "
                                "microscope pixel size)", tf.filename, size)
    return out


def _read_tiff(path: Path) -> tuple[np.ndarray, str, dict[str, Any]]:
    """Array, axes string and metadata of the first series; damaged files raise InputError."""
    if not path.is_file():
        raise InputError(path, "file not found")
    if path.stat().st_size == 0:
        raise InputError(path, "file is empty (0 bytes)")
    try:
        with _tifffile_messages() as messages, tifffile.TiffFile(path) as tf:
            n_pages = len(tf.pages)
            series = tf.series[0]
            data = series.asarray()
            axes = series.axes
            meta = _tiff_metadata(tf)
    except InputError:
        raise
    except Exception as err:  # tifffile raises many types on damaged files
        raise InputError(path, f"unreadable TIFF ({type(err).__name__}: {err})") from err
    damage = [m for m in messages if _TIFF_DAMAGE.search(m)]
    if damage:
        raise InputError(path, f"damaged or truncated TIFF: {damage[0]}")
    if data.size == 0:
        raise InputError(path, f"TIFF holds no pixels (shape {data.shape}): zero frames")
    expected = meta.get("n_planes")
    planes = int(np.prod([n for n, ax in zip(data.shape, axes) if ax not in "YXS"]))
    if expected is not None and planes < expected:
        raise InputError(path, f"truncated TIFF: metadata announces {expected} planes, the file "
                         f"holds {planes} ({n_pages} pages)")
    return data, axes, meta


def _as_uint16(data: np.ndarray, path: Path) -> np.ndarray:
    """The data as uint16 when that is exact; see the module docstring for the policy."""
    if data.dtype == np.uint16:
        _check_counts(data, path)
        return data
    if data.dtype.kind not in "uif":
        raise InputError(path, f"pixel type {data.dtype} is not a camera intensity")
    if data.size:
        if data.dtype.kind == "f":
            if not np.all(np.isfinite(data)):
                raise InputError(path, f"{data.dtype} data contain NaN or inf; expected uint16 "
                                 f"camera counts")
            if not np.array_equal(data, np.round(data)):
                raise InputError(path, f"{data.dtype} data are not integral (processed or "
                                 f"rescaled?); expected raw uint16 camera counts")
        lo, hi = data.min(), data.max()
        if lo < 0 or hi > 65535:
            raise InputError(path, f"{data.dtype} values span [{lo}, {hi}], outside the uint16 "
                             f"range of camera counts")
    not_camera_counts(path, f"{data.dtype} pixel data (converted exactly to uint16)")
    return data.astype(np.uint16)


def not_camera_counts(path: Path, what: str) -> None:
    """Warn that ``path`` does not hold raw camera counts, and what that changes downstream."""
    log.warning("%s: %s are not raw camera counts. Detection still works (its tests are relative to the "
                "local noise), but absolute ADU values lose their meaning: the auxilin threshold "
                "cme.labels.aux_thresh_adu where set (it is absolute; the default aux_thresh_sd follows the "
                "measured noise) and with it aux_positive, and the amplitudes (A, c, Y_max, Y_sig_mean in the "
                "track tables; the ADU axes of the figures). Review cme.labels.aux_thresh_sd / aux_thresh_adu "
                "(or set it above every amplitude to rely on significance alone) and "
                "provide the camera's uint16 frames where possible", path, what)


def _check_counts(data: np.ndarray, path: Path) -> None:
    """Warn about uint16 data that look 8-bit or contrast-stretched rather than camera counts."""
    if data.dtype != np.uint16 or data.size == 0:
        return
    lo, hi = int(data.min()), int(data.max())
    if hi <= 255:
        not_camera_counts(path, f"uint16 values within 0-{hi} (8-bit range)")
    elif lo == 0 and hi == 65535:
        not_camera_counts(path, "uint16 values spanning exactly 0-65535 (contrast-stretched?)")


def _squeeze_axes(data: np.ndarray, axes: str, path: Path) -> tuple[np.ndarray, str]:
    """Drop length-1 axes other than Y and X; reject colour samples."""
    if "S" in axes and data.shape[axes.index("S")] > 1:
        raise InputError(path, f"RGB/multi-sample pixels (axes {axes}, shape {data.shape}); "
                         f"expected grey-level camera frames")
    if not axes.endswith("YX"):
        raise InputError(path, f"axes {axes!r} do not end in YX; cannot locate the image plane")
    keep = [i for i, (n, ax) in enumerate(zip(data.shape, axes)) if n != 1 or ax in "YX"]
    data = data.reshape([data.shape[i] for i in keep])
    return data, "".join(axes[i] for i in keep)


def _single_channel_stack(data: np.ndarray, axes: str, path: Path) -> np.ndarray:
    """(T, H, W) from a one-channel file whose only non-plane axis is time."""
    data, axes = _squeeze_axes(data, axes, path)
    extra = axes[:-2]
    if extra == "":
        return data[None]
    if len(extra) > 1 or extra == "C":
        raise InputError(path, f"a channel folder file must hold one channel over time; got axes "
                         f"{axes} with shape {data.shape}")
    if extra == "Z":
        log.warning("%s: treating the Z axis (%d planes) as time", path, data.shape[0])
    return data


def _read_channel(source: Path) -> tuple[np.ndarray, dict[str, Any], tuple[Path, ...]]:
    """(T, H, W) uint16 of one channel: a multi-page TIFF or a folder of single-frame TIFFs."""
    if source.is_dir():
        files = _tiff_files(source)
        if not files:
            raise InputError(source, "channel folder holds no .tif/.tiff file")
    else:
        files = [source]
    if len(files) == 1:
        data, axes, meta = _read_tiff(files[0])
        return _as_uint16(_single_channel_stack(data, axes, files[0]), files[0]), meta, (files[0],)
    frames, meta = [], {}
    for i, file in enumerate(files):
        data, axes, file_meta = _read_tiff(file)
        data, axes = _squeeze_axes(data, axes, file)
        if axes != "YX":
            raise InputError(file, f"channel folder holds {len(files)} TIFF files but this one has "
                             f"{data.shape[0]} planes; expected one multi-page TIFF or one "
                             f"single-frame TIFF per time point")
        if frames and data.shape != frames[0].shape:
            raise InputError(file, f"frame shape {data.shape} differs from {frames[0].shape} "
                             f"of {files[0].name}")
        frames.append(_as_uint16(data, file))
        if i == 0:
            meta = {k: v for k, v in file_meta.items() if k == "pixel_size_um"}
    return np.stack(frames), meta, tuple(files)


def pick_channels(names: list[str] | None, n_channels: int, master: str, slave: str,
                  channels: tuple[int, int] | None, path: Path) -> tuple[int, int]:
    """(master, slave) channel indices of a multi-channel file; never a silent default.

    Channel names in the metadata that match ``master``/``slave`` (case-insensitive, whole
    name or one containing the other, e.g. 'EGFP' in 'EGFP-Aux1') decide; explicit
    ``channels`` (``cme.data.channel_indices``) decide when the file names none or they do
    not match, and must agree with matching names. Otherwise an error lists the channels.
    """
    listing = (f"channels {names}" if names else f"{n_channels} unnamed channels (no channel names in "
               f"the OME/ImageJ metadata)")
    by_name: dict[str, int] = {}
    if names:
        for role, want in (("master", master), ("slave", slave)):
            w = want.strip().lower()
            exact = [i for i, n in enumerate(names) if n.lower() == w]
            loose = [i for i, n in enumerate(names) if w and (w in n.lower() or n.lower() in w)]
            hits = exact or loose
            if len(hits) == 1:
                by_name[role] = hits[0]
    if channels is not None:
        if len(channels) != 2 or not all(0 <= int(c) < n_channels for c in channels) or \
                int(channels[0]) == int(channels[1]):
            raise InputError(path, f"cme.data.channel_indices {list(channels)} do not pick two different "
                             f"channels of the file's {listing}")
        picked = (int(channels[0]), int(channels[1]))
        if len(by_name) == 2 and (by_name["master"], by_name["slave"]) != picked:
            raise InputError(path, f"cme.data.channel_indices {list(picked)} disagree with the channel "
                             f"names: {listing} name master '{master}' = {by_name['master']} and slave "
                             f"'{slave}' = {by_name['slave']}; drop channel_indices or fix the names")
        return picked
    if len(by_name) == 2 and by_name["master"] != by_name["slave"]:
        log.info("%s: master '%s' = channel %d (%s), slave '%s' = channel %d (%s), from the channel names",
                 path, master, by_name["master"], names[by_name["master"]], slave, by_name["slave"],
                 names[by_name["slave"]])
        return by_name["master"], by_name["slave"]
    if not names:
        raise InputError(path, f"cannot tell which channel is clathrin and which auxilin: the file has {listing}; "
                         f"set cme.data.channel_indices: [clathrin index, auxilin index] (0-based)")
    raise InputError(path, f"cannot tell which channel is clathrin and which auxilin: the file has {listing}, "
                     f"none matching cme.data.master '{master}' and cme.data.slave '{slave}' one to one; set "
                     f"cme.data.master/cme.data.slave to the channel names, or cme.data.channel_indices: "
                     f"[clathrin index, auxilin index] (0-based)")


def _to_tcyx(data: np.ndarray, axes: str, path: Path, channels: tuple[int, int] | None,
             names: list[str] | None = None, master: str = MASTER, slave: str = SLAVE) -> np.ndarray:
    """(T, 2, H, W) from a multi-channel file, channel 0 clathrin and 1 auxilin (see
    :func:`pick_channels`)."""
    data, axes = _squeeze_axes(data, axes, path)
    extra = axes[:-2]
    if "C" not in extra:
        raise InputError(path, f"no channel axis (axes {axes}, shape {data.shape}): a single-file "
                         f"movie needs 2 channels with C in its OME/ImageJ metadata; single-channel "
                         f"files belong in the <cell>/{{{MASTER},{SLAVE}}} folder tree")
    time_axes = [ax for ax in extra if ax != "C"]
    if len(time_axes) > 1:
        raise InputError(path, f"axes {axes} with shape {data.shape}: more than one of time/Z "
                         f"varies; expected a 2-D time-lapse (TCYX)")
    if not time_axes:
        data, axes = data[None], "T" + axes
    elif time_axes[0] != "T":
        log.warning("%s: treating axis %s (%d planes) as time", path, time_axes[0],
                    data.shape[axes.index(time_axes[0])])
        axes = axes.replace(time_axes[0], "T")
    data = np.moveaxis(data, [axes.index("T"), axes.index("C")], [0, 1])
    n_channels = data.shape[1]
    if names is not None and len(names) != n_channels:
        log.warning("%s: %d channel names %s for %d channels; ignoring the names", path, len(names), names,
                    n_channels)
        names = None
    picked = pick_channels(names, n_channels, master, slave, channels, path)
    return data[:, list(picked)]


# ----------------------------------------------------------------------------- resolving


def _resolve(quantity: str, key: str, unit: str, explicit: float | None,
             found: list[tuple[float, str]], path: Path) -> float:
    """The caller's value if given, else the agreeing file/folder values; never a default."""
    if explicit is not None:
        value = float(explicit)
        if not (math.isfinite(value) and value > 0):
            raise InputError(None, f"{key} must be a positive number, got {explicit!r}")
        for other, where in found:
            if not math.isclose(other, value, rel_tol=1e-3):
                log.warning("%s: %s %g %s from the config overrides %g %s (%s)",
                            path, quantity, value, unit, other, unit, where)
        return value
    if not found:
        raise InputError(path, f"{quantity} unknown: not in the file metadata or the folder name; "
                         f"set {key}")
    value, where = found[0]
    for other, other_where in found[1:]:
        if not math.isclose(other, value, rel_tol=1e-3):
            raise InputError(path, f"{quantity} disagrees: {value:g} {unit} ({where}) vs "
                             f"{other:g} {unit} ({other_where}); set {key} to choose")
    if not (math.isfinite(value) and value > 0):
        raise InputError(path, f"{quantity} {value!r} {unit} ({where}) is not positive; set {key}")
    return value


def _check_frames(n_frames: int, min_frames: int, path: Path) -> None:
    if n_frames == 0:
        raise InputError(path, "movie has zero frames")
    if n_frames < min_frames:
        raise InputError(path, f"movie has {n_frames} frames, fewer than the minimum {min_frames} "
                         f"(cme.data.min_frames)")


def read_movie(path_or_cell_dir: str | Path, *, frame_interval_s: float | None = None,
               pixel_size_um: float | None = None, master: str = MASTER, slave: str = SLAVE,
               channels: tuple[int, int] | None = None, min_frames: int = MIN_FRAMES,
               condition: str | None = None) -> Movie:
    """Read one movie: a cmeAnalysis cell folder or a multi-channel TIFF/OME-TIFF file.

    ``frame_interval_s`` / ``pixel_size_um`` override the metadata (config values);
    A multi-channel file's (clathrin, auxilin) channels are those whose metadata names match
    ``master``/``slave``, or the indices ``channels`` (``cme.data.channel_indices``); see
    :func:`pick_channels`. ``min_frames`` is the shortest acceptable movie.
    """
    path = Path(path_or_cell_dir)
    interval_found: list[tuple[float, str]] = []
    pixel_found: list[tuple[float, str]] = []

    def collect(meta: Mapping[str, Any], where: Path) -> None:
        if "frame_interval_s" in meta:
            value, what = meta["frame_interval_s"]
            interval_found.append((value, f"{what} in {where.name}"))
        if "pixel_size_um" in meta:
            value, what = meta["pixel_size_um"]
            pixel_found.append((value, f"{what} in {where.name}"))

    if path.is_dir():
        stacks, sources = [], []
        for role, folder in (("master", master), ("slave", slave)):
            channel_dir = path / folder
            if not channel_dir.is_dir():
                raise InputError(path, f"cell folder lacks the {role} channel folder '{folder}'")
            stack, meta, files = _read_channel(_channel_source(channel_dir))
            _check_frames(len(stack), min_frames, files[0] if len(files) == 1 else channel_dir)
            collect(meta, files[0])
            stacks.append(stack)
            sources += files
        (c, a), (fc, fa) = stacks, (sources[0], sources[-1])
        if c.shape[1:] != a.shape[1:]:
            raise InputError(path, f"frame shapes differ between channels: {c.shape[1:]} in "
                             f"{fc.name} vs {a.shape[1:]} in {fa.name}")
        if len(c) != len(a):
            raise InputError(path, f"frame counts differ between channels: {len(c)} in "
                             f"{fc} vs {len(a)} in {fa}")
        data = np.stack([c, a], axis=1)
        from_name = interval_from_name(path.name)
        if from_name is not None:
            interval_found.append((from_name, f"folder name {path.name}"))
        name, default_condition = path.name, path.parent.name
    elif path.is_file():
        raw, axes, meta = _read_tiff(path)
        data = _as_uint16(_to_tcyx(raw, axes, path, channels, meta.get("channel_names"), master, slave), path)
        _check_frames(len(data), min_frames, path)
        collect(meta, path)
        name, default_condition = _movie_stem(path), path.parent.name
        from_name = interval_from_name(name)
        if from_name is not None:
            interval_found.append((from_name, f"file name {path.name}"))
        sources = [path]
    else:
        raise InputError(path, "no such file or cell folder")
    dt = _resolve("frame interval", "cme.data.frame_interval_s", "s", frame_interval_s, interval_found, path)
    px = _resolve("pixel size", "cme.data.pixel_size_um", "µm", pixel_size_um, pixel_found, path)
    return Movie(np.ascontiguousarray(data), dt, px, name, tuple(sources),
                 default_condition if condition is None else condition)


def iter_movies(root: str | Path, *, master: str = MASTER, slave: str = SLAVE,
                frame_interval_s: float | None = None, pixel_size_um: float | None = None,
                channels: tuple[int, int] | None = None,
                min_frames: int = MIN_FRAMES) -> Iterator[Movie]:
    """Every movie under ``root``: the cells of the folder tree, then multi-channel files.

    Options are those of :func:`read_movie` (the config's data section). Raises InputError
    when ``root`` holds neither layout.
    """
    root = Path(root)
    if not root.is_dir():
        raise InputError(root, "data root is not a directory")
    cells = _scan_cells(root, master, slave)
    files = scan_movie_files(root)
    if cells.empty and files.empty:
        raise InputError(root, f"no movies found: expected <root>/<condition>/<cell>/"
                         f"{{{master},{slave}}}/*.tif or multi-channel <root>[/<condition>]/*.tif")
    options = dict(frame_interval_s=frame_interval_s, pixel_size_um=pixel_size_um,
                   min_frames=min_frames)
    for row in cells.itertuples():
        yield read_movie(row.cell_dir, master=master, slave=slave, condition=row.condition,
                         **options)
    for row in files.itertuples():
        yield read_movie(row.path, channels=channels, condition=row.condition, **options)


# ----------------------------------------------------------------------------- writing


def write_cell_tree(root: str | Path, condition: str, cell_name: str, movie: Movie, *,
                    master: str = MASTER, slave: str = SLAVE,
                    side_files: Mapping[str, Any] | None = None) -> Path:
    """Write ``movie`` as ``<root>/<condition>/<cell_name>_<interval>/{master,slave}/*.tif``.

    One ImageJ multi-page uint16 TIFF per channel, with the frame interval (``finterval``)
    and the pixel size (resolution tags, unit µm); the interval is also in the folder name
    as cmeAnalysis expects. ``side_files`` maps file names to contents written beside the
    channel folders: DataFrame -> parquet, dict -> JSON, ndarray -> TIFF. The cell folder
    appears atomically (an existing one is replaced). Returns the cell folder.
    """
    cell = safe_name(cell_name)
    cell_dir = contained(root, safe_name(condition), f"{cell}_{interval_suffix(movie.frame_interval_s)}")
    resolution = (1.0 / movie.pixel_size_um, 1.0 / movie.pixel_size_um)
    metadata = {"axes": "TYX", "unit": "um", "finterval": movie.frame_interval_s}
    with atomic_dir(cell_dir) as tmp:
        for index, folder in enumerate((master, slave)):
            channel_dir = tmp / safe_name(folder)
            channel_dir.mkdir()
            tifffile.imwrite(channel_dir / f"{cell}_{safe_name(folder)}.tif",
                             np.ascontiguousarray(movie.data[:, index]), imagej=True,
                             resolution=resolution, metadata=metadata, photometric="minisblack")
        for file_name, content in (side_files or {}).items():
            target = tmp / safe_name(file_name)
            if isinstance(content, pd.DataFrame):
                content.to_parquet(target, index=False)
            elif isinstance(content, dict):
                write_json(target, content)
            elif isinstance(content, np.ndarray):
                tifffile.imwrite(target, content, photometric="minisblack")
            else:
                raise TypeError(f"side file {file_name}: unsupported type {type(content).__name__}")
    return cell_dir
