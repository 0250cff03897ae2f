"""Config merging and checks, domain discovery, per-stage config slices and code, data manifests,
provenance, the summary's labels, classification teachers and the distillation target."""
import logging
import os
import subprocess
import warnings

import numpy as np
import pytest
import torch
import yaml

from awd.config import ConfigError, coerce_config_overrides, validate, validate_domain_section
from awd.domain import Dataset, Domain, get_domain, register
from awd.io import InputError
from awd.stages import STAGES, config_slice, stage_code_files, stage_config

SHIPPED = ("cosmology", "cme", "simulation")

# a schema with whole-object section defaults and no per-key properties, as a new domain may write
LOOSE_SCHEMA = {
    "type": "object",
    "properties": {
        "data": {"type": "object", "default": {"source": "mock", "root": None, "noise": {"sigma": 0.1, "seed": 0}}},
        "teacher": {"type": "object", "default": {"epochs": 150, "lr": 0.003}},
        "distill": {"type": "object", "default": {"J": 3, "lambdas": [0.001], "gammas": [0.0, 0.01]}},
    },
}


# ----------------------------------------------------------------------------- config


@pytest.mark.parametrize("domain", SHIPPED)
def test_overriding_one_key_keeps_every_other_default(domain):
    schema = get_domain(domain).schema_path
    defaults = validate({}, schema, domain)
    for section in ("teacher", "distill"):
        key = "epochs"
        cfg = validate({section: {key: 7}}, schema, domain)
        assert cfg[section] == {**defaults[section], key: 7}
        assert {k: v for k, v in cfg.items() if k != section} == {k: v for k, v in defaults.items() if k != section}


def test_whole_object_defaults_are_merged_key_by_key_at_every_level():
    cfg = validate({"teacher": {"epochs": 20}, "data": {"noise": {"seed": 5}}, "distill": {}}, LOOSE_SCHEMA, "loose")
    assert cfg["teacher"] == {"epochs": 20, "lr": 0.003}
    assert cfg["data"] == {"source": "mock", "root": None, "noise": {"sigma": 0.1, "seed": 5}}
    assert cfg["distill"] == {"J": 3, "lambdas": [0.001], "gammas": [0.0, 0.01]}


@pytest.mark.parametrize("section, message", [
    ({"teacher": {"epoch": 3}}, "loose.teacher: unknown key(s) ['epoch']"),
    ({"teacher": {"epochs": "3"}}, "loose.teacher.epochs: expected an integer, got '3'"),
    ({"teacher": {"loss": "hinge"}}, "loose.teacher.loss: 'hinge' is not one of mse, l1, cross_entropy"),
    ({"distill": {"lambda": [0.1]}}, "loose.distill: unknown key(s) ['lambda']"),
    ({"distill": {"wave": "db5x"}}, "loose.distill.wave: unknown wavelet 'db5x'"),
    ({"distill": {"target": 3}}, "loose.distill.target: expected the name of a teacher output"),
    ({"data": {"source": "files"}}, "loose.data.root: required when loose.data.source is 'files'"),
])
def test_teacher_distill_and_data_root_are_checked_for_any_schema(section, message):
    with pytest.raises(ConfigError) as err:
        validate_domain_section("loose", section, LOOSE_SCHEMA)
    assert message in str(err.value)


def test_data_root_of_an_existing_folder_is_accepted(tmp_path):
    cfg = validate_domain_section("loose", {"data": {"source": "files", "root": str(tmp_path)},
                                            "distill": {"target": "y"}}, LOOSE_SCHEMA)
    assert cfg["data"]["root"] == str(tmp_path) and cfg["teacher"]["lr"] == 0.003


def test_nested_config_strings_are_read_as_yaml():
    # what Snakemake makes of --config "cme={teacher: {epochs: 3}, distill: {gammas: [0, 0.1]}}" label=x
    given = {"cme": {"teacher": {"epochs": "3", "optimizer": "adam"}, "distill": {"gammas": ["0", "0.1"]}},
             "label": "007"}
    config = yaml.safe_load(yaml.safe_dump(given))
    changed = coerce_config_overrides(config, given)
    assert config == {"cme": {"teacher": {"epochs": 3, "optimizer": "adam"}, "distill": {"gammas": [0, 0.1]}},
                      "label": "007"}  # top-level values are Snakemake's own business
    assert sorted(changed) == ["cme.distill.gammas", "cme.teacher.epochs"]


def test_unknown_domain_lists_registered_ones_and_how_to_register():
    with pytest.raises(KeyError) as err:
        get_domain("digits")
    text = str(err.value)
    assert all(name in text for name in SHIPPED)
    assert "domains/<name>/" in text and "domain_modules" in text and "awd.domains" in text


# ----------------------------------------------------------------------------- stages


def test_a_stage_sees_only_its_declared_keys():
    dom = get_domain("simulation")
    cfg = validate({}, dom.schema_path, "simulation")
    part = config_slice(dom, "simulate", cfg)
    assert set(part) == {"data", "truth", "distill"} and part["distill"] == {"mode": cfg["distill"]["mode"]}
    strict = stage_config(dom, "simulate", part)
    assert strict["distill"]["mode"] == "zero"
    with pytest.raises(KeyError, match=r"simulation\.distill\.epochs.*SimulationDomain\.stage_config\['simulate'\]"):
        strict["distill"]["epochs"]


def test_undeclared_stages_get_the_section_without_later_generic_sections():
    class Plain(Domain):
        name = "plain"

    cfg = {"data": {"source": "mock"}, "n": 5, "teacher": {"epochs": 2}, "distill": {"epochs": 1}}
    assert config_slice(Plain(), "ingest", cfg) == {"data": {"source": "mock"}, "n": 5}
    assert config_slice(Plain(), "teacher", cfg) == {"data": {"source": "mock"}, "n": 5, "teacher": {"epochs": 2}}
    assert config_slice(Plain(), "heads", cfg) == cfg


@pytest.mark.parametrize("domain", ["cosmology", "cme", "simulation"])
def test_figure_code_belongs_to_the_figures_stage_only(domain):
    dom = get_domain(domain)
    figures = dom.package_dir.resolve() / "figures.py"
    files = {stage: stage_code_files(dom, stage) for stage in STAGES}
    assert figures in files["figures"]
    assert all(figures not in files[s] for s in STAGES if s != "figures")
    distill_code = [p.name for p in files["distill"]]
    assert {"distill.py", "losses.py", "transform.py"} <= set(distill_code)
    assert "distill.py" not in [p.name for p in files["ingest"]]


# ----------------------------------------------------------------------------- manifest


def test_manifest_changes_only_with_content_and_reuses_cached_hashes(tmp_path, monkeypatch):
    import awd.manifest as mf

    root, out = tmp_path / "data", tmp_path / "results/manifest.tsv"
    (root / "sub").mkdir(parents=True)
    (root / "a.fits").write_bytes(b"abc")
    (root / "sub/b.txt").write_bytes(b"")
    assert mf.update_manifest(root, out)
    assert out.read_text().splitlines() == [
        "path\tsize\tsha256",
        "a.fits\t3\tba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad",
        "sub/b.txt\t0\te3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"]
    calls = []
    real = mf._sha256
    monkeypatch.setattr(mf, "_sha256", lambda p: calls.append(p.name) or real(p))
    assert not mf.update_manifest(root, out) and calls == []  # unchanged: stat only
    os.utime(root / "a.fits")  # touched, same content: hashed again, manifest kept
    assert not mf.update_manifest(root, out) and calls == ["a.fits"]
    (root / "a.fits").write_bytes(b"abd")
    assert mf.update_manifest(root, out)
    (root / "c.txt").write_text("new")
    assert mf.update_manifest(root, out) and "c.txt\t3\t" in out.read_text()
    (root / "sub/b.txt").unlink()
    assert mf.update_manifest(root, out) and "sub/b.txt" not in out.read_text()


# ----------------------------------------------------------------------------- provenance, summary


def test_provenance_is_dirty_with_untracked_files_under_a_domain_folder(tmp_path):
    from awd.provenance import git_revision

    def git(*args):
        subprocess.run(["git", "-C", str(tmp_path), *args], check=True, capture_output=True)

    git("init", "-q")
    (tmp_path / "domains").mkdir()
    (tmp_path / "domains/README.md").write_text("guide\n")
    git("add", "domains/README.md")
    git("-c", "user.name=t", "-c", "user.email=t@example.org", "commit", "-q", "-m", "first")
    assert git_revision(tmp_path)["dirty"] is False
    (tmp_path / "domains/digits").mkdir()
    (tmp_path / "domains/digits/domain.py").write_text("# new domain\n")
    rev = git_revision(tmp_path)
    assert rev["dirty"] is True and rev["changes"] == ["domains/digits/domain.py"]


def test_summary_states_the_data_source_and_the_missing_paper_column(tmp_path):
    import pandas as pd

    from awd.summary import write_summary

    table = tmp_path / "table.csv"
    pd.DataFrame({"method": ["initial wavelet", "AWD"], "distance": [0.4, 0.1], "distance_se": [np.nan, np.nan]}
                 ).to_csv(table, index=False)
    df = write_summary({"simulation": table}, {"simulation": {"data": {"source": "files", "root": "/d/bundled"}}},
                       tmp_path / "s.csv", tmp_path / "s.md")
    md = (tmp_path / "s.md").read_text()
    assert set(df["data"]) == {"data read from bundled (data.source: files)"}
    assert "no paper reference" in md and "| method | distance | ± se |" in md and "paper |" not in md
    assert "user data files" not in md


def test_summary_shows_mean_and_sd_over_distillation_seeds(tmp_path):
    import pandas as pd

    from awd.summary import write_summary

    table = tmp_path / "table.csv"
    pd.DataFrame({"method": ["AWD", "LSTM"], "r2": [0.25, 0.2], "r2_se": [0.05, 0.05],
                  "r2_seed_mean": [0.2487, 0.2], "r2_seed_sd": [0.001, 0.0], "n_seeds": [5, 5]}
                 ).to_csv(table, index=False)
    df = write_summary({"cme": table}, {"cme": {"data": {"source": "mock"}}}, tmp_path / "s.csv", tmp_path / "s.md")
    md = (tmp_path / "s.md").read_text()
    assert list(df["seed_mean"]) == [0.2487, 0.2] and list(df["n_seeds"]) == [5, 5]
    assert "| AWD | 0.25 | 0.05 | 0.2487 ± 0.001 (5 seeds) | 0.262 |" in md


# ----------------------------------------------------------------------------- stages at run time


@register
class _Flat(Domain):
    name = "flat_images_test"
    signal_ndim = 2
    target = "y"

    def ingest(self, cfg, raw_dir, out_dir, threads=1):
        n = 10
        return Dataset(np.zeros((n, 16)), np.arange(n, dtype=float), ["y"], np.array(["train"] * n),
                       np.zeros(n, dtype=int))


def test_ingest_output_must_match_signal_ndim(tmp_path):
    from awd.pipeline import run_ingest

    (tmp_path / "raw").mkdir()
    with pytest.raises(InputError, match=r"declares signal_ndim=2 .* returned X of shape \(10, 16\)"):
        run_ingest("flat_images_test", {}, tmp_path / "raw", tmp_path / "data", tmp_path / "data/dataset.npz")
    assert not (tmp_path / "data").exists()


def test_wavelet_too_long_warns_once_and_pywt_is_silenced(caplog):
    import pywt

    from awd.pipeline import check_wavelet_fits, stage

    with caplog.at_level(logging.WARNING, logger="awd"):
        msg = check_wavelet_fits((28, 28), "db5", 3)
    assert "distill.wave 'db5' (filter length 10) is too long for inputs of size 28x28 at distill.J=3" in msg
    assert "the deepest level without that is 1" in msg and "(haar, db2 fit 3 levels)" in msg
    assert check_wavelet_fits((28, 28), "haar", 3) is None and check_wavelet_fits((128,), "db5", 3) is None
    with stage("test", None):
        with warnings.catch_warnings(record=True) as seen:
            pywt.wavedec(np.zeros(28), "db5", level=3)
    assert not [w for w in seen if "Level value" in str(w.message)]


# ----------------------------------------------------------------------------- classification


def _blobs(n=240, seed=0):
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % 3
    X = rng.normal(0, 0.3, (n, 8)) + np.eye(3, 8)[labels] * 2.0
    split = np.array(["train", "train", "train", "val", "test"])[np.arange(n) % 5]
    return Dataset(X, labels.astype(float), ["digit"], split, np.zeros(n, dtype=int), meta={"classes": ["a", "b", "c"]})


def test_cross_entropy_teacher_learns_classes_without_output_standardisation():
    from awd.teacher import TeacherConfig, fit_teacher, n_outputs, output_names, predict

    ds = _blobs()
    cfg = TeacherConfig(epochs=30, batch_size=32, lr=0.01, loss="cross_entropy")
    assert n_outputs(ds, cfg.loss) == 3 and output_names(ds, cfg.loss) == ["digit=a", "digit=b", "digit=c"]
    torch.manual_seed(0)
    core = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.ReLU(), torch.nn.Linear(16, 3))
    model, history = fit_teacher(core, ds, cfg)
    assert torch.equal(model.y_shift, torch.zeros(3)) and torch.equal(model.y_scale, torch.ones(3))
    test = ds.subset("test")
    logits = predict(model, test.X)
    labels = test.y[:, 0].astype(int)
    assert logits.shape == (len(test.X), 3) and (logits.argmax(1) == labels).mean() > 0.95
    # the val loss is the mean cross-entropy, computed here by hand from the logits
    val = ds.subset("val")
    lv = predict(model, val.X)
    log_softmax = lv - lv.max(1, keepdims=True) - np.log(np.exp(lv - lv.max(1, keepdims=True)).sum(1, keepdims=True))
    by_hand = -log_softmax[np.arange(len(lv)), val.y[:, 0].astype(int)].mean()
    assert history[-1]["val_loss"] == pytest.approx(by_hand, rel=1e-5)


def test_cross_entropy_needs_integer_labels():
    from awd.teacher import TeacherConfig, fit_teacher

    ds = _blobs()
    ds.y[0, 0] = 0.5
    with pytest.raises(InputError, match="integer class labels"):
        fit_teacher(torch.nn.Linear(8, 3), ds, TeacherConfig(epochs=1, loss="cross_entropy"))


def test_distill_target_is_chosen_by_output_name():
    from awd.pipeline import target_index

    dom = get_domain("simulation")
    ds = _blobs()
    assert target_index(dom, {"teacher": {"loss": "cross_entropy"}, "distill": {"target": "digit=c"}}, ds) == 2
    reg = Dataset(np.zeros((4, 8)), np.zeros((4, 2)), ["y", "z"], np.array(["train"] * 4), np.zeros(4, dtype=int))
    assert target_index(dom, {"teacher": {}, "distill": {}}, reg) == 0  # the domain's default target 'y'
    assert target_index(dom, {"teacher": {}, "distill": {"target": "z"}}, reg) == 1
    with pytest.raises(InputError, match=r"simulation\.distill\.target: 'w' is not an output of the teacher; "
                                         r"outputs: \['y', 'z'\]"):
        target_index(dom, {"teacher": {}, "distill": {"target": "w"}}, reg)


def test_first_epoch_logs_the_size_of_every_loss_term(caplog):
    from awd.distill import DistillConfig, distill_path

    rng = np.random.default_rng(0)
    X = rng.normal(size=(40, 32))
    teacher = torch.nn.Sequential(torch.nn.Linear(32, 1))
    cfg = DistillConfig(wave="db2", J=2, epochs=2, batch_size=20, progress=False)
    with caplog.at_level(logging.INFO, logger="awd.distill"):
        distill_path(teacher, X, X[:10], lam=0.5, gammas=[0.0, 0.2], config=cfg)
    lines = [r.getMessage() for r in caplog.records if "first-epoch mean loss terms" in r.getMessage()]
    assert len(lines) == 2  # once per grid point
    assert "reconstruction=" in lines[0] and "sparsity=" in lines[0] and "interpretation=" in lines[1]
    sparsity = float(lines[0].split("sparsity=")[1].split(",")[0].split(";")[0])
    weighted = float(lines[0].split("lambda x sparsity = ")[1].split(",")[0])
    assert sparsity > 0 and weighted == pytest.approx(0.5 * sparsity, rel=1e-3)
