"""cmeAnalysis outputs as a lab hands them over, for tests: MAT v7.3 files written with h5py the
way MATLAB writes them, in the cmeAnalysis folder tree, with no movies and no slave folder.

* :func:`write_mat73`: MATLAB's v7.3 layout (HDF5 after a 512-byte user block whose header
  reads "MATLAB 7.3 MAT-file", arrays stored transposed so h5py shows MATLAB's shape
  reversed, a ``MATLAB_class`` attribute on every variable, logicals as uint8, struct arrays
  as groups of object-reference arrays into ``#refs#``, empty arrays as their shape with
  ``MATLAB_empty``, larger arrays deflated in chunks).
* :func:`processed_tracks`: tracks with the fields and conventions ``runTrackProcessing.m``
  gives them (1-based frames ``f``, times ``t = (f-1) dt``, per-frame fields nCh x L,
  start/end buffers with ``t`` but no ``f``, empty ``[]`` where MATLAB leaves fields empty,
  ``gapVect``/``gapStatus``/``gapIdx``, ``MotionAnalysis``, ``catIdx`` 1-8, slave flags).
* :func:`lifetime_data`: the variables ``getLifetimeData.m`` saves from those tracks
  (tracks x frames x channels matrices of the category-1 tracks, NaN-padded past each
  track's length; per-track column vectors for all tracks).
* :func:`write_cmeanalysis_export`: the whole tree
  ``<root>/<condition>/Cell<k>_1s/TagRFP/{Analysis/{lifetimeData,Parameters}.mat,
  Tracking/ProcessedTracks.mat}``.

The tracks are plausible TIRF pits (cme.md section 2): clathrin rises and falls over the
lifetime; auxilin (channel 2, measured at the clathrin position) bursts in the last frames
of aux+ tracks, with an aux+ probability that rises with lifetime as in real SUM159 cells;
a few hotspots (two bursts); amplitude noise and fit statistics of the real cells.
"""
from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
from scipy import stats

#: MATLAB's v7.3 header: 116 bytes of text, 8 bytes subsystem offset, version 0x0200, 'IM'.
MAT73_HEADER = (b"MATLAB 7.3 MAT-file, Platform: GLNXA64, Created on: Thu Mar  5 14:02:11 2020 "
                b"HDF5 schema 1.00 .").ljust(116) + b" " * 8 + b"\x00\x02IM"
#: aux+ fraction per lifetime bin of real cells (cme.md section 2), for the burst probability.
AUX_EDGES = (5, 10, 15, 20, 40, 80, 160)
AUX_FRACTION = (0.07, 0.17, 0.26, 0.35, 0.53, 0.83, 0.94, 0.96)
K_LEVEL = stats.norm.ppf(0.975)


# ----------------------------------------------------------------------------- MAT v7.3


class _Mat73Writer:
    """Writes plain Python in MATLAB's v7.3 layout: dict = scalar struct, list of dicts =
    struct array (1 x n), other list = cell array (1 x n), str = char, bool array = logical,
    other arrays = double (2-D at least, MATLAB orientation)."""

    def __init__(self, file: h5py.File):
        self.file, self.count = file, 0

    def _ref(self, value) -> h5py.Reference:
        self.count += 1
        name = f"#refs#/{self.count:x}"
        self.write(self.file, name, value)
        return self.file[name].ref

    @staticmethod
    def _fields(obj, names) -> None:
        chars = np.empty(len(names), dtype=object)
        chars[:] = [np.array(list(n), dtype="S1") for n in names]
        obj.attrs.create("MATLAB_fields", chars, dtype=h5py.vlen_dtype(np.dtype("S1")))

    def write(self, parent, name: str, value) -> None:
        if isinstance(value, dict):
            group = parent.create_group(name)
            group.attrs["MATLAB_class"] = np.bytes_("struct")
            self._fields(group, list(value))
            for key, v in value.items():
                self.write(group, key, v)
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            group = parent.create_group(name)
            group.attrs["MATLAB_class"] = np.bytes_("struct")
            names = list(value[0])
            self._fields(group, names)
            for key in names:
                refs = [self._ref(el[key]) for el in value]
                group.create_dataset(key, data=np.array(refs, dtype=h5py.ref_dtype).reshape(len(value), 1))
        elif isinstance(value, list):
            refs = [self._ref(v) for v in value]
            shape = (len(refs), 1) if refs else (2,)
            data = np.array(refs, dtype=h5py.ref_dtype).reshape(shape) if refs else np.array([0, 0], np.uint64)
            ds = parent.create_dataset(name, data=data)
            ds.attrs["MATLAB_class"] = np.bytes_("cell")
            if not refs:
                ds.attrs["MATLAB_empty"] = np.uint8(1)
        elif isinstance(value, str):
            ds = parent.create_dataset(name, data=np.array([[ord(ch)] for ch in value], dtype=np.uint16))
            ds.attrs["MATLAB_class"] = np.bytes_("char")
        else:
            arr = np.asarray(value)
            if arr.ndim < 2:
                arr = arr.reshape(1, -1) if arr.ndim == 1 else arr.reshape(1, 1)
            cls = "logical" if arr.dtype == bool else "double"
            if arr.size == 0:
                ds = parent.create_dataset(name, data=np.array(arr.shape[::-1], dtype=np.uint64))
                ds.attrs["MATLAB_empty"] = np.uint8(1)
            else:
                data = arr.T.astype(np.uint8 if cls == "logical" else np.float64)
                # save -v7.3 deflates larger arrays in chunks (hence ~1-2 MB lifetimeData per real cell)
                ds = parent.create_dataset(name, data=data, **({"compression": "gzip", "compression_opts": 3}
                                                               if data.size >= 1000 else {}))
            ds.attrs["MATLAB_class"] = np.bytes_(cls)


def write_mat73(path: str | Path, variables: dict) -> Path:
    """Save ``variables`` as MATLAB's ``save(path, ..., '-v7.3')`` lays them out."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w", userblock_size=512, libver="earliest") as file:
        writer = _Mat73Writer(file)
        for key, value in variables.items():
            writer.write(file, key, value)
    with open(path, "r+b") as fh:
        fh.write(MAT73_HEADER)
    return path


# ----------------------------------------------------------------------------- tracks


def _pvalue(A, A_pstd, sigma_r, SE):
    """cmeAnalysis' amplitude test (fitGaussians2D.m), written out independently of the reader."""
    npx = np.round((sigma_r / SE) ** 2 / 2 + 1)
    se_r = SE * K_LEVEL
    df = (npx - 1) * (A_pstd ** 2 + se_r ** 2) ** 2 / (A_pstd ** 4 + se_r ** 4)
    T = (A - sigma_r * K_LEVEL) / np.sqrt((A_pstd ** 2 + se_r ** 2) / npx)
    return stats.t.cdf(-T, df)


def _fit_fields(rng, amp: np.ndarray, bg: float) -> dict:
    """Per-frame Gaussian-fit outputs of a (nCh, n) amplitude profile (noise as real fits)."""
    n_ch, n = amp.shape
    A_pstd = rng.uniform(90, 200, (n_ch, n))
    sigma_r = rng.uniform(250, 400, (n_ch, n))
    npx = rng.integers(90, 122, (n_ch, n))
    SE = sigma_r / np.sqrt(2 * (npx - 1))
    A = amp + rng.normal(0, 1, (n_ch, n)) * A_pstd
    c = bg + rng.normal(0, 30, (n_ch, n))
    return {"A": A, "c": c, "A_pstd": A_pstd, "c_pstd": rng.uniform(3, 8, (n_ch, n)),
            "sigma_r": sigma_r, "SE_sigma_r": SE, "pval_Ar": _pvalue(A, A_pstd, sigma_r, SE)}


def _lifetime(rng, n_frames: int) -> int:
    """Track length in frames: short-lived structures and longer pits (cme.md section 1.2)."""
    if rng.random() < 0.5:
        return int(rng.integers(3, 16))
    return int(np.clip(rng.lognormal(np.log(35), 0.6), 16, n_frames - 12))


def _aux_probability(lifetime_s: float) -> float:
    return AUX_FRACTION[int(np.searchsorted(AUX_EDGES, lifetime_s, side="left"))]


def processed_tracks(rng: np.random.Generator, *, n_tracks: int, n_frames: int, dt: float = 1.0,
                     size: tuple[int, int] = (256, 256), buffer: int = 5) -> list[dict]:
    """``n_tracks`` tracks as ``runTrackProcessing.m`` stores them (see the module docstring)."""
    height, width = size
    tracks = []
    for _ in range(n_tracks):
        L = _lifetime(rng, n_frames)
        kind = rng.choice(["complete", "cut", "compound"], p=[0.82, 0.13, 0.05])
        if kind == "cut":
            start = 1 if rng.random() < 0.5 else n_frames - L + 1
        else:
            start = int(rng.integers(buffer + 1, n_frames - buffer - L + 2))
        end = start + L - 1
        visibility = 1 if start > buffer and end <= n_frames - buffer else (3 if L == n_frames else 2)
        # clathrin: rise over ~70 % of the lifetime, then a faster fall; auxilin burst at the end
        u = np.linspace(0, 1, L)
        peak = rng.lognormal(np.log(900 if L < 16 else 2200), 0.35)
        clathrin = peak * np.where(u < 0.7, np.sqrt(u / 0.7), np.clip((1 - u) / 0.3, 0, 1) ** 0.7 * 0.8 + 0.2)
        auxilin = np.zeros(L)
        aux_pos = rng.random() < _aux_probability(L * dt)
        if aux_pos:
            width_f = int(np.clip(L // 5, 2, 8))
            height_a = rng.lognormal(np.log(1300), 0.4)
            auxilin[L - width_f:] += height_a * np.hanning(width_f + 2)[1:-1]
            if L > 30 and rng.random() < 0.2:  # hotspot: a second, earlier burst
                mid = L // 3
                auxilin[mid:mid + width_f] += height_a * np.hanning(width_f + 2)[1:-1]
        fit = _fit_fields(rng, np.vstack([clathrin, auxilin]), bg=float(rng.uniform(900, 1300)))
        f = np.arange(start, end + 1, dtype=float)
        x0, y0 = rng.uniform(15, width - 15), rng.uniform(15, height - 15)
        x = x0 + np.cumsum(rng.normal(0, 0.2, L))
        y = y0 + np.cumsum(rng.normal(0, 0.2, L))
        gap = np.zeros(L, dtype=bool)
        gap_status = np.zeros((0, 0))
        gap_idx: list | np.ndarray = np.zeros((0, 0))
        category_gap_ok = True
        if L > 6 and rng.random() < 0.25:
            g = int(rng.integers(2, L - 2))
            two = rng.random() < 0.3
            gap[g:g + (2 if two else 1)] = True
            # a 2-frame gap next to 1-frame segments is invalid (status 5), else valid (4)
            status = 5.0 if two and (g == 2 or g + 2 >= L - 2) else 4.0
            category_gap_ok = status == 4.0
            gap_status = np.array([[status]])
            gap_idx = [np.arange(g + 1, g + (3 if two else 2), dtype=float)[None]]
            fit["A"][:, gap] *= 0.6  # re-fitted at the interpolated position
            fit["pval_Ar"] = _pvalue(fit["A"], fit["A_pstd"], fit["sigma_r"], fit["SE_sigma_r"])
        n_seg = 2 if kind == "compound" else 1
        if n_seg == 2:  # a split: second segment from the middle, separated by a NaN column
            cut = L // 2
            sep = lambda a: np.concatenate([a[..., :], np.full(a.shape[:-1] + (1,), np.nan),
                                            a[..., cut:]], axis=-1)
            f_rec = sep(f)
            per = {k: sep(v) for k, v in fit.items()}
            xs, ys = sep(np.vstack([x, x])), sep(np.vstack([y, y]))
            gvec = np.concatenate([gap, [False], gap[cut:]])
        else:
            f_rec, per, xs, ys, gvec = f, fit, np.vstack([x, x + rng.normal(0, 0.05, L)]), \
                np.vstack([y, y + rng.normal(0, 0.05, L)]), gap
        n_ch = 2
        cat = {("complete", True): 1, ("complete", False): 2, ("cut", True): 3, ("cut", False): 3,
               ("compound", True): 5, ("compound", False): 6}[(kind, category_gap_ok)]
        if kind == "compound" and visibility != 1:
            cat = 7
        if kind == "cut" and visibility == 3:
            cat = 4
        L_rec = f_rec.size
        track = {"t": (f_rec - 1) * dt, "f": f_rec, "x": xs + 1.0, "y": ys + 1.0,
                 "A": per["A"], "c": per["c"], "x_pstd": np.full((n_ch, L_rec), 0.05),
                 "y_pstd": np.full((n_ch, L_rec), 0.05), "A_pstd": per["A_pstd"], "c_pstd": per["c_pstd"],
                 "sigma_r": per["sigma_r"], "SE_sigma_r": per["SE_sigma_r"], "pval_Ar": per["pval_Ar"],
                 "isPSF": np.where(np.isnan(f_rec), np.nan, 1.0) * np.ones((n_ch, 1)),
                 "tracksFeatIndxCG": np.arange(1.0, n_seg * L + 1).reshape(n_seg, L),
                 "gapVect": gvec[None], "gapStatus": gap_status, "gapIdx": gap_idx,
                 "seqOfEvents": np.array([[start, 1, 1, np.nan], [end, 2, 1, np.nan]]),
                 "nSeg": float(n_seg), "visibility": float(visibility), "lifetime_s": L * dt,
                 "start": float(start), "end": float(end)}
        for name, frames in (("startBuffer", np.arange(start - buffer, start)),
                             ("endBuffer", np.arange(end + 1, end + buffer + 1))):
            if visibility != 1:
                track[name] = np.zeros((0, 0))
                continue
            bfit = _fit_fields(rng, np.zeros((n_ch, buffer)), bg=float(np.nanmean(per["c"])))
            track[name] = {"t": ((frames - 1) * dt)[None],
                           "x": np.vstack([np.full(buffer, x[0 if name == "startBuffer" else -1])] * 2) + 1,
                           "y": np.vstack([np.full(buffer, y[0 if name == "startBuffer" else -1])] * 2) + 1,
                           **{k: bfit[k] for k in ("A", "c", "A_pstd", "c_pstd", "sigma_r", "SE_sigma_r",
                                                   "pval_Ar")}}
        msd = np.full((1, 10), np.nan)
        lags = min(10, L - 1)
        msd[0, :lags] = 0.08 * np.arange(1, lags + 1) + rng.normal(0, 0.01, lags)
        track["MotionAnalysis"] = {"totalDisplacement": float(np.hypot(x[-1] - x[0], y[-1] - y[0])),
                                   "MSD": msd, "MSDstd": np.abs(msd) * 0.1}
        track["catIdx"] = float(cat)
        track["isCCP"] = np.array([[True]])
        sig = per["pval_Ar"] < 0.05
        n_sig = np.nansum(sig, axis=1)
        track["significantMaster"] = (n_sig > stats.binom.ppf(0.95, L, 0.01)).astype(float)[:, None]
        track["significantSlave"] = (n_sig > stats.binom.ppf(0.95, L, 0.05)).astype(float)[:, None]
        track["significantVsBackground"] = track["significantSlave"].copy()
        tracks.append(track)
    return tracks


def lifetime_data(tracks: list[dict], n_frames: int) -> dict:
    """The variables ``getLifetimeData.m`` saves (category-1 matrices; vectors of all tracks)."""
    n_ch = 2
    lengths = np.array([t["end"] - t["start"] + 1 for t in tracks])
    out = {"lifetime_s": np.array([t["lifetime_s"] for t in tracks])[:, None],
           "trackLengths": lengths[:, None].astype(float),
           "start": np.array([t["start"] for t in tracks])[:, None],
           "catIdx": np.array([t["catIdx"] for t in tracks])[:, None],
           "significantMaster": np.hstack([t["significantMaster"] for t in tracks]).T,
           "significantSlave": np.hstack([t["significantSlave"] for t in tracks]).T}
    ia = [t for t in tracks if t["catIdx"] == 1]
    nt = len(ia)
    mats = {k: np.full((nt, n_frames, n_ch), np.nan) for k in ("A", "A_pstd", "sigma_r", "SE_sigma_r")}
    bufs = {k: np.full((nt, 5, n_ch), np.nan) for k in ("sbA", "ebA", "sbSigma_r", "ebSigma_r")}
    gap = np.zeros((nt, n_frames), dtype=bool)
    for k, t in enumerate(ia):
        L = int(t["end"] - t["start"] + 1)
        for name in mats:
            mats[name][k, :L, :] = t[name].T
        bufs["sbA"][k] = t["startBuffer"]["A"].T
        bufs["ebA"][k] = t["endBuffer"]["A"].T
        bufs["sbSigma_r"][k] = t["startBuffer"]["sigma_r"].T
        bufs["ebSigma_r"][k] = t["endBuffer"]["sigma_r"].T
        gap[k, :L] = t["gapVect"].ravel()
    return {**out, **mats, **bufs, "gapMat_Ia": gap}


def write_cmeanalysis_export(root: str | Path, *, condition: str = "A7D2", n_cells: int = 8,
                             n_tracks: int = 300, n_frames: int = 300, dt: float = 1.0, seed: int = 0,
                             files: tuple[str, ...] = ("lifetimeData",), master: str = "TagRFP") -> list[Path]:
    """An outputs-only cmeAnalysis export: per cell ``Cell<k>_1s/<master>/Analysis/
    {lifetimeData,Parameters}.mat`` and, when ``files`` names it, ``Tracking/ProcessedTracks.mat``.
    No movies, no slave-channel folder. Returns the cell folders."""
    root = Path(root)
    rng = np.random.default_rng(seed)
    cells = []
    suffix = f"{dt:g}s" if dt >= 1 else f"{round(dt * 1000)}ms"
    for k in range(1, n_cells + 1):
        cell = root / condition / f"Cell{k}_{suffix}"
        tracks = processed_tracks(rng, n_tracks=n_tracks, n_frames=n_frames, dt=dt)
        channel = cell / master
        if "lifetimeData" in files:
            write_mat73(channel / "Analysis" / "lifetimeData.mat", lifetime_data(tracks, n_frames))
            write_mat73(channel / "Analysis" / "Parameters.mat",
                        {"MaxIntensityThreshold": 1578.8, "nFramesThreshold": 2.0,
                         "a": np.array([[1.0, 1.0]])})
        if "ProcessedTracks" in files:
            write_mat73(channel / "Tracking" / "ProcessedTracks.mat",
                        {"tracks": tracks, "processingInfo": {"procFlag": np.array([[1.0, 1.0, 1.0, 1.0]])}})
        cells.append(cell)
    return cells
