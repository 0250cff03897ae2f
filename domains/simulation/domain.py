"""The simulation study as a domain: does AWD recover a known wavelet?

The response depends on three coefficients of a ground-truth wavelet (db5 by default, see
:mod:`awd.simulation`). AWD starts from another wavelet; the table reports the distance of the
learned wavelet to the truth (min over circular shifts and sign flips; time reversal is not
allowed, since a reversed wavelet does not reproduce the response) at the
start, without the interpretation loss (gamma = 0) and with it.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pywt

from awd.domain import Dataset, Domain, register
from awd.io import InputError, atomic_path, write_json
from awd.losses import FILTER_TERMS
from awd.simulation import SimulationSpec, mlp_teacher, perturbed_filter, simulate


def _spec(cfg: dict) -> SimulationSpec:
    t = cfg["truth"]
    return SimulationSpec(wave=t["wave"], J=t["J"], mode=cfg["distill"]["mode"], level=t["level"],
                          positions=tuple(t["positions"]), beta=t["beta"], noise=t["noise"])


@register
class SimulationDomain(Domain):
    name = "simulation"
    signal_ndim = 1
    target = "y"
    metric = "distance"
    paper_source = "the paper reports this study as figures (distance against gamma), not as a table"
    # what each stage reads and runs (awd.stages); figures read the whole section
    stage_config = {
        "simulate": ("data", "truth", "distill.mode"),
        "ingest": ("data",),
        "teacher": ("teacher", "model"),
        "distill": ("distill", "init", "model", "teacher.seed", "teacher.loss"),
        "heads": ("truth", "selection", "init", "model", "teacher.seed", "teacher.loss"),
    }
    stage_code = {"simulate": (), "ingest": (), "teacher": (), "distill": (), "heads": (), "figures": ("figures.py",)}
    extra_outputs = {"heads": ["grid.csv", "selection.json"]}

    def simulate(self, cfg: dict, raw_dir: Path, threads: int = 1) -> None:
        X, y = simulate(sum(cfg["data"]["split"]), cfg["truth"]["seed"], _spec(cfg))
        with atomic_path(raw_dir / "simulation.npz") as tmp:
            with open(tmp, "wb") as fh:
                np.savez(fh, X=X, y=y)

    def ingest(self, cfg: dict, raw_dir: Path, out_dir: Path, threads: int = 1) -> Dataset:
        path = raw_dir / "simulation.npz"
        if not path.is_file():
            raise InputError(path, "missing: the simulation domain reads simulation.npz with arrays X and y")
        try:
            with np.load(path, allow_pickle=False) as z:
                X, y = z["X"], z["y"]
        except (OSError, ValueError, KeyError) as err:
            raise InputError(path, f"not a simulation.npz with arrays X and y ({err})") from None
        n_train, n_val, n_test = cfg["data"]["split"]
        if X.ndim != 2 or len(y) != len(X) or len(X) < n_train + n_val + n_test:
            raise InputError(path, f"X {X.shape} / y {y.shape}: need 2D X with at least "
                                   f"{n_train + n_val + n_test} rows and one y per row")
        n = n_train + n_val + n_test
        split = np.array(["train"] * n_train + ["val"] * n_val + ["test"] * n_test)
        return Dataset(X[:n], y[:n], ["y"], split, np.zeros(n, dtype=np.int64), meta={"file": str(path)})

    def build_teacher(self, cfg: dict, dataset: Dataset):
        return mlp_teacher(dataset.X.shape[1], cfg["model"]["hidden"], cfg["teacher"]["seed"])

    def distill_init(self, cfg: dict) -> np.ndarray:
        init = cfg["init"]
        return perturbed_filter(init["wave"], init["noise"], init["seed"])

    def fit_heads(self, cfg: dict, dataset: Dataset, grid: list, teacher, out_dir: Path,
                  threads: int = 1) -> dict:
        """Distances to the truth for every grid point; the table's three rows: the start,
        the best gamma = 0 wavelet and AWD (largest gamma that is still a valid wavelet)."""
        from awd.wavelet import save_wavelet, wavelet_distance

        truth = np.asarray(pywt.Wavelet(cfg["truth"]["wave"]).rec_lo)
        rows = []
        for r in grid:
            wavelet_loss = sum(r.losses.get(k, 0.0) for k in FILTER_TERMS)
            rows.append({"lam": r.lam, "gamma": r.gamma, "distance": wavelet_distance(r.h, truth, reverse=False),
                         "wavelet_loss": wavelet_loss, "reconstruction": r.losses.get("reconstruction"),
                         "interpretation": r.losses.get("interpretation")})
        points = pd.DataFrame(rows).sort_values(["lam", "gamma"], kind="stable")
        with atomic_path(out_dir / "grid.csv") as tmp:
            points.to_csv(tmp, index=False, float_format="%.6g")
        valid = points[points["wavelet_loss"] <= cfg["selection"]["max_wavelet_loss"]]
        no_interp = valid[valid["gamma"] == 0]
        awd = valid[valid["gamma"] > 0]
        if no_interp.empty or awd.empty:
            raise ValueError("simulation: no valid wavelet with gamma = 0 and with gamma > 0 "
                             f"(wavelet loss <= {cfg['selection']['max_wavelet_loss']}); see grid.csv")
        # gamma = 0: the lambda giving the lowest validation reconstruction error
        base = no_interp.loc[no_interp["reconstruction"].idxmin()]
        best = awd.sort_values(["gamma", "lam"], kind="stable").iloc[-1]
        start = wavelet_distance(grid[0].init_h, truth, reverse=False)
        table = pd.DataFrame({
            "method": ["initial wavelet", "AWD without interpretation loss", "AWD"],
            "distance": [start, base["distance"], best["distance"]],
            "distance_se": [np.nan, np.nan, np.nan],
            "lam": [np.nan, base["lam"], best["lam"]],
            "gamma": [np.nan, 0.0, best["gamma"]],
        })
        with atomic_path(out_dir / "table.csv") as tmp:
            table.to_csv(tmp, index=False, float_format="%.6g")
        chosen = next(r for r in grid if r.lam == best["lam"] and r.gamma == best["gamma"])
        save_wavelet(out_dir / "wavelet.json", chosen.h, J=chosen.J, mode=chosen.mode, ndim=1,
                     meta={"domain": self.name, "lam": chosen.lam, "gamma": chosen.gamma, "init": cfg["init"],
                           "distance_to_truth": float(best["distance"])})
        summary = {"initial": start, "gamma0": float(base["distance"]), "awd": float(best["distance"])}
        write_json(out_dir / "selection.json", summary)
        return summary

    def figures(self, cfg: dict, results_dir: Path, raw_dir: Path, fig_dir: Path) -> list[Path]:
        from domains.simulation.figures import draw_all

        return draw_all(cfg, Path(results_dir), Path(fig_dir))
