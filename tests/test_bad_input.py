"""The bad-input battery: the real ingest stage of every domain (``awd.pipeline.run_ingest``,
as the workflow's ingest rule calls it, and a handful through ``python -m snakemake``) run on
corrupted and wrong inputs. Each case must raise ``InputError`` naming the file and the
problem, exit non-zero under snakemake, leave no partial output and leave the raw files
untouched. Wrong config values are rejected naming the key. Degenerate but valid data (a cell
without auxilin-positive tracks, one realisation per cosmology in a split, maps without peaks
in most bins, a map without any peak) gives results.

Case ids are numbered: 01-13 cosmology, 14-28 CME, 29-33 simulation, 34-42 config values,
43-47 through the snakemake command line."""
from __future__ import annotations

import hashlib
import re
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import numpy as np
import pandas as pd
import pytest
import pywt
import tifffile
import yaml
from astropy.io import fits

from awd.config import ConfigError, validate
from awd.distill import DistillConfig, DistillResult
from awd.domain import get_domain
from awd.io import InputError
from awd.pipeline import run_ingest
from awd.teacher import StandardizedTeacher

REPO = Path(__file__).resolve().parents[1]
TINY = yaml.safe_load((REPO / "workflow/config/tiny.yaml").read_text())

FOLDER_A = "convergence_gal_mnv0.10000_om0.30000_As2.1000"
FOLDER_B = "convergence_gal_mnv0.00000_om0.25000_As1.9000"
FRAMES, SIDE = 20, 24


def domain_config(domain: str, root: Path | None, **sections) -> dict:
    """The tiny config of ``domain`` reading files from ``root``, ``sections`` merged in."""
    cfg = yaml.safe_load(yaml.safe_dump(TINY[domain]))
    for key, values in {"data": {}, **sections}.items():
        cfg[key] = {**cfg.get(key, {}), **values}
    cfg["data"].setdefault("source", "files")
    cfg["data"]["root"] = None if root is None else str(root)
    return validate(cfg, get_domain(domain).schema_path, domain)


def snapshot(root: Path) -> dict[str, tuple]:
    """Every path under ``root`` with its modification time and content hash."""
    return {str(p.relative_to(root)): (p.stat().st_mtime_ns,
                                       hashlib.sha256(p.read_bytes()).hexdigest() if p.is_file() else None)
            for p in sorted(root.rglob("*"))}


# ----------------------------------------------------------------------------- cosmology trees


def write_map(path: Path, data: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fits.PrimaryHDU(data=data).writeto(path, overwrite=True)
    return path


def kappa(seed: int, n: int = 32, scale: float = 0.02) -> np.ndarray:
    return (scale * np.random.default_rng(seed).standard_normal((n, n))).astype(np.float32)


def map_path(root: Path, folder: str, realisation: int, maps: str = "Maps10") -> Path:
    return root / folder / maps / f"WLconv_z1.00_{realisation:04d}r.fits"


def cosmology_tree(root: Path, folders=(FOLDER_A, FOLDER_B), realisations=(1, 2, 3, 4, 5)) -> None:
    for i, folder in enumerate(folders):
        for r in realisations:
            write_map(map_path(root, folder, r), kappa(100 * i + r))


def truncated_fits(root):
    path = write_map(map_path(root, FOLDER_A, 3), kappa(7, 64))
    path.write_bytes(path.read_bytes()[:2880 + 1000])
    return path.name, "not a readable FITS file, or truncated"


def not_fits(root):
    map_path(root, FOLDER_A, 3).write_text("SIMPLE? no: a spreadsheet exported by mistake\n" * 100)
    return map_path(root, FOLDER_A, 3).name, "not a readable FITS file"


def one_d(root):
    return write_map(map_path(root, FOLDER_B, 2), kappa(1).ravel()).name, r"1 dimension\(s\).*expected a 2-D map"


def three_d(root):
    return write_map(map_path(root, FOLDER_B, 2), np.stack([kappa(1), kappa(2)])).name, "3 dimension"


def all_nan(root):
    return write_map(map_path(root, FOLDER_A, 4), np.full((32, 32), np.nan, np.float32)).name, \
        "every pixel is NaN or inf"


def constant(root):
    return write_map(map_path(root, FOLDER_A, 4), np.full((32, 32), 0.01, np.float32)).name, "constant map"


def mixed_sizes(root):
    return write_map(map_path(root, FOLDER_B, 5), kappa(9, 64)).name, "the map size is 64 but most maps .* 32"


def unparseable_dir(root):
    folder = "convergence_gal_mnvX_om0.30000_As2.1000"
    for r in (1, 2, 3, 4, 5):
        write_map(map_path(root, folder, r), kappa(r))
    return folder, "unknown or unparseable parameter 'mnvX'"


def duplicate_realisation(root):
    return write_map(root / FOLDER_A / "Maps10" / "WLconv_z1.00_3r.fits", kappa(3)).name, "realisation 3 appears twice"


def nan_pixels(root):
    data = kappa(11)
    data[5, 7] = np.nan
    return write_map(map_path(root, FOLDER_B, 1), data).name, r"1 NaN/inf pixels \(nan_policy='error'"


def too_few_realisations(root):
    for folder in (FOLDER_A, FOLDER_B):
        for r in (3, 4, 5):
            map_path(root, folder, r).unlink()
    return root.name, "the 'test' split is empty"


@dataclass
class Case:
    """One bad input: how to break a valid tree, and the config changes it needs."""

    domain: str
    build: Callable[[Path], tuple[str, str]]   # breaks the tree; returns (name in message, problem regex)
    base: Callable[[Path], None] | None = None  # the valid tree it starts from
    config: dict = field(default_factory=dict)
    root: str = "raw"                           # the data root, relative to the test folder


COSMOLOGY = {
    "01-cosmology-truncated_fits": Case("cosmology", truncated_fits, cosmology_tree),
    "02-cosmology-not_fits": Case("cosmology", not_fits, cosmology_tree),
    "03-cosmology-fits_with_1d_data": Case("cosmology", one_d, cosmology_tree),
    "04-cosmology-fits_with_3d_data": Case("cosmology", three_d, cosmology_tree),
    "05-cosmology-all_nan_map": Case("cosmology", all_nan, cosmology_tree),
    "06-cosmology-constant_map": Case("cosmology", constant, cosmology_tree),
    "07-cosmology-maps_of_mixed_sizes": Case("cosmology", mixed_sizes, cosmology_tree),
    "08-cosmology-unparseable_massivenus_folder": Case("cosmology", unparseable_dir, cosmology_tree),
    "09-cosmology-duplicate_realisation": Case("cosmology", duplicate_realisation, cosmology_tree),
    "10-cosmology-nan_pixels_under_nan_policy_error": Case("cosmology", nan_pixels, cosmology_tree),
    "11-cosmology-no_maps_folder_for_the_redshift": Case(
        "cosmology", lambda root: (FOLDER_B, "has no Maps15 folder for source redshift 1.5"), cosmology_tree,
        {"data": {"redshift": 1.5}}),
    "12-cosmology-too_few_realisations_for_the_split": Case("cosmology", too_few_realisations, cosmology_tree),
    "13-cosmology-data_root_missing": Case(
        "cosmology", lambda root: ("missing_tree", "does not exist"), None, {}, "missing_tree"),
}


# ----------------------------------------------------------------------------- CME trees


def write_tiff(path: Path, data: np.ndarray) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, data, photometric="minisblack")
    return path


def frames(n: int = FRAMES, shape=(SIDE, SIDE), seed: int = 0) -> np.ndarray:
    """Camera counts without spots: offset plus Poisson noise."""
    return np.random.default_rng(seed).poisson(1000, (n, *shape)).astype(np.uint16)


def cell_dir(root: Path, k: int, suffix: str = "_1s") -> Path:
    return root / "cond" / f"Cell{k}{suffix}"


def cme_tree(root: Path, cells=(1, 2, 3), suffix: str = "_1s") -> None:
    for k in cells:
        write_tiff(cell_dir(root, k, suffix) / "TagRFP" / "clathrin.tif", frames(seed=2 * k))
        write_tiff(cell_dir(root, k, suffix) / "EGFP" / "auxilin.tif", frames(seed=2 * k + 1))


def cme_replace(channel: str, data_or_bytes, name: str | None = None):
    """A builder replacing Cell1's file of ``channel`` by an array or raw bytes."""
    def build(root):
        path = cell_dir(root, 1) / channel / (name or ("clathrin.tif" if channel == "TagRFP" else "auxilin.tif"))
        if isinstance(data_or_bytes, bytes):
            path.write_bytes(data_or_bytes)
        else:
            write_tiff(path, data_or_bytes)
        return path
    return build


def truncated_tiff(root):
    path = cell_dir(root, 1) / "EGFP" / "auxilin.tif"
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2])
    return path.name, "damaged or truncated TIFF|truncated TIFF|unreadable TIFF"


def one_channel_files(root):
    for k in (1, 2, 3):
        write_tiff(root / "cond" / f"Cell{k}_1s.tif", frames(seed=k))
    return "Cell1_1s.tif", "no channel axis .* needs 2 channels"


def different_shapes(root):
    cme_replace("EGFP", frames(shape=(SIDE, SIDE - 4)))(root)
    return "Cell1_1s", r"frame shapes differ between channels: \(24, 24\) .* \(24, 20\)"


def different_frame_counts(root):
    cme_replace("EGFP", frames(n=FRAMES + 5))(root)
    return "Cell1_1s", "frame counts differ between channels: 20 .* 25"


def zero_frames(root):
    return cme_replace("TagRFP", np.zeros((0, SIDE, SIDE), np.uint16))(root).name, "zero frames"


def float_data(root):
    return cme_replace("TagRFP", frames().astype(np.float32) + 0.25)(root).name, "not integral"


def no_spots(root):
    for k in (1, 2, 3):
        for channel, name in (("TagRFP", "clathrin.tif"), ("EGFP", "auxilin.tif")):
            write_tiff(cell_dir(root, k) / channel / name, np.full((FRAMES, SIDE, SIDE), 1000, np.uint16))
    return root.name, "no tracks found in any cell"


def missing_slave_channel(root):
    (cell_dir(root, 1) / "EGFP" / "auxilin.tif").unlink()
    (cell_dir(root, 1) / "EGFP").rmdir()
    return "Cell1_1s", "lacks the channel folder 'EGFP'"


def other_channel_names(root):
    for old, new in (("TagRFP", "RFP"), ("EGFP", "GFP")):
        (cell_dir(root, 1) / old).rename(cell_dir(root, 1) / new)
    return "Cell1_1s", "has neither channel folder 'TagRFP' nor 'EGFP'"


def not_a_tiff(root):
    return cme_replace("TagRFP", b"%PDF-1.4 not an image at all\n" * 50)(root).name, "unreadable TIFF"


def junk_mat(root):
    path = cell_dir(root, 1) / "TagRFP" / "Tracking" / "ProcessedTracks.mat"
    path.parent.mkdir()
    path.write_bytes(b"MATLAB 5.0 MAT-file, but then nothing useful" + bytes(range(256)))
    return path.name, "unreadable MAT file"


CME_FILES = {"data": {"pixel_size_um": 0.08}}
CME = {
    "14-cme-truncated_tiff": Case("cme", truncated_tiff, cme_tree, CME_FILES),
    "15-cme-single_channel_where_two_are_needed": Case("cme", one_channel_files, None, CME_FILES),
    "16-cme-channels_of_different_shapes": Case("cme", different_shapes, cme_tree, CME_FILES),
    "17-cme-channels_of_different_frame_counts": Case("cme", different_frame_counts, cme_tree, CME_FILES),
    "18-cme-zero_frames": Case("cme", zero_frames, cme_tree, CME_FILES),
    "19-cme-float_data": Case("cme", float_data, cme_tree, CME_FILES),
    "20-cme-movies_with_no_detectable_spots": Case("cme", no_spots, cme_tree, CME_FILES),
    "21-cme-cell_without_the_slave_channel_folder": Case("cme", missing_slave_channel, cme_tree, CME_FILES),
    "22-cme-folder_without_the_expected_channels": Case("cme", other_channel_names, cme_tree, CME_FILES),
    "23-cme-tif_that_is_not_a_tiff": Case("cme", not_a_tiff, cme_tree, CME_FILES),
    "24-cme-frame_interval_unknown": Case(
        "cme", lambda root: ("Cell1", "frame interval unknown: not in the file metadata or the folder name"),
        lambda root: cme_tree(root, suffix=""), CME_FILES),
    "25-cme-configured_test_cell_missing": Case(
        "cme", lambda root: (root.name, r"data.test_cells: cell 3 not found"),
        lambda root: cme_tree(root, cells=(1, 2)), CME_FILES),
    "26-cme-fewer_frames_than_min_frames": Case(
        "cme", lambda root: (cme_replace("TagRFP", frames(n=8))(root).name, "8 frames, fewer than the minimum 20"),
        cme_tree, CME_FILES),
    "27-cme-unreadable_cmeanalysis_output": Case("cme", junk_mat, cme_tree, {"data": {"source": "cmeanalysis"}}),
    "28-cme-empty_data_root": Case(
        "cme", lambda root: (root.name, "no cell folders found"), lambda root: root.mkdir(), CME_FILES),
}


# ----------------------------------------------------------------------------- simulation files


def simulation_npz(root: Path, n: int = 1000, **arrays) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(0)
    arrays = {"X": rng.standard_normal((n, 64)).astype(np.float32), "y": rng.standard_normal(n), **arrays}
    np.savez(root / "simulation.npz", **arrays)
    return root / "simulation.npz"


def junk_npz(root: Path):
    (root / "simulation.npz").write_bytes(b"\x00" * 99)
    return "simulation.npz", "not a simulation.npz with arrays X and y"


SIMULATION = {
    "29-simulation-npz_missing": Case(
        "simulation", lambda root: ("simulation.npz", "missing: the simulation domain reads simulation.npz"),
        lambda root: root.mkdir()),
    "30-simulation-npz_holding_pickled_objects": Case(
        "simulation", lambda root: (simulation_npz(root, X=np.array([{"rows": 1}], dtype=object)).name,
                                    "Object arrays cannot be loaded when allow_pickle=False")),
    "31-simulation-too_few_rows": Case(
        "simulation", lambda root: (simulation_npz(root, n=10).name, r"need 2D X with at least 1000 rows")),
    "32-simulation-junk_bytes": Case("simulation", junk_npz, lambda root: root.mkdir()),
    "33-simulation-data_root_is_a_file": Case(
        "simulation", lambda root: (root.name, "does not exist or is not a folder"),
        lambda root: root.write_bytes(b"simulation.npz was meant")),
}

STAGE_CASES = {**COSMOLOGY, **CME, **SIMULATION}


@pytest.mark.filterwarnings("ignore:File may have been truncated", "ignore:.*zero-size array")
@pytest.mark.parametrize("case_id", list(STAGE_CASES))
def test_ingest_stage_rejects_bad_input_cleanly(case_id, tmp_path):
    case = STAGE_CASES[case_id]
    raw = tmp_path / case.root if case.root else None
    if case.base is not None:
        case.base(raw)
    name, problem = case.build(raw if raw is not None else tmp_path)
    cfg = domain_config(case.domain, raw, **case.config)
    before = snapshot(raw) if raw is not None and raw.exists() else {}
    results = tmp_path / "results" / case.domain
    with pytest.raises(InputError) as err:
        run_ingest(case.domain, cfg, raw, results / "data", results / "data" / "dataset.npz")
    message = str(err.value)
    assert name in message and re.search(problem, message), message
    assert not (results / "data").exists()
    assert not results.exists() or list(results.iterdir()) == []  # no staging folder left behind
    if raw is not None and raw.exists():
        assert snapshot(raw) == before  # raw inputs never modified


# ----------------------------------------------------------------------------- config values


CONFIG_CASES = {
    "34-config-cosmology_target_size_of_wrong_type": ("cosmology", {"data": {"target_size": "big"}},
                                                      "cosmology.data.target_size"),
    "35-config-cme_val_fraction_out_of_range": ("cme", {"data": {"val_fraction": 1.5}}, "cme.data.val_fraction"),
    "36-config-simulation_split_with_two_sizes": ("simulation", {"data": {"split": [600, 200]}},
                                                  "simulation.data.split"),
    "37-config-cosmology_negative_gamma": ("cosmology", {"distill": {"gammas": [0.0, -0.1]}},
                                           "cosmology.distill.gammas.1"),
    "38-config-simulation_unknown_optimizer": ("simulation", {"teacher": {"optimizer": "rmsprop"}},
                                               "simulation.teacher.optimizer"),
    "39-config-cme_files_without_root": ("cme", {"data": {"source": "files"}}, "cme.data: 'root' is a required"),
    "40-config-cosmology_no_edge_candidates": ("cosmology", {"heads": {"edge_candidates": []}},
                                               "cosmology.heads.edge_candidates"),
    "48-config-cosmology_files_without_root": ("cosmology", {"data": {"source": "files"}},
                                               "cosmology.data: 'root' is a required"),
    "49-config-simulation_files_with_empty_root": ("simulation", {"data": {"source": "files", "root": ""}},
                                                   "simulation.data.root"),
}


@pytest.mark.parametrize("case_id", list(CONFIG_CASES))
def test_wrong_config_value_is_rejected_naming_the_key(case_id):
    domain, section, key = CONFIG_CASES[case_id]
    dom = get_domain(domain)
    with pytest.raises(ConfigError, match=re.escape(key)):
        validate(section, dom.schema_path, domain)


def test_41_config_distill_learning_rate_of_wrong_type_names_file_and_key(tmp_path):
    source = tmp_path / "distill.yaml"
    with pytest.raises(InputError, match=r"distill\.lr: expected a number, got 'fast'") as err:
        DistillConfig.from_dict({"lr": "fast"}, source=source)
    assert err.value.path == str(source)


def test_42_config_domain_name_that_is_a_path_is_rejected():
    schema = REPO / "workflow/schemas/config.schema.yaml"
    with pytest.raises(ConfigError, match=r"config\.domains\.0: '\.\./evil' does not match"):
        validate({"domains": ["../evil"]}, schema)


# ----------------------------------------------------------------------------- through snakemake


def snakemake(workdir: Path, overlay: dict, target: str | None = None) -> subprocess.CompletedProcess:
    """The workflow on tiny.yaml overlaid by ``overlay`` (a config file: ``--config`` would turn
    nested numbers into strings)."""
    workdir.mkdir(parents=True, exist_ok=True)
    config = workdir.parent / f"{workdir.name}-overlay.yaml"
    config.write_text(yaml.safe_dump(overlay))
    cmd = [sys.executable, "-m", "snakemake", *([target] if target else []), "--snakefile", str(REPO / "Snakefile"),
           "--directory", str(workdir), "--configfile", str(REPO / "workflow/config/tiny.yaml"), str(config),
           "--cores", "1"]
    return subprocess.run(cmd, cwd=REPO, capture_output=True, text=True, timeout=600)


CLI_CASES = {
    "43-cli-cosmology_truncated_fits": STAGE_CASES["01-cosmology-truncated_fits"],
    "44-cli-cme_folder_without_the_expected_channels": STAGE_CASES["22-cme-folder_without_the_expected_channels"],
    "45-cli-simulation_npz_holding_pickled_objects": STAGE_CASES["30-simulation-npz_holding_pickled_objects"],
    "46-cli-simulation_data_root_is_a_file": STAGE_CASES["33-simulation-data_root_is_a_file"],
}


@pytest.mark.filterwarnings("ignore:File may have been truncated")
@pytest.mark.parametrize("case_id", list(CLI_CASES))
def test_ingest_rule_fails_with_the_file_and_problem_named(case_id, tmp_path):
    case = CLI_CASES[case_id]
    raw = tmp_path / case.root if case.root else None
    if case.base is not None:
        case.base(raw)
    name, problem = case.build(raw if raw is not None else tmp_path)
    before = snapshot(raw) if raw is not None else {}
    data = {"source": "files", **({"root": str(raw)} if raw is not None else {}), **case.config.get("data", {})}
    work = tmp_path / "work"
    res = snakemake(work, {"domains": [case.domain], case.domain: {"data": data}},
                    target=f"results/{case.domain}/data/dataset.npz")
    output = res.stdout + res.stderr
    log = (work / f"logs/{case.domain}/ingest.log").read_text()
    assert res.returncode != 0
    for text in (output, log):
        assert "stage ingest failed: InputError" in text and name in text and re.search(problem, text), text[-3000:]
    assert "Error in rule ingest" in output
    assert not (work / f"results/{case.domain}/data").exists()
    if raw is not None:
        assert snapshot(raw) == before


def test_47_cli_config_values_of_wrong_type_or_range_stop_before_any_job(tmp_path):
    work = tmp_path / "work"
    res = snakemake(work, {"domains": ["simulation"], "simulation": {"teacher": {"lr": "fast", "epochs": 0}}})
    assert res.returncode != 0
    for problem in ("simulation.teacher.epochs: 0 is less than the minimum of 1",
                    "simulation.teacher.lr: 'fast' is not of type 'number'"):
        assert problem in res.stdout + res.stderr
    assert sorted(p.name for p in work.iterdir()) == [".snakemake"]  # no results, no logs


# ----------------------------------------------------------------------------- degenerate but valid


def test_cell_without_auxilin_positive_tracks_still_gives_a_dataset(tmp_path):
    dom = get_domain("cme")
    mock = validate(yaml.safe_load(yaml.safe_dump(TINY["cme"])), dom.schema_path, "cme")
    raw = tmp_path / "raw"
    dom.simulate(mock, raw)
    egfp = next(raw.glob("*/Cell2_*/EGFP/*.tif"))
    with tifffile.TiffFile(egfp) as tf:
        shape, metadata = tf.series[0].shape, tf.imagej_metadata
    background = np.random.default_rng(5).poisson(1300, shape).astype(np.uint16)  # auxilin never recruited
    tifffile.imwrite(egfp, background, imagej=True, resolution=(12.5, 12.5), photometric="minisblack",
                     metadata={"axes": "TYX", "unit": "um", "finterval": metadata["finterval"]})
    cfg = domain_config("cme", raw)
    out = tmp_path / "results/cme/data"
    ds = run_ingest("cme", cfg, raw, out, out / "dataset.npz")

    tracks = pd.read_parquet(out / "tracks.parquet")
    per_cell = tracks.groupby("cell")["aux_positive"].agg(lambda s: int(s.fillna(False).astype(bool).sum()))
    assert per_cell["Cell2_1s"] == 0 and per_cell.drop("Cell2_1s").gt(0).all()
    assert (tracks["cell"] == "Cell2_1s").sum() >= 10  # clathrin tracks are still found there
    cell2 = ds.group == 2
    assert cell2.any() and not ds.extra["aux_positive"][cell2].any()
    assert np.all(np.isfinite(ds.X)) and np.all(np.isfinite(ds.y))
    assert {"train", "test"} <= set(ds.split) and (out / "dataset.npz").is_file()


def test_one_realisation_per_split_and_maps_without_peaks_give_a_table(tmp_path):
    raw = tmp_path / "raw"
    folders = ["convergence_gal_mnv0.10000_om0.30000_As2.1000", "convergence_gal_mnv0.10000_om0.25000_As2.1000",
               "convergence_gal_mnv0.10000_om0.35000_As2.1000"]
    for i, folder in enumerate(folders):
        for r in range(1, 6):
            write_map(map_path(raw, folder, r), kappa(10 * i + r, scale=0.01 * (i + 1)))
    ramp = np.add.outer(np.arange(32), np.arange(32)).astype(np.float32) * 1e-3  # no pixel above its 8 neighbours
    write_map(map_path(raw, folders[0], 5), ramp)
    cfg = domain_config("cosmology", raw, data={"split": [3, 1, 1], "split_seed": None},
                        heads={"edge_candidates": [0.03, 5.0], "knn_neighbors": 3})
    out = tmp_path / "results/cosmology"
    ds = run_ingest("cosmology", cfg, raw, out / "data", out / "data/dataset.npz")
    for split, n in (("train", 3), ("val", 1), ("test", 1)):
        assert np.bincount(ds.group[ds.split == split]).tolist() == [n, n, n]

    from domains.cosmology import peaks as pk

    features = pk.PeakHistogram(method="wavelet", edges=pk.wavelet_edges(5.0),
                                kernels=pk.extract_patches(*_db5_filters())).fit(ds.X).transform(ds.X)
    (ramp_row,) = [i for i, x in enumerate(ds.X) if np.array_equal(x, ramp)]
    assert ds.split[ramp_row] == "test" and features[ramp_row].sum() == 0  # the ramp has no peak at all
    assert np.any(features.sum(axis=0) == 0)  # and every map misses some bins

    dom = get_domain("cosmology")
    teacher = StandardizedTeacher(dom.build_teacher(cfg, ds), 3)
    teacher.set_standardization(ds.X, ds.y)
    teacher.eval()
    grid = [DistillResult.from_dict({"h": list(pywt.Wavelet(w).rec_lo), "lam": 0.005, "gamma": g, "J": 1,
                                     "mode": "zero", "ndim": 2}) for w, g in (("db5", 0.0), ("sym5", 0.01))]
    dom.fit_heads(cfg, ds, grid, teacher, out)
    table = pd.read_csv(out / "table.csv").set_index("method")
    # the reference's seven rows and the two improved-head rows
    assert len(table) == 9 and "DB5, signed bins + pooled covariance" in table.index
    assert np.all(np.isfinite(table["rmse"]))
    assert np.all(table["rmse"] >= 0)
    assert (out / "wavelet.json").is_file()


def _db5_filters() -> tuple[np.ndarray, np.ndarray]:
    h = np.asarray(pywt.Wavelet("db5").rec_lo)
    return h, h[::-1] * np.where(np.arange(h.size) % 2, -1.0, 1.0)
