"""Two-channel TIRF movies of clathrin-mediated endocytosis with ground truth.

The default data source of the CME domain (no public raw CME movies exist). Each simulated
cell is a (T, 2, H, W) uint16 movie, clathrin (TagRFP) in channel 0 and auxilin (EGFP) in
channel 1, written in the cmeAnalysis folder layout so that the real-data ingest runs on
it, with the truth beside it. Model, per cell:

* a smooth random cell mask; cytosolic background in both channels with a smooth spatial
  modulation, bleaching exponentially; only the camera offset outside the mask;
* events born as a Poisson process in time, uniformly inside the mask, in four clathrin
  classes (productive pits ending in an auxilin burst, abortive pits, dim transients,
  hotspots/plaques with repeated bursts) plus short auxilin-only puncta; the birth process
  starts before frame 0 so the movie opens in steady state;
* Brownian motion (faster after scission), an optional stage drift, a fixed sub-pixel
  registration offset of the auxilin channel;
* pixel-integrated Gaussian PSFs (erf differences, amplitude = peak of the continuous
  Gaussian as in cmeAnalysis), rendered only within +-4 sigma of each spot;
* EMCCD noise (Poisson photo-electrons, Gamma gain, Gaussian read noise, offset) or sCMOS.

Density: ``density`` is the number of clathrin spots alive per px^2 *of cell* in every frame
(real cells 0.0017-0.0037, cme.md 2; the independent simulators of issue 13 used 0.0029 with
the cell filling the frame, i.e. ``mask_coverage: [1, 1]``). The birth rate follows from the
steady state, alive spots = birth rate x mean lifetime in frames, over the mask area
(``info['birth_rate_per_frame']``); births start a maximal lifetime before frame 0, so every
frame is in that steady state. The PSF of each channel is ``psf_sigma_clathrin`` /
``psf_sigma_auxilin`` (px).

Signal-to-noise ratio in the truth: ``snr_<channel>`` = the spot's true peak amplitude (ADU
above background, the cmeAnalysis A) over the sd of a single pixel of the local background
at the spot (expected background at its rounded position and frame, bleaching included,
through :func:`pixel_noise_sd`; the spot's own shot noise and its neighbours are left out).
With the default camera and a 450-ADU background the sd is ~315 ADU, so SNR 10 is A ~3,150.

Parameter values come from the CME reference notes (``cme.md`` section 4, calibrated on the
measured statistics of section 2); each default cites its source. Randomness: one
``SeedSequence`` per cell, split into independent streams for the cell layout, the events
and the camera, so the output is a pure function of (config, seed).
"""
from __future__ import annotations

import functools
import math
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any, Mapping

import numpy as np
import pandas as pd
from scipy import ndimage, special

from awd.io import InputError, atomic_dir, safe_name, write_json
from domains.cme.tracking.movie_io import MASTER, SLAVE, Movie, write_cell_tree

#: clathrin event classes drawn by share, then the auxilin-only puncta.
CLASSES = ("productive", "abortive", "dim", "hotspot", "aux_only")
#: marker file written at the top of a simulated data set (provenance; overwrite guard).
MARKER = "simulation.json"
_CHUNK_FRAMES = 32
_K_LEVEL = 1.959963984540054  # norminv(0.975), cmeAnalysis' amplitude test level


@dataclass(frozen=True)
class SimulationConfig:
    """Simulator parameters; times in s, distances in px, intensities in ADU above offset."""

    # --- geometry (cme.md 4.1: 256^2 at 80 nm/px, T = 300 frames at 1 s)
    height: int = 256
    width: int = 256
    n_frames: int = 300
    frame_interval_s: float = 1.0
    pixel_size_um: float = 0.08
    mask_coverage: tuple[float, float] = (0.55, 0.95)  # 4.1: cell covers 55-95 % of the frame
    # --- background (4.2)
    offset_adu: float = 1000.0  # 2: average-projection minimum 999-1,013 ADU
    bg_clathrin: float = 450.0  # 4.2: cytosolic clathrin 450 ADU, 350-600 between cells
    bg_clathrin_range: tuple[float, float] = (350.0, 600.0)
    bg_auxilin: float = 300.0  # 4.2: 300 ADU, 200-450 between cells
    bg_auxilin_range: tuple[float, float] = (200.0, 450.0)
    bg_modulation: float = 0.15  # 4.2: +-15 % smooth spatial modulation ...
    bg_correlation_px: float = 30.0  # ... correlation length ~30 px
    # --- events (4.3)
    density: float = 0.0025  # 4.3: spots present per px^2 of cell per frame (0.0017-0.0037)
    # class shares by births. 4.3 proposes 30/40/25/5 %; the hotspot share is lowered to 2 %
    # because the real cells have 258 hotspots among 9,143 tracks (2.8 %, notes 2) and 5 %
    # of 100-300 s plaques would make a third of all spots present plaques.
    share_productive: float = 0.30
    share_abortive: float = 0.43
    share_dim: float = 0.25
    share_hotspot: float = 0.02
    # Lifetimes. 4.3 proposes productive log-normal(median 45 s, sigma_log 0.6) clipped to
    # [8, 250] s and abortive 2 + Exp(6 s) with a 25 % log-normal(15 s, 0.5) subgroup. With
    # sigma_log 0.75 and a 35 % log-normal(18 s, 0.7) subgroup the complete tracks reproduce
    # the measured curves of 2 instead: aux+ fraction 0.18/0.34/0.60/0.86/0.96/0.99 in the
    # lifetime bins 10-15/15-20/20-40/40-80/80-160/>160 s (real 0.26/0.35/0.53/0.83/0.94/0.96),
    # lifetime percentiles 5/25/50/75/95 of tracks >= 10 s 14/26/41/66/121 s for aux+ (real
    # 11/23/47/80/146) and 10/12/17/25/48 s for aux- (real 10/11/15/24/52), and 67 % aux+
    # among the 15-161 s "hard" tracks (real 67.5 %). Bins <= 10 s differ (real 0.07/0.17)
    # because there the measured labels are dominated by noise and fragmented tracks.
    productive_lifetime_median_s: float = 45.0
    productive_lifetime_sigma: float = 0.75
    productive_lifetime_range_s: tuple[float, float] = (8.0, 250.0)
    # 4.3: A_max median 3,000, sigma_log 0.45 (2: aux+ tracks 10/50/90 % = 1,558/3,358/5,742)
    productive_peak_median: float = 3000.0
    productive_peak_sigma: float = 0.45
    productive_start_fraction: float = 0.3  # 4.3: starts at 0.3 A_max, linear growth to scission
    productive_end_fraction: float = 0.3  # 4.3: decays to <= 0.3 A_max by the end
    # short pits compress the end-anchored burst/scission timing so that scission comes
    # after this fraction of the lifetime
    productive_min_scission_fraction: float = 0.4
    abortive_lifetime_offset_s: float = 2.0
    abortive_lifetime_mean_s: float = 6.0
    abortive_long_fraction: float = 0.35
    abortive_long_median_s: float = 18.0
    abortive_long_sigma: float = 0.7
    abortive_peak_median: float = 1300.0  # 4.3: peak median 1,300, sigma_log 0.5
    # abortive pits living at least abortive_long_median_s plateau higher: 2 reports aux-
    # tracks of 40-80 s plateauing at ~1,800
    abortive_long_peak_median: float = 1800.0
    abortive_peak_sigma: float = 0.5
    # dim transients: 1-4 s, single bump of 500-1,000 ADU (4.3)
    dim_lifetime_s: tuple[float, float] = (1.0, 4.0)
    dim_peak: tuple[float, float] = (500.0, 1000.0)
    # hotspots/plaques: 100-300 s, plateau 3,000-6,000 with slow drift, 2-3 bursts >= 20 s apart (4.3)
    hotspot_lifetime_s: tuple[float, float] = (100.0, 300.0)
    hotspot_plateau: tuple[float, float] = (3000.0, 6000.0)
    hotspot_drift: float = 0.15  # relative amplitude of the slow plateau modulation
    hotspot_drift_period_s: tuple[float, float] = (50.0, 150.0)
    hotspot_bursts: tuple[int, int] = (2, 3)
    hotspot_burst_spacing_s: float = 20.0
    # auxilin burst (4.3; timing from the measured per-track numbers of 2: peak 6 frames
    # before the end (median), significant run 6 frames, peak amplitude median 1,843)
    aux_peak_median: float = 1800.0  # 4.3: log-normal median 1,800, sigma_log 0.55
    aux_peak_sigma: float = 0.55
    # correlation of the log burst amplitude with the productive pit's log clathrin peak (the
    # marginals stay log-normal as above); 0 = independent. Independent bursts left Y_sig_mean
    # almost unpredictable from the clathrin trace (default cells: OLS on the 40 points test
    # R^2 0.01, LSTM 0.12; real cells ~0.3 both); 0.85 gives 0.26 and 0.20 (README)
    aux_clathrin_correlation: float = 0.85
    aux_peak_before_end_s: tuple[float, float] = (3.0, 9.0)
    aux_rise_s: tuple[float, float] = (1.0, 2.0)  # 4.3: rise over 1-2 s
    aux_duration_s: tuple[float, float] = (3.0, 10.0)  # 4.3: duration U(3, 10) s
    scission_lead_s: tuple[float, float] = (0.0, 2.0)  # 4.3: onset at t_s + U(0, 2) s
    aux_double_probability: float = 0.25  # 4.3: optional Aux1-then-GAK sub-bursts ...
    aux_double_delay_s: tuple[float, float] = (2.0, 3.0)  # ... 2-3 s apart
    aux_double_amplitude: tuple[float, float] = (0.4, 0.8)
    # auxilin-only puncta: 1e-4 /px^2/frame, 1-3 frames (4.3); amplitude not in the notes
    aux_only_rate: float = 1e-4
    aux_only_lifetime_s: tuple[float, float] = (1.0, 3.0)
    aux_only_peak_median: float = 1000.0
    aux_only_peak_sigma: float = 0.4
    # --- motion (4.4)
    diffusion: float = 0.04  # px^2/s, 2: D ~ 0.03-0.05 px^2/s for pits
    fast_fraction: float = 0.05  # 5 % of events ...
    diffusion_fast: float = 0.3  # ... with D = 0.3 px^2/s
    diffusion_vesicle: float = 0.5  # released vesicle after scission
    drift_px_per_frame: float = 0.0  # optional global stage drift (4.4 suggests 0.02)
    channel_offset_max_px: float = 0.3  # auxilin registration offset, 0-0.3 px
    # --- optics (4.4)
    psf_sigma_clathrin: float = 1.2
    psf_sigma_auxilin: float = 1.1
    psf_half_width: float = 4.0  # render within +-4 sigma
    # --- camera (4.5): EMCCD, 110 ADU/e-, Gamma gain (excess noise factor^2 = 2), read 10 ADU
    camera: str = "emccd"
    gain_adu_per_e: float = 110.0
    read_noise_adu: float = 10.0
    scmos_read_noise_e: float = 2.0  # sCMOS alternative: Poisson x gain + 2 e- read noise
    # --- bleaching per frame (4.5): background and plaques only, pits exchange with the cytosol
    bleach_clathrin: float = 7e-4
    bleach_auxilin: float = 1e-3

    def __post_init__(self) -> None:
        def bad(key: str, why: str) -> InputError:
            return InputError(None, f"simulator setting '{key}' {why}")

        for f in fields(self):
            value = getattr(self, f.name)
            if isinstance(value, tuple):
                if len(value) != 2 or value[0] > value[1]:
                    raise bad(f.name, f"must be a [low, high] pair, got {list(value)}")
                if value[0] < 0:
                    raise bad(f.name, "must not be negative")
            elif isinstance(value, (int, float)) and not isinstance(value, bool):
                if not math.isfinite(value) or value < 0:
                    raise bad(f.name, f"must be finite and >= 0, got {value}")
        for key in ("height", "width"):
            if getattr(self, key) < 16:
                raise bad(key, "must be >= 16 px")
        for key in ("n_frames", "frame_interval_s", "pixel_size_um", "psf_sigma_clathrin",
                    "psf_sigma_auxilin", "gain_adu_per_e", "productive_lifetime_median_s",
                    "abortive_long_median_s", "aux_peak_median", "productive_peak_median",
                    "abortive_peak_median", "abortive_long_peak_median", "aux_only_peak_median"):
            if getattr(self, key) <= 0:
                raise bad(key, "must be > 0")
        if self.camera not in ("emccd", "scmos"):
            raise bad("camera", f"must be 'emccd' or 'scmos', got {self.camera!r}")
        if not (0 < self.mask_coverage[0] and self.mask_coverage[1] <= 1):
            raise bad("mask_coverage", "must lie in (0, 1]")
        if abs(sum(self.shares) - 1.0) > 1e-6:
            raise bad("share_*", f"class shares must sum to 1, got {sum(self.shares):.6g}")
        for key in ("abortive_long_fraction", "fast_fraction", "aux_double_probability",
                    "productive_start_fraction", "productive_end_fraction",
                    "productive_min_scission_fraction", "aux_clathrin_correlation"):
            if getattr(self, key) > 1:
                raise bad(key, "must be <= 1")
        if self.productive_end_fraction <= 0:
            raise bad("productive_end_fraction", "must be > 0")
        if self.hotspot_bursts[0] < 1:
            raise bad("hotspot_bursts", "must be >= 1")

    @property
    def shares(self) -> tuple[float, float, float, float]:
        """Birth shares of productive, abortive, dim, hotspot events."""
        return (self.share_productive, self.share_abortive, self.share_dim, self.share_hotspot)

    @classmethod
    def from_dict(cls, values: Mapping[str, Any] | None) -> "SimulationConfig":
        """Build from a config mapping (lists become pairs); unknown keys raise InputError."""
        values = dict(values or {})
        known = {f.name: f for f in fields(cls)}
        unknown = sorted(set(values) - set(known))
        if unknown:
            raise InputError(None, f"unknown simulator settings {unknown}; known: {sorted(known)}")
        kwargs: dict[str, Any] = {}
        for key, value in values.items():
            default = known[key].default
            try:
                if isinstance(default, tuple):
                    kind = type(default[0])
                    kwargs[key] = tuple(kind(v) for v in value)
                elif isinstance(default, int):
                    if float(value) != int(value):
                        raise ValueError("not an integer")
                    kwargs[key] = int(value)
                else:
                    kwargs[key] = type(default)(value)
            except (TypeError, ValueError) as err:
                raise InputError(None, f"simulator setting '{key}': cannot use {value!r} ({err})") from None
        return cls(**kwargs)

    def to_dict(self) -> dict[str, Any]:
        """JSON-friendly parameters (pairs as lists)."""
        return {k: list(v) if isinstance(v, tuple) else v for k, v in asdict(self).items()}

    def frames(self, seconds: np.ndarray | float) -> np.ndarray:
        """Seconds -> (fractional) frames."""
        return np.asarray(seconds, dtype=float) / self.frame_interval_s


@dataclass
class SimulatedCell:
    """A simulated movie, its truth tables, the cell mask and the per-cell drawn parameters."""

    movie: Movie | None  # None when simulated with ``render=False``
    truth_tracks: pd.DataFrame
    truth_detections: pd.DataFrame
    mask: np.ndarray
    info: dict[str, Any] = field(default_factory=dict)


# ----------------------------------------------------------------------------- building blocks


def sample_lifetimes_s(cfg: SimulationConfig, cls: str, n: int,
                       rng: np.random.Generator) -> np.ndarray:
    """``n`` continuous lifetimes in s of event class ``cls`` (before rounding to frames)."""
    if cls == "productive":
        lo, hi = cfg.productive_lifetime_range_s
        return np.clip(rng.lognormal(math.log(cfg.productive_lifetime_median_s),
                                     cfg.productive_lifetime_sigma, n), lo, hi)
    if cls == "abortive":
        long = rng.random(n) < cfg.abortive_long_fraction
        short = cfg.abortive_lifetime_offset_s + rng.exponential(cfg.abortive_lifetime_mean_s, n)
        return np.where(long, rng.lognormal(math.log(cfg.abortive_long_median_s),
                                            cfg.abortive_long_sigma, n), short)
    ranges = {"dim": cfg.dim_lifetime_s, "hotspot": cfg.hotspot_lifetime_s,
              "aux_only": cfg.aux_only_lifetime_s}
    if cls not in ranges:
        raise ValueError(f"unknown event class {cls!r}")
    return rng.uniform(*ranges[cls], n)


def _to_frames(cfg: SimulationConfig, seconds: np.ndarray) -> np.ndarray:
    return np.maximum(1, np.rint(cfg.frames(seconds))).astype(np.int64)


@functools.lru_cache(maxsize=32)
def expected_lifetime_frames(cfg: SimulationConfig) -> float:
    """Mean lifetime in frames of a clathrin birth (class mixture), by a fixed-seed Monte Carlo."""
    rng = np.random.default_rng(20211206)
    n = 200_000
    means = [_to_frames(cfg, sample_lifetimes_s(cfg, c, n, rng)).mean() for c in CLASSES[:4]]
    return float(np.dot(cfg.shares, means))


def cell_mask(rng: np.random.Generator, height: int, width: int, coverage: float) -> np.ndarray:
    """A smooth random blob (rotated ellipse with low-order boundary wobble) covering ``coverage``."""
    cy, cx = height * rng.uniform(0.4, 0.6), width * rng.uniform(0.4, 0.6)
    aspect, angle = rng.uniform(0.6, 1.0), rng.uniform(0, np.pi)
    wobble = [(m, rng.uniform(0, 0.08), rng.uniform(0, 2 * np.pi)) for m in (2, 3, 4)]
    yy, xx = np.mgrid[0:height, 0:width]
    dy, dx = yy - cy, xx - cx
    u = (dx * np.cos(angle) + dy * np.sin(angle)) / aspect
    v = -dx * np.sin(angle) + dy * np.cos(angle)
    theta = np.arctan2(v, u)
    rho = np.hypot(u, v) / (1 + sum(a * np.cos(m * theta + p) for m, a, p in wobble))
    # the covered fraction grows with the radius: pick it as the quantile of rho
    radius = np.quantile(rho, coverage)
    return rho <= radius


def background_field(rng: np.random.Generator, height: int, width: int, correlation_px: float,
                     modulation: float) -> np.ndarray:
    """1 + a smooth Gaussian random field scaled to a maximal deviation of ``modulation``."""
    noise = ndimage.gaussian_filter(rng.standard_normal((height, width)), correlation_px / 2,
                                    mode="wrap")
    peak = np.abs(noise).max()
    return 1.0 + modulation * noise / peak if peak > 0 else np.ones((height, width))


def render_spots(n_frames: int, shape: tuple[int, int], frame: np.ndarray, x: np.ndarray,
                 y: np.ndarray, amplitude: np.ndarray, sigma: float,
                 half_width: float = 4.0) -> np.ndarray:
    """Pixel-integrated Gaussian spots, (n_frames, H, W) float64.

    Spot i adds ``amplitude[i] * 2 pi sigma^2 * Px * Py`` where Px, Py are the Gaussian
    probabilities of each pixel's [c - 1/2, c + 1/2] interval (erf differences), so
    ``amplitude`` is the peak of the continuous Gaussian and the integral over the plane is
    ``amplitude * 2 pi sigma^2``. Only pixels within ``half_width`` sigma are drawn. Pixel
    centres are at integer coordinates; x is the column, y the row.
    """
    height, width = shape
    w = int(math.ceil(half_width * sigma))
    pad = 2 * w
    canvas_shape = (n_frames, height + 2 * pad, width + 2 * pad)
    frame, x, y, amplitude = (np.asarray(a) for a in (frame, x, y, amplitude))
    cx, cy = np.rint(x).astype(np.int64), np.rint(y).astype(np.int64)
    keep = ((amplitude != 0) & (cx >= -w) & (cx < width + w) & (cy >= -w) & (cy < height + w)
            & (frame >= 0) & (frame < n_frames))
    frame, x, y, amplitude, cx, cy = (a[keep] for a in (frame, x, y, amplitude, cx, cy))
    offsets = np.arange(-w, w + 1)
    scale = 1.0 / (math.sqrt(2.0) * sigma)

    def weights(centre: np.ndarray, pos: np.ndarray) -> np.ndarray:
        edges = (centre[:, None] + offsets[None, :]) - pos[:, None]
        return 0.5 * (special.erf((edges + 0.5) * scale) - special.erf((edges - 0.5) * scale))

    values = (amplitude * 2 * np.pi * sigma ** 2)[:, None, None] \
        * weights(cy, y)[:, :, None] * weights(cx, x)[:, None, :]
    rows = (cy[:, None] + offsets[None, :] + pad)[:, :, None]
    cols = (cx[:, None] + offsets[None, :] + pad)[:, None, :]
    flat = (frame[:, None, None] * canvas_shape[1] + rows) * canvas_shape[2] + cols
    canvas = np.bincount(flat.ravel(), weights=values.ravel(),
                         minlength=int(np.prod(canvas_shape))).reshape(canvas_shape)
    return canvas[:, pad:pad + height, pad:pad + width]


def pixel_noise_sd(cfg: SimulationConfig, level: np.ndarray | float) -> np.ndarray:
    """Theoretical pixel sd (ADU) at expected signal ``level`` (ADU above offset)."""
    g = cfg.gain_adu_per_e
    if cfg.camera == "emccd":  # Var = 2 g S + read^2 (Gamma gain doubles the shot noise)
        return np.sqrt(2 * g * np.asarray(level, float) + cfg.read_noise_adu ** 2)
    return np.sqrt(g * np.asarray(level, float) + (cfg.scmos_read_noise_e * g) ** 2)


def camera_noise(expected: np.ndarray, cfg: SimulationConfig,
                 rng: np.random.Generator) -> np.ndarray:
    """Camera counts (uint16) for an expected signal in ADU above the offset.

    EMCCD: photo-electrons e ~ Poisson(S/g), EM output ~ Gamma(shape e, scale g), plus
    N(0, read) and the offset; sCMOS: g * Poisson(S/g) + N(0, read_e * g) + offset.
    """
    g = cfg.gain_adu_per_e
    electrons = rng.poisson(np.maximum(expected, 0.0) / g)
    if cfg.camera == "emccd":
        out = np.zeros(expected.shape)
        lit = electrons > 0
        out[lit] = rng.gamma(electrons[lit].astype(float), g)
        read = cfg.read_noise_adu
    else:
        out = electrons * g
        read = cfg.scmos_read_noise_e * g
    out += rng.normal(cfg.offset_adu, read, expected.shape) if read > 0 else cfg.offset_adu
    return np.clip(np.rint(out), 0, 65535).astype(np.uint16)


# ----------------------------------------------------------------------------- events


def _lognormal(rng: np.random.Generator, median: float | np.ndarray, sigma: float, n: int) -> np.ndarray:
    return np.asarray(median) * np.exp(sigma * rng.standard_normal(n))


def _draw_events(cfg: SimulationConfig, rng: np.random.Generator,
                 mask: np.ndarray) -> tuple[pd.DataFrame, pd.DataFrame]:
    """Events (one row each) and auxilin bursts (event index, onset, rise, tau, amplitude).

    Times inside an event are frames since its birth (fractional). Events never visible in
    the movie are dropped.
    """
    T = cfg.n_frames
    area = int(mask.sum())
    burn_in = int(_to_frames(cfg, np.array([max(cfg.productive_lifetime_range_s[1],
                                                 cfg.hotspot_lifetime_s[1])]))[0])
    birth_rate = cfg.density * area / expected_lifetime_frames(cfg)
    n_clathrin = rng.poisson(birth_rate * (T + burn_in))
    n_aux = rng.poisson(cfg.aux_only_rate * area * T)
    cls = np.concatenate([rng.choice(4, size=n_clathrin, p=np.asarray(cfg.shares) / sum(cfg.shares)),
                          np.full(n_aux, 4)])
    birth = np.concatenate([rng.integers(-burn_in, T, n_clathrin), rng.integers(0, T, n_aux)])
    n = cls.size
    lifetime_s = np.zeros(n)
    for c, name in enumerate(CLASSES):
        sel = cls == c
        lifetime_s[sel] = sample_lifetimes_s(cfg, name, int(sel.sum()), rng)
    lifetime = _to_frames(cfg, lifetime_s)
    iy, ix = np.nonzero(mask)
    pick = rng.integers(0, iy.size, n)
    x0 = ix[pick] + rng.uniform(-0.5, 0.5, n)
    y0 = iy[pick] + rng.uniform(-0.5, 0.5, n)
    diffusion = np.where(rng.random(n) < cfg.fast_fraction, cfg.diffusion_fast, cfg.diffusion)
    # clathrin amplitude parameter of each class
    long_abortive = lifetime_s >= cfg.abortive_long_median_s
    peak = np.select(
        [cls == 0, cls == 1, cls == 2, cls == 3],
        [_lognormal(rng, cfg.productive_peak_median, cfg.productive_peak_sigma, n),
         _lognormal(rng, np.where(long_abortive, cfg.abortive_long_peak_median,
                                  cfg.abortive_peak_median), cfg.abortive_peak_sigma, n),
         rng.uniform(*cfg.dim_peak, n), rng.uniform(*cfg.hotspot_plateau, n)], 0.0)
    aux_only_peak = _lognormal(rng, cfg.aux_only_peak_median, cfg.aux_only_peak_sigma, n)
    drift_period = cfg.frames(rng.uniform(*cfg.hotspot_drift_period_s, n))
    drift_phase = rng.uniform(0, 2 * np.pi, n)
    # productive timing, backwards from the end: burst peak, rise, scission lead
    end = lifetime - 1.0
    before_end = cfg.frames(rng.uniform(*cfg.aux_peak_before_end_s, n))
    rise = cfg.frames(rng.uniform(*cfg.aux_rise_s, n))
    lead = cfg.frames(rng.uniform(*cfg.scission_lead_s, n))
    span = before_end + rise + lead
    room = (1 - cfg.productive_min_scission_fraction) * end
    shrink = np.minimum(1.0, room / np.maximum(span, 1e-9))
    before_end, rise, lead = before_end * shrink, rise * shrink, lead * shrink
    onset = end - before_end - rise
    scission = np.where(cls == 0, onset - lead, np.nan)
    duration = cfg.frames(rng.uniform(*cfg.aux_duration_s, n))
    # the burst falls to 30 % of its peak at the end of its duration: exp(-(D - rise)/tau) = 0.3;
    # this gives truth Y_sig_mean 10/25/50/75/90 % = 777/928/1,196/1,671/2,238 ADU and 5 (IQR
    # 4-7) significant frames, against the noisy measured 820/999/1,323/1,779/2,273 and 6 (4-8)
    tau = np.maximum(duration - rise, 1.0) / math.log(1 / 0.3)
    burst_peak = _lognormal(rng, cfg.aux_peak_median, cfg.aux_peak_sigma, n)
    rho = cfg.aux_clathrin_correlation
    if rho and cfg.productive_peak_sigma > 0:  # couple the productive bursts to the coat's size
        own_peak = np.where(cls == 0, peak, cfg.productive_peak_median)  # other classes: unused
        z_clathrin = np.log(own_peak / cfg.productive_peak_median) / cfg.productive_peak_sigma
        z_own = np.log(burst_peak / cfg.aux_peak_median) / cfg.aux_peak_sigma
        coupled = cfg.aux_peak_median * np.exp(cfg.aux_peak_sigma * (rho * z_clathrin
                                                                     + math.sqrt(1 - rho ** 2) * z_own))
        burst_peak = np.where(cls == 0, coupled, burst_peak)
    double = rng.random(n) < cfg.aux_double_probability
    delay = cfg.frames(rng.uniform(*cfg.aux_double_delay_s, n))
    ratio = rng.uniform(*cfg.aux_double_amplitude, n)

    visible = (birth + lifetime > 0) & (birth < T)
    bursts = []
    for e in np.flatnonzero(visible & (cls == 0)):
        bursts.append((e, onset[e], rise[e], tau[e], burst_peak[e]))
        if double[e]:
            bursts.append((e, onset[e] + delay[e], rise[e], tau[e], burst_peak[e] * ratio[e]))
    spacing = cfg.frames(cfg.hotspot_burst_spacing_s)
    for e in np.flatnonzero(visible & (cls == 3)):
        n_bursts = int(rng.integers(cfg.hotspot_bursts[0], cfg.hotspot_bursts[1] + 1))
        onsets = _spaced_times(rng, n_bursts, 0.0, max(end[e] - 3 * tau[e], 0.0), spacing)
        amps = _lognormal(rng, cfg.aux_peak_median, cfg.aux_peak_sigma, onsets.size)
        bursts += [(e, o, rise[e], tau[e], a) for o, a in zip(onsets, amps)]
    events = pd.DataFrame({
        "cls": cls, "birth": birth, "lifetime": lifetime, "lifetime_s": lifetime_s, "x0": x0,
        "y0": y0, "diffusion": diffusion, "peak": peak, "aux_only_peak": aux_only_peak,
        "drift_period": drift_period, "drift_phase": drift_phase, "scission": scission})
    bursts_table = pd.DataFrame(bursts, columns=["event", "onset", "rise", "tau", "amplitude"])
    keep = np.flatnonzero(visible)
    remap = -np.ones(n, dtype=np.int64)
    remap[keep] = np.arange(keep.size)
    bursts_table["event"] = remap[bursts_table["event"].to_numpy(dtype=np.int64)]
    return events.iloc[keep].reset_index(drop=True), bursts_table


def _spaced_times(rng: np.random.Generator, n: int, lo: float, hi: float, spacing: float) -> np.ndarray:
    """Up to ``n`` sorted uniform times in [lo, hi] at least ``spacing`` apart."""
    for count in range(n, 0, -1):
        room = (hi - lo) - (count - 1) * spacing
        if room >= 0:
            # uniform order statistics on the reduced interval, then re-insert the spacing
            base = np.sort(rng.uniform(0, room, count))
            return lo + base + spacing * np.arange(count)
    return np.array([lo])


def _burst_kernel(u: np.ndarray, rise: np.ndarray, tau: np.ndarray) -> np.ndarray:
    """Linear rise from 0 at onset to 1 at ``rise``, then exponential decay with ``tau``."""
    up = np.clip(u / np.maximum(rise, 1e-9), 0.0, 1.0)
    return np.where(u < 0, 0.0, np.where(u < rise, up, np.exp(-(u - rise) / tau)))


def _event_rows(cfg: SimulationConfig, events: pd.DataFrame, bursts: pd.DataFrame,
                rng: np.random.Generator) -> pd.DataFrame:
    """One row per event and lifetime frame: frame, position and true amplitudes."""
    lifetime = events["lifetime"].to_numpy()
    starts = np.concatenate([[0], np.cumsum(lifetime)[:-1]]).astype(np.int64)[:len(lifetime)]
    event = np.repeat(np.arange(len(events)), lifetime)
    k = np.arange(event.size) - starts[event]
    ev = {c: events[c].to_numpy()[event] for c in events.columns}
    frame = ev["birth"] + k
    L = ev["lifetime"].astype(float)
    cls = ev["cls"]
    # clathrin
    ts = ev["scission"]
    with np.errstate(divide="ignore", invalid="ignore"):
        f0 = cfg.productive_start_fraction
        grow = ev["peak"] * (f0 + (1 - f0) * np.where(ts > 0, k / ts, 1.0))
        decay = ev["peak"] * np.exp(math.log(cfg.productive_end_fraction)
                                    * (k - ts) / np.maximum(L - 1 - ts, 1e-9))
    bump = np.sin(np.pi * (k + 0.5) / L)
    bleach_c = np.exp(-cfg.bleach_clathrin * np.maximum(frame, 0))
    plateau = ev["peak"] * (1 + cfg.hotspot_drift * np.sin(2 * np.pi * k / ev["drift_period"]
                                                             + ev["drift_phase"])) * bleach_c
    A_c = np.select([cls == 0, cls == 1, cls == 2, cls == 3],
                    [np.where(k < ts, grow, decay), ev["peak"] * np.sqrt(bump),
                     ev["peak"] * bump, plateau], 0.0)
    # auxilin: bursts of productive pits and hotspots, bumps of auxilin-only puncta
    A_a = np.where(cls == 4, ev["aux_only_peak"] * bump, 0.0)
    if len(bursts):
        b_len = lifetime[bursts["event"].to_numpy()]
        b_rows = np.repeat(starts[bursts["event"].to_numpy()], b_len) \
            + (np.arange(b_len.sum()) - np.repeat(np.cumsum(b_len) - b_len, b_len))
        rep = {c: np.repeat(bursts[c].to_numpy(), b_len) for c in ("onset", "rise", "tau", "amplitude")}
        contribution = rep["amplitude"] * _burst_kernel(k[b_rows] - rep["onset"], rep["rise"], rep["tau"])
        A_a = A_a + np.bincount(b_rows, weights=contribution, minlength=event.size)
    # Brownian motion from birth; released vesicles diffuse faster after scission
    D = np.where((cls == 0) & (k >= ts), cfg.diffusion_vesicle, ev["diffusion"])
    steps = rng.standard_normal((2, event.size)) * np.sqrt(2 * D * cfg.frame_interval_s)
    steps[:, starts] = 0.0
    walk = np.cumsum(steps, axis=1)
    walk -= walk[:, starts][:, event]
    rows = pd.DataFrame({"event": event, "k": k, "frame": frame, "x": ev["x0"] + walk[0],
                         "y": ev["y0"] + walk[1], "A_clathrin": A_c, "A_auxilin": A_a})
    return rows[(frame >= 0) & (frame < cfg.n_frames)].reset_index(drop=True)


# ----------------------------------------------------------------------------- one cell


def _seed_sequence(seed: int | np.random.SeedSequence) -> np.random.SeedSequence:
    return seed if isinstance(seed, np.random.SeedSequence) else np.random.SeedSequence(seed)


def simulate_cell(cfg: SimulationConfig, seed: int | np.random.SeedSequence, *,
                  name: str = "Cell1", render: bool = True) -> SimulatedCell:
    """Simulate one cell: movie (T, 2, H, W) uint16 plus truth tables (see module docstring).

    ``render=False`` skips the pixels (``movie`` is None) and returns the same truth, mask and
    info as ``render=True`` (the camera draws from its own random stream): a cheap way to
    study the event statistics.

    ``truth_tracks``: one row per event visible in the movie (class, birth frame, full
    lifetime, visible range, labels, the drawn clathrin peak/plateau ``peak_clathrin`` and
    largest burst amplitude ``peak_auxilin``, the visible maxima, scission and auxilin-peak
    frames, ``Y_sig_mean_true`` = mean auxilin over the ``in_burst`` frames, D, birth
    position, ``snr_max_clathrin`` = the largest ``snr_clathrin`` of its visible frames, the
    burst timing ``burst_onset_frame`` (birth + first burst onset, fractional; NaN without a
    burst) and ``first_burst_frame``/``last_burst_frame`` (first/last ``in_burst`` frame, NaN
    if none)). ``truth_detections``: one row
    per (event, visible frame) with the true position (x = column, y = row; auxilin is drawn
    at x + dx, y + dy of ``info['channel_offset_px']``) and amplitudes in ADU above background
    (peak of the continuous Gaussian, bleaching included); ``in_burst`` marks frames whose
    auxilin amplitude exceeds cmeAnalysis' detection level k * sigma_pixel at the auxilin
    background (``info['aux_significance_adu']``); ``noise_sd_<channel>`` and
    ``snr_<channel>`` are the local pixel noise and the SNR of the module docstring.
    """
    seq = _seed_sequence(seed)
    # children derived without SeedSequence.spawn, which would advance ``seq``'s counter
    layout_rng, event_rng, camera_rng = (
        np.random.default_rng(np.random.SeedSequence(seq.entropy, spawn_key=(*seq.spawn_key, i)))
        for i in range(3))
    H, W, T = cfg.height, cfg.width, cfg.n_frames
    coverage = layout_rng.uniform(*cfg.mask_coverage)
    mask = cell_mask(layout_rng, H, W, coverage)
    field_ = background_field(layout_rng, H, W, cfg.bg_correlation_px, cfg.bg_modulation)
    # soft edge inside the cell, nothing outside: there the camera sees only its offset
    soft_mask = ndimage.gaussian_filter(mask.astype(float), 2.0) * mask
    levels = []
    for median, (lo, hi) in ((cfg.bg_clathrin, cfg.bg_clathrin_range),
                             (cfg.bg_auxilin, cfg.bg_auxilin_range)):
        levels.append(float(np.clip(layout_rng.normal(median, (hi - lo) / 4), lo, hi)))
    offset_angle, drift_angle = layout_rng.uniform(0, 2 * np.pi, 2)
    offset_r = layout_rng.uniform(0, cfg.channel_offset_max_px)
    channel_offset = (offset_r * math.cos(offset_angle), offset_r * math.sin(offset_angle))
    drift = (cfg.drift_px_per_frame * math.cos(drift_angle),
             cfg.drift_px_per_frame * math.sin(drift_angle))

    events, bursts = _draw_events(cfg, event_rng, mask)
    rows = _event_rows(cfg, events, bursts, event_rng)
    rows["x"] += drift[0] * rows["frame"]
    rows["y"] += drift[1] * rows["frame"]

    sigmas = (cfg.psf_sigma_clathrin, cfg.psf_sigma_auxilin)
    bleach = (cfg.bleach_clathrin, cfg.bleach_auxilin)
    shifts = ((0.0, 0.0), channel_offset)
    frame_all = rows["frame"].to_numpy()
    shaped = field_ * soft_mask
    data = np.empty((T, 2, H, W), dtype=np.uint16) if render else None
    for f0 in range(0, T if render else 0, _CHUNK_FRAMES):
        n = min(_CHUNK_FRAMES, T - f0)
        sel = (frame_all >= f0) & (frame_all < f0 + n)
        chunk = rows[sel]
        times = np.arange(f0, f0 + n)
        for c, column in enumerate(("A_clathrin", "A_auxilin")):
            spots = render_spots(n, (H, W), chunk["frame"].to_numpy() - f0,
                                 chunk["x"].to_numpy() + shifts[c][0],
                                 chunk["y"].to_numpy() + shifts[c][1], chunk[column].to_numpy(),
                                 sigmas[c], cfg.psf_half_width)
            background = levels[c] * shaped[None] * np.exp(-bleach[c] * times)[:, None, None]
            data[f0:f0 + n, c] = camera_noise(spots + background, cfg, camera_rng)

    threshold = float(_K_LEVEL * pixel_noise_sd(cfg, levels[1]))
    truth_tracks, truth_detections = _truth_tables(cfg, events, bursts, rows, threshold)
    _add_snr(cfg, truth_tracks, truth_detections, [lv * shaped for lv in levels], bleach, shifts)
    info = {"name": name, "seed_entropy": str(seq.entropy), "seed_spawn_key": list(seq.spawn_key),
            "mask_coverage": float(mask.mean()), "bg_clathrin": levels[0], "bg_auxilin": levels[1],
            "channel_offset_px": list(channel_offset), "drift_px_per_frame": list(drift),
            "aux_significance_adu": threshold,
            "birth_rate_per_frame": cfg.density * int(mask.sum()) / expected_lifetime_frames(cfg),
            "n_events": int(len(events))}
    movie = Movie(data, cfg.frame_interval_s, cfg.pixel_size_um, name) if render else None
    return SimulatedCell(movie, truth_tracks, truth_detections, mask, info)


def _add_snr(cfg: SimulationConfig, tracks: pd.DataFrame, det: pd.DataFrame, backgrounds: list,
             bleach: tuple[float, float], shifts) -> None:
    """Add the local pixel noise and SNR per spot-frame (module docstring) and the per-track
    largest clathrin SNR, in place."""
    H, W = backgrounds[0].shape
    frame = det["frame"].to_numpy()
    for (name, column), bg, rate, (dx, dy) in zip((("clathrin", "A_clathrin"), ("auxilin", "A_auxilin")),
                                                   backgrounds, bleach, shifts):
        ix = np.clip(np.rint(det["x"].to_numpy() + dx), 0, W - 1).astype(np.int64)
        iy = np.clip(np.rint(det["y"].to_numpy() + dy), 0, H - 1).astype(np.int64)
        sd = pixel_noise_sd(cfg, bg[iy, ix] * np.exp(-rate * frame))
        det[f"noise_sd_{name}"] = sd
        det[f"snr_{name}"] = det[column].to_numpy() / sd
    tid = tracks["track_id"]
    tracks["snr_max_clathrin"] = det.groupby("track_id")["snr_clathrin"].max().reindex(tid).to_numpy()


def _truth_tables(cfg: SimulationConfig, events: pd.DataFrame, bursts: pd.DataFrame,
                  rows: pd.DataFrame, threshold: float) -> tuple[pd.DataFrame, pd.DataFrame]:
    T = cfg.n_frames
    names = np.asarray(CLASSES)[events["cls"].to_numpy()]
    detections = pd.DataFrame({
        "track_id": rows["event"].to_numpy(np.int64), "frame": rows["frame"].to_numpy(np.int64),
        "x": rows["x"], "y": rows["y"], "A_clathrin": rows["A_clathrin"],
        "A_auxilin": rows["A_auxilin"], "class": names[rows["event"].to_numpy()],
        "in_burst": rows["A_auxilin"].to_numpy() > threshold})
    group = detections.groupby("track_id", sort=True)
    birth, lifetime = events["birth"].to_numpy(), events["lifetime"].to_numpy()
    sig = detections[detections["in_burst"]].groupby("track_id")["A_auxilin"]
    n_sig = sig.size().reindex(events.index, fill_value=0).to_numpy()
    y_sig = sig.mean().reindex(events.index, fill_value=0.0).to_numpy()
    n_bursts = bursts.groupby("event").size().reindex(events.index, fill_value=0).to_numpy()
    first_onset = bursts.groupby("event")["onset"].min().reindex(events.index).to_numpy()
    burst_frames = detections.loc[detections["in_burst"], ["track_id", "frame"]].groupby("track_id")["frame"]
    first_burst = burst_frames.min().reindex(events.index).to_numpy(dtype=float)
    last_burst = burst_frames.max().reindex(events.index).to_numpy(dtype=float)
    burst_max = bursts.groupby("event")["amplitude"].max().reindex(events.index, fill_value=0.0).to_numpy()
    cls = events["cls"].to_numpy()
    peak_frame = np.full(len(events), np.nan)
    has_aux = group["A_auxilin"].max().reindex(events.index).to_numpy() > 0
    idx = group["A_auxilin"].idxmax().reindex(events.index)
    peak_frame[has_aux] = detections.loc[idx[has_aux].to_numpy(dtype=np.int64), "frame"].to_numpy()
    tracks = pd.DataFrame({
        "track_id": events.index.to_numpy(np.int64),
        "class": names,
        "birth_frame": birth,
        "lifetime_frames": lifetime,
        "lifetime_s": lifetime * cfg.frame_interval_s,
        "first_frame": np.maximum(birth, 0),
        "last_frame": np.minimum(birth + lifetime, T) - 1,
        "visibility": np.where((birth >= 0) & (birth + lifetime <= T), 1,
                               np.where((birth < 0) & (birth + lifetime > T), 3, 2)),
        "is_productive": cls == 0,
        "aux_positive": np.isin(cls, (0, 3, 4)),
        "is_hotspot": cls == 3,
        "peak_clathrin": events["peak"].to_numpy(),
        "peak_auxilin": np.where(cls == 4, events["aux_only_peak"].to_numpy(), burst_max),
        "A_max_clathrin": group["A_clathrin"].max().reindex(events.index).to_numpy(),
        "A_max_auxilin": group["A_auxilin"].max().reindex(events.index).to_numpy(),
        "scission_frame": birth + events["scission"].to_numpy(),
        "aux_peak_frame": peak_frame,
        "n_bursts": n_bursts,
        "n_sig_frames": n_sig,
        "Y_sig_mean_true": y_sig,
        "diffusion": events["diffusion"].to_numpy(),
        "x0": events["x0"].to_numpy(),
        "y0": events["y0"].to_numpy(),
    })
    tracks["n_visible"] = tracks["last_frame"] - tracks["first_frame"] + 1
    # appended after the columns above so that their order stays as it was
    tracks["burst_onset_frame"] = birth + first_onset
    tracks["first_burst_frame"] = first_burst
    tracks["last_burst_frame"] = last_burst
    return tracks, detections.sort_values(["track_id", "frame"], kind="stable").reset_index(drop=True)


# ----------------------------------------------------------------------------- data set


def write_simulated_dataset(raw_dir: str | Path, cfg: SimulationConfig | Mapping[str, Any], *,
                            n_cells: int, seed: int, threads: int = 1,
                            condition: str = "sim") -> list[Path]:
    """Simulate ``n_cells`` cells into ``raw_dir`` in the cmeAnalysis layout; return the cell folders.

    ``raw_dir/<condition>/Cell<k>_<interval>/{TagRFP,EGFP}/Cell<k>_<channel>.tif`` with
    ``truth_tracks.parquet``, ``truth_detections.parquet``, ``truth_cell.json`` and
    ``truth_mask.tif`` in each cell folder and ``simulation.json`` (config, seed) at the top.
    Cell k uses the k-th child of ``SeedSequence(seed)``, so the output does not depend on
    ``threads``. ``raw_dir`` is replaced as a whole, and only if it is empty or an earlier
    simulation.
    """
    cfg = cfg if isinstance(cfg, SimulationConfig) else SimulationConfig.from_dict(cfg)
    if int(n_cells) < 1:
        raise InputError(None, f"n_cells must be >= 1, got {n_cells}")
    raw_dir = Path(raw_dir)
    if raw_dir.exists() and any(raw_dir.iterdir()) and not (raw_dir / MARKER).is_file():
        raise InputError(raw_dir, f"exists, is not empty and holds no {MARKER}: not replacing "
                         f"data the simulator did not write")
    seeds = np.random.SeedSequence(int(seed)).spawn(int(n_cells))

    with atomic_dir(raw_dir) as tmp:
        def one(k: int) -> str:
            name = f"Cell{k + 1}"
            cell = simulate_cell(cfg, seeds[k], name=name)
            side = {"truth_tracks.parquet": cell.truth_tracks,
                    "truth_detections.parquet": cell.truth_detections,
                    "truth_cell.json": cell.info,
                    "truth_mask.tif": cell.mask.astype(np.uint8)}
            return write_cell_tree(tmp, condition, name, cell.movie, master=MASTER, slave=SLAVE,
                                   side_files=side).name

        with ThreadPoolExecutor(max_workers=max(1, int(threads))) as pool:
            names = list(pool.map(one, range(int(n_cells))))
        write_json(tmp / MARKER, {"config": cfg.to_dict(), "seed": int(seed), "n_cells": int(n_cells),
                                  "condition": condition, "cells": names,
                                  "master": MASTER, "slave": SLAVE})
    return [raw_dir / safe_name(condition) / name for name in names]
