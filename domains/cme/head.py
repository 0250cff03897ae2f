"""The CME interpretable head: largest signed wavelet coefficients per scale + OLS.

This is the reference's ``max_transformer(sgn="pos", m=6)`` followed by
``sklearn.linear_model.LinearRegression``: each trace is transformed with the (learned or
fixed) wavelet, J levels, and from each of the J+1 coefficient vectors the ``m`` largest
*signed* values are kept, sorted in descending order (not the largest magnitudes). With J=4 and
m=6 that is 30 features. The wavelet is selected by 5-fold cross-validated R^2 on the training
traces with scikit-learn's default, unshuffled ``KFold`` (as the reference's
``cross_val_score``): traces are kept in dataset order (cell by cell), so folds are contiguous
blocks that roughly follow the cells.

Conventions: ``h`` is the low-pass filter in pywt's ``rec_lo`` convention; the filter bank is
``dec_lo = h[::-1]``, ``rec_hi = g`` with ``g[n] = (-1)^n h[L-1-n]``, ``dec_hi = g[::-1]`` (for
db5 this is pywt's own bank, bit for bit). Coefficients are in pywt order
``[a_J, d_J, ..., d_1]`` (the reference's awave order is ``[a_J, d_1, ..., d_J]``; OLS does not
care about column order). A scale with fewer than ``m`` coefficients is padded with zeros after
its sorted values (the coefficient of a position that does not exist in 'zero' mode), so the
feature layout is always ``m * (J + 1)`` columns; such constant columns carry no information
and OLS ignores them (minimum-norm solution).
"""
from __future__ import annotations

import logging
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pywt
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.linear_model import LinearRegression
from sklearn.model_selection import KFold, cross_val_score
from sklearn.pipeline import Pipeline

from awd.stats import bootstrap_se, r2
from awd.transform import pywt_wavelet

log = logging.getLogger(__name__)

#: table.csv row names, in order.
METHODS = ("AWD", "DB5", "AWD without interpretation loss", "LSTM")


def wavelet_coefficients(X: np.ndarray, h: np.ndarray, J: int, mode: str) -> list[np.ndarray]:
    """DWT of every row of ``X`` (n, L) in float64, pywt order ``[a_J, d_J, ..., d_1]``."""
    X = np.asarray(X, dtype=np.float64)
    with warnings.catch_warnings():
        # 40-sample traces with a 10-tap filter exceed pywt's "useful" level; the reference uses J=4 anyway
        warnings.filterwarnings("ignore", message="Level value of", category=UserWarning)
        return pywt.wavedec(X, pywt_wavelet(np.asarray(h, np.float64)), mode=mode, level=J, axis=-1)


def _top_m_order(c: np.ndarray, m: int) -> np.ndarray:
    """Indices of the m largest values per row, largest first (stable for ties)."""
    return np.argsort(-c, axis=1, kind="stable")[:, :m]


class MaxCoefficients(TransformerMixin, BaseEstimator):
    """Transformer: the ``m`` largest signed coefficients of each of the J+1 scales, descending."""

    def __init__(self, h=None, J: int = 4, mode: str = "zero", m: int = 6):
        self.h = h
        self.J = J
        self.mode = mode
        self.m = m

    def _check(self, X) -> np.ndarray:
        if self.h is None:
            raise ValueError("MaxCoefficients: the low-pass filter h is not set")
        if self.J < 1 or self.m < 1:
            raise ValueError(f"MaxCoefficients: J={self.J} and m={self.m} must be >= 1")
        if self.mode not in pywt.Modes.modes:
            raise ValueError(f"MaxCoefficients: unknown mode '{self.mode}'; pywt modes: {pywt.Modes.modes}")
        X = np.asarray(X, dtype=np.float64)
        if X.ndim != 2:
            raise ValueError(f"MaxCoefficients: expected (n, L) traces, got shape {X.shape}")
        return X

    def fit(self, X, y=None):
        X = self._check(X)
        self.n_features_in_ = X.shape[1]
        self.scale_lengths_ = [c.shape[1] for c in
                               wavelet_coefficients(np.zeros((1, X.shape[1])), self.h, self.J, self.mode)]
        return self

    def transform(self, X) -> np.ndarray:
        """(n, L) traces -> (n, m * (J + 1)) features."""
        return self.features_and_positions(X)[0]

    def features_and_positions(self, X) -> tuple[np.ndarray, np.ndarray]:
        """Features and, per feature, the position of its coefficient in its scale (-1 = padding)."""
        X = self._check(X)
        if hasattr(self, "n_features_in_") and X.shape[1] != self.n_features_in_:
            raise ValueError(f"MaxCoefficients: fitted on length {self.n_features_in_}, got {X.shape[1]}")
        feats, pos = [], []
        for c in wavelet_coefficients(X, self.h, self.J, self.mode):
            order = _top_m_order(c, self.m)
            vals = np.take_along_axis(c, order, axis=1)
            pad = self.m - vals.shape[1]
            feats.append(np.pad(vals, ((0, 0), (0, pad))))
            pos.append(np.pad(order, ((0, 0), (0, pad)), constant_values=-1))
        return np.hstack(feats), np.hstack(pos)

    def scale_names(self) -> list[str]:
        """Names of the J+1 scales in feature order: a<J>, d<J>, ..., d1."""
        return [f"a{self.J}"] + [f"d{j}" for j in range(self.J, 0, -1)]

    def get_feature_names_out(self, input_features=None) -> np.ndarray:
        return np.asarray([f"{s}_top{k + 1}" for s in self.scale_names() for k in range(self.m)], dtype=object)


def make_head(h: np.ndarray, J: int = 4, mode: str = "zero", m: int = 6) -> Pipeline:
    """The CME head: ``MaxCoefficients`` -> OLS with intercept."""
    return Pipeline([("features", MaxCoefficients(h=np.asarray(h, dtype=np.float64), J=J, mode=mode, m=m)),
                     ("ols", LinearRegression())])


def cv_r2(h: np.ndarray, X: np.ndarray, y: np.ndarray, *, J: int = 4, mode: str = "zero", m: int = 6,
          folds: int = 5) -> tuple[float, float]:
    """Mean and sd of the ``folds``-fold (unshuffled KFold) cross-validated R^2 of the head."""
    scores = cross_val_score(make_head(h, J, mode, m), np.asarray(X, np.float64), np.asarray(y, np.float64),
                             cv=KFold(n_splits=folds, shuffle=False), scoring="r2")
    return float(np.mean(scores)), float(np.std(scores))


@dataclass
class HeadResult:
    """A head refitted on all training traces and evaluated on the test traces."""

    pipeline: Pipeline
    pred: np.ndarray
    r2: float
    r2_se: float


def fit_and_score(h: np.ndarray, X_train: np.ndarray, y_train: np.ndarray, X_test: np.ndarray,
                  y_test: np.ndarray, *, J: int = 4, mode: str = "zero", m: int = 6, n_boot: int = 1000,
                  seed: int = 0) -> HeadResult:
    """Refit the head on all training traces; test R^2 with its bootstrap standard error."""
    pipe = make_head(h, J, mode, m).fit(np.asarray(X_train, np.float64), np.asarray(y_train, np.float64))
    pred = pipe.predict(np.asarray(X_test, np.float64))
    return HeadResult(pipe, pred, *score_predictions(y_test, pred, n_boot=n_boot, seed=seed))


def score_predictions(y_true: np.ndarray, y_pred: np.ndarray, *, n_boot: int = 1000,
                      seed: int = 0) -> tuple[float, float]:
    """Test R^2 and its bootstrap standard error (rows resampled with replacement)."""
    y_true, y_pred = np.asarray(y_true, np.float64), np.asarray(y_pred, np.float64)
    return r2(y_true, y_pred), bootstrap_se(r2, y_true, y_pred, n_boot, seed)


def select_best(cv_scores: np.ndarray) -> int:
    """Index of the highest CV R^2 (the first one on ties); NaN scores never win."""
    scores = np.asarray(cv_scores, dtype=np.float64)
    if scores.size == 0 or not np.any(np.isfinite(scores)):
        raise ValueError("select_best: no finite cross-validation score to select from")
    return int(np.nanargmax(scores))


def single_coefficient_reconstructions(x: np.ndarray, head: Pipeline, n_top: int = 3) -> list[dict]:
    """Reconstructions of one trace from its most important single coefficients.

    Importance is the linear-model contribution ``|beta_j * feature_j|`` of each head feature;
    each returned record holds the feature name, its contribution and the inverse DWT of a
    coefficient vector that is zero except for that one coefficient (length of ``x``).
    """
    tf: MaxCoefficients = head.named_steps["features"]
    beta = head.named_steps["ols"].coef_.ravel()
    x = np.asarray(x, np.float64)[None, :]
    feats, pos = tf.features_and_positions(x)
    contrib = beta * feats[0]
    names = tf.get_feature_names_out()
    coeffs = wavelet_coefficients(x, tf.h, tf.J, tf.mode)
    wavelet = pywt_wavelet(np.asarray(tf.h, np.float64))
    out = []
    for j in np.argsort(-np.abs(contrib), kind="stable")[:n_top]:
        if pos[0, j] < 0:
            continue
        scale = j // tf.m
        single = [np.zeros_like(c[0]) for c in coeffs]
        single[scale][pos[0, j]] = coeffs[scale][0, pos[0, j]]
        rec = pywt.waverec(single, wavelet, mode=tf.mode)[: x.shape[1]]
        out.append({"feature": str(names[j]), "scale": tf.scale_names()[scale], "position": int(pos[0, j]),
                    "coefficient": float(feats[0, j]), "contribution": float(contrib[j]), "reconstruction": rec})
    return out


# ----------------------------------------------------------------------------- the heads stage

#: side files of :func:`evaluate_heads`, relative to its ``out_dir``.
HEADS_DIR = "heads"


_MISSING = object()


def _record(rec: Any, key: str, default: Any = _MISSING) -> Any:
    """A field of a grid record (an ``awd.distill.DistillResult`` or a plain dict)."""
    if default is not _MISSING:
        return rec.get(key, default) if isinstance(rec, dict) else getattr(rec, key, default)
    return rec[key] if isinstance(rec, dict) else getattr(rec, key)


def _head_json(pipe: Pipeline) -> dict:
    tf = pipe.named_steps["features"]
    ols = pipe.named_steps["ols"]
    return {"h": [float(v) for v in np.ravel(tf.h)], "J": int(tf.J), "mode": tf.mode, "m": int(tf.m),
            "features": [str(n) for n in tf.get_feature_names_out()],
            "coef": [float(v) for v in np.ravel(ols.coef_)], "intercept": float(np.ravel(ols.intercept_)[0])}


def head_from_json(d: dict) -> Pipeline:
    """The fitted head stored by :func:`evaluate_heads` (``heads/heads.json``), without refitting."""
    pipe = make_head(np.asarray(d["h"], np.float64), int(d["J"]), str(d["mode"]), int(d["m"]))
    tf, ols = pipe.named_steps["features"], pipe.named_steps["ols"]
    coef = np.asarray(d["coef"], np.float64)
    if coef.size != tf.m * (tf.J + 1):
        raise ValueError(f"head: {coef.size} coefficients for {tf.m * (tf.J + 1)} features")
    ols.coef_, ols.intercept_, ols.n_features_in_ = coef, float(d["intercept"]), coef.size
    return pipe


def evaluate_heads(cfg: dict, dataset, grid: list, teacher, out_dir: Path, target: str) -> dict:
    """The CME heads stage: fit, select, score, write.

    Candidates are DB5 and every grid wavelet. Each is scored by 5-fold (``heads.cv_folds``)
    unshuffled-KFold CV R^2 on the training-cell traces (splits train + val, dataset order),
    then refitted on all of them and scored on the test cells. AWD = the best CV score over
    the whole grid; "AWD without interpretation loss" = the best over the gamma = 0 points; the
    LSTM row scores the teacher's own predictions. With several distillation seeds (the
    records' ``seed``) the selection is made per seed; the table's rows are the first seed's and
    gain ``r2_seed_mean``, ``r2_seed_sd`` (sample sd) and ``n_seeds`` over all seeds. Writes
    ``table.csv``, ``wavelet.json`` (selected AWD wavelet, first seed) and
    ``heads/{selection.csv, predictions.csv, heads.json, seeds.csv, seed_wavelets.json}``.
    """
    from awd.io import write_csv, write_json
    from awd.teacher import predict
    from awd.wavelet import save_wavelet

    hc, dc, bc = cfg["heads"], cfg["distill"], cfg["bootstrap"]
    if not grid:
        raise ValueError("heads: the distillation grid is empty")
    fit_rows = np.isin(dataset.split, ("train", "val"))
    test_rows = dataset.split == "test"
    y = dataset.target(target).astype(np.float64)
    X = dataset.X.astype(np.float64)
    X_fit, y_fit, X_test, y_test = X[fit_rows], y[fit_rows], X[test_rows], y[test_rows]
    m, folds = int(hc["m"]), int(hc["cv_folds"])
    if len(X_fit) < folds or len(X_test) < 2:
        raise ValueError(f"heads: {len(X_fit)} training and {len(X_test)} test traces are too few for "
                         f"{folds}-fold CV and a test score")

    cands = [{"name": "db5", "grid_index": -1, "h": np.asarray(pywt.Wavelet("db5").rec_lo, np.float64),
              "lam": np.nan, "gamma": np.nan, "J": int(dc["J"]), "mode": str(dc["mode"])}]
    cands += [{"name": "awd", "grid_index": i, "h": np.asarray(_record(r, "h"), np.float64),
               "lam": float(_record(r, "lam")), "gamma": float(_record(r, "gamma")),
               "J": int(_record(r, "J")), "mode": str(_record(r, "mode")), "seed": int(_record(r, "seed", 0))}
              for i, r in enumerate(grid)]
    heads = []
    for c in cands:
        c["cv_r2"], c["cv_r2_sd"] = cv_r2(c["h"], X_fit, y_fit, J=c["J"], mode=c["mode"], m=m, folds=folds)
        pipe = make_head(c["h"], c["J"], c["mode"], m).fit(X_fit, y_fit)
        c["pred"] = pipe.predict(X_test)
        c["test_r2"] = r2(y_test, c["pred"])
        heads.append(pipe)
    seeds = list(dict.fromkeys(c["seed"] for c in cands[1:]))
    chosen = {s: _select(cands, s) for s in seeds}  # per distillation seed, as the reference
    best, best_plain = chosen[seeds[0]]
    if best_plain is None:
        log.warning("heads: no gamma = 0 wavelet in the grid; the 'AWD without interpretation loss' row is NaN")

    col = dataset.target_names.index(target)
    lstm_pred = predict(teacher, dataset.X[test_rows], int(cfg["teacher"]["batch_size"]))[:, col]
    n_boot, seed = int(bc["n"]), int(bc["seed"])
    rows = []
    for method, c in zip(METHODS, (best, cands[0], best_plain, None)):
        pred = lstm_pred if method == "LSTM" else (None if c is None else c["pred"])
        score, se = score_predictions(y_test, pred, n_boot=n_boot, seed=seed) if pred is not None else (np.nan,) * 2
        rows.append({"method": method, "r2": score, "r2_se": se,
                     "cv_r2": np.nan if c is None else c["cv_r2"], "cv_r2_sd": np.nan if c is None else c["cv_r2_sd"],
                     "lam": np.nan if c is None else c["lam"], "gamma": np.nan if c is None else c["gamma"],
                     "n_train": int(fit_rows.sum()), "n_test": int(test_rows.sum())})
    table = pd.DataFrame(rows)
    heads_dir = Path(out_dir) / HEADS_DIR
    per_seed = _seed_rows(chosen, cands[0], lstm_pred, y_test, n_boot, seed)
    if len(seeds) > 1:  # one seed: the table is the single run's, unchanged
        stats = per_seed.groupby("method", sort=False)["r2"].agg(["mean", "std", "count"])
        table["r2_seed_mean"] = table["method"].map(stats["mean"])
        table["r2_seed_sd"] = table["method"].map(stats["std"])
        table["n_seeds"] = table["method"].map(stats["count"]).astype(int)
    write_csv(Path(out_dir) / "table.csv", table, float_format="%.10g")
    write_csv(heads_dir / "seeds.csv", per_seed, float_format="%.10g")
    write_json(heads_dir / "seed_wavelets.json",
               {str(s): {"h": b["h"].tolist(), "lam": b["lam"], "gamma": b["gamma"], "cv_r2": _finite(b["cv_r2"])}
                for s, (b, _) in chosen.items()})
    selection = pd.DataFrame([{k: c[k] for k in ("name", "grid_index", "lam", "gamma", "J", "mode", "cv_r2",
                                                 "cv_r2_sd", "test_r2")} for c in cands])
    if len(seeds) > 1:
        selection.insert(2, "seed", [np.nan] + [c["seed"] for c in cands[1:]])
    selection["selected"] = selection["grid_index"] == best["grid_index"]
    selection["selected_gamma0"] = selection["grid_index"] == (-2 if best_plain is None else best_plain["grid_index"])
    write_csv(heads_dir / "selection.csv", selection, float_format="%.10g")
    test_info = {"cell_id": dataset.group[test_rows]}
    if "track_id" in dataset.extra:
        test_info["track_id"] = dataset.extra["track_id"][test_rows]
    preds = pd.DataFrame({**test_info, "y_true": y_test, "pred_awd": best["pred"], "pred_db5": cands[0]["pred"],
                          "pred_awd_gamma0": np.nan if best_plain is None else best_plain["pred"],
                          "pred_lstm": lstm_pred})
    write_csv(heads_dir / "predictions.csv", preds, float_format="%.10g")
    stored = {"awd": _head_json(heads[cands.index(best)]), "db5": _head_json(heads[0])}
    if best_plain is not None:
        stored["awd_gamma0"] = _head_json(heads[cands.index(best_plain)])
    write_json(heads_dir / "heads.json", stored)
    save_wavelet(Path(out_dir) / "wavelet.json", best["h"], J=best["J"], mode=best["mode"], ndim=1,
                 meta={"lam": best["lam"], "gamma": best["gamma"], "cv_r2": _finite(best["cv_r2"]),
                       "test_r2": _finite(best["test_r2"]), "grid_index": best["grid_index"],
                       "selection": f"{folds}-fold unshuffled KFold CV R^2 of the top-{m} coefficient OLS head "
                                    f"on the training-cell traces"})
    summary = {r["method"]: {"r2": float(r["r2"]), "r2_se": float(r["r2_se"])} for r in rows}
    summary["selected"] = {"lam": best["lam"], "gamma": best["gamma"], "cv_r2": best["cv_r2"]}
    log.info("cme heads: %s", summary)
    return summary


def _select(cands: list[dict], seed: int) -> tuple[dict, dict | None]:
    """The best-CV wavelet of one distillation seed over its whole grid, and over its gamma = 0
    points (None when it has none)."""
    awd = [c for c in cands if c["grid_index"] >= 0 and c["seed"] == seed]
    best = awd[select_best([c["cv_r2"] for c in awd])]
    plain = [c for c in awd if c["gamma"] == 0]
    return best, plain[select_best([c["cv_r2"] for c in plain])] if plain else None


def _seed_rows(chosen: dict, db5: dict, lstm_pred: np.ndarray, y_test: np.ndarray, n_boot: int,
               boot_seed: int) -> pd.DataFrame:
    """Test R^2 (bootstrap SE) of every method per distillation seed (DB5 and the LSTM do not
    depend on it: one teacher, one value)."""
    fixed = {"DB5": score_predictions(y_test, db5["pred"], n_boot=n_boot, seed=boot_seed),
             "LSTM": score_predictions(y_test, lstm_pred, n_boot=n_boot, seed=boot_seed)}
    rows = []
    for s, (best, best_plain) in chosen.items():
        for method, c in zip(METHODS, (best, db5, best_plain, None)):
            if method in fixed:
                score, se = fixed[method]
            elif c is None:
                score, se = np.nan, np.nan
            else:
                score, se = score_predictions(y_test, c["pred"], n_boot=n_boot, seed=boot_seed)
            rows.append({"seed": s, "method": method, "r2": score, "r2_se": se,
                         "cv_r2": np.nan if c is None else c["cv_r2"],
                         "lam": np.nan if c is None else c["lam"], "gamma": np.nan if c is None else c["gamma"]})
    return pd.DataFrame(rows)


def _finite(value: float) -> float | None:
    """JSON-portable number: None for NaN/inf."""
    return float(value) if np.isfinite(value) else None


