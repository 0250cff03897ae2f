"""Ingest of MassiveNuS-layout FITS trees: exact round trips (big-endian, LensTools and bare
headers, NaNs, 512 -> 256 block means, odd numbering), every broken-file case raising
InputError with the file's name, realisation splits, mock trees written and read back, and the
real maps in ../shared/data/real-kappa."""
import shutil
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from astropy.io import fits
from astropy.wcs import WCS
from scipy.stats import skew

from awd.io import InputError
from domains.cosmology.fits_io import (MapSet, block_mean, load_maps, read_convergence_map, scan_massivenus_tree,
                                       split_maps)
from domains.cosmology.mock import (SETTINGS_FILE, MapGenerator, cosmology_seed, resolve_cosmology,
                                    write_mock_tree)

REAL = Path(__file__).resolve().parents[2] / "shared" / "data" / "real-kappa"
needs_real = pytest.mark.skipif(not REAL.is_dir(), reason=f"real convergence maps not found at {REAL}")

FID_DIR = "convergence_gal_mnv0.10000_om0.30000_As2.1000"
LENSTOOLS = {"H0": 70.0, "h": 0.7, "OMEGA_M": 0.3, "OMEGA_L": 0.7, "W0": -1.0, "WA": 0.0, "Z": 1.0,
             "ANGLE": 3.5, "ITYPE": "ConvergenceMap"}


def random_map(seed, n=32, dtype=np.float32):
    return (0.02 * np.random.default_rng(seed).standard_normal((n, n))).astype(dtype)


def put(root, folder, name, data, header=None, maps="Maps10"):
    """Write one FITS file (astropy writes big-endian) into root/folder/maps/name."""
    path = Path(root) / folder / maps / name
    path.parent.mkdir(parents=True, exist_ok=True)
    hdr = fits.Header()
    for key, value in (header or {}).items():
        hdr[key] = value
    fits.PrimaryHDU(data=data, header=hdr).writeto(path)
    return path


def small_tree(root, n=32, folders=(FID_DIR, "convergence_gal_mnv0.0_om0.25_As1.9"), realisations=(1, 2, 3)):
    written = {}
    for i, folder in enumerate(folders):
        for r in realisations:
            data = random_map(100 * i + r, n)
            written[(folder, r)] = data
            put(root, folder, f"WLconv_z1.00_{r:04d}r.fits", data)
    return written


def test_scan_parses_names_numbering_and_assigns_cosmology_ids(tmp_path):
    folders = ["convergence_gal_mnv0.10000_om0.30000_As2.1000", "convergence_gal_mnv0.0_om0.25_As1.9",
               "convergence_gal_mnv0.06271_om0.38154_As2.2004"]
    numbering = ["0000", "0007", "12", "00123"]
    for folder in folders:
        for r in numbering:
            put(tmp_path, folder, f"WLconv_z1.00_{r}r.fits", random_map(int(r)))
        put(tmp_path, folder, "WLconv_z1.50_0001r.fits", random_map(0), maps="Maps15")  # other redshift
        (tmp_path / folder / "Maps10" / "README.txt").write_text("ignored")
    (tmp_path / "notes").mkdir()
    table = scan_massivenus_tree(tmp_path, 1.0)
    assert list(table.columns) == ["path", "m_nu", "omega_m", "a_s", "realisation", "cosmology"]
    assert len(table) == 12
    # ids follow the sorted (m_nu, omega_m, a_s) triples
    triples = table.groupby("cosmology")[["m_nu", "omega_m", "a_s"]].first().to_numpy()
    np.testing.assert_array_equal(triples, [[0.0, 0.25, 1.9], [0.06271, 0.38154, 2.2004], [0.1, 0.3, 2.1]])
    assert table["realisation"].tolist()[:4] == [0, 7, 12, 123]
    assert all(Path(p).parent.name == "Maps10" for p in table["path"])
    assert len(scan_massivenus_tree(tmp_path, 1.5)) == 3


def test_values_round_trip_exactly_with_lenstools_and_bare_headers(tmp_path):
    f32 = random_map(1, 64)
    f64 = random_map(2, 64, dtype=np.float64)
    p1 = put(tmp_path, FID_DIR, "WLconv_z1.00_0001r.fits", f32, LENSTOOLS)
    p2 = put(tmp_path, FID_DIR, "WLconv_z1.00_0002r.fits", f64)
    got1, info1 = read_convergence_map(p1, target_size=64)
    got2, info2 = read_convergence_map(p2, target_size=64)
    assert got1.dtype == np.float32 and got1.dtype.isnative
    np.testing.assert_array_equal(got1, f32)
    np.testing.assert_array_equal(got2, f64.astype(np.float32))
    assert info1["byteorder"] == ">" and info2["byteorder"] == ">"  # FITS data are big-endian
    assert info1["angle_deg"] == 3.5 and info1["pixel_arcmin"] == pytest.approx(3.5 * 60 / 64)
    assert info1["z"] == 1.0 and info1["omega_m"] == 0.3
    assert info2["angle_deg"] is None and info2["pixel_arcmin"] is None
    assert read_convergence_map(p2, target_size=64, pixel_arcmin=0.5)[1]["pixel_arcmin"] == 0.5
    ms = load_maps(tmp_path, redshift=1.0, target_size=64, pixel_arcmin=3.5 * 60 / 64)
    np.testing.assert_array_equal(ms.maps, np.stack([f32, f64.astype(np.float32)]))
    np.testing.assert_array_equal(ms.params, [[0.1, 0.3, 2.1]] * 2)


def test_512_maps_are_block_averaged_to_256(tmp_path):
    big = random_map(5, 512, dtype=np.float64)
    path = put(tmp_path, FID_DIR, "WLconv_z1.00_0001r.fits", big, LENSTOOLS)
    got, info = read_convergence_map(path, target_size=256)
    want = (big[0::2, 0::2] + big[1::2, 0::2] + big[0::2, 1::2] + big[1::2, 1::2]) / 4
    np.testing.assert_allclose(got, want.astype(np.float32), rtol=1e-6, atol=1e-9)
    assert info["rebin"] == 2 and info["npix_file"] == 512 and info["pixel_arcmin"] == pytest.approx(0.8203125)
    np.testing.assert_array_equal(read_convergence_map(path, target_size=256, rebin=2)[0], got)
    np.testing.assert_array_equal(block_mean(np.arange(16.0).reshape(4, 4), 2), [[2.5, 4.5], [10.5, 12.5]])
    with pytest.raises(InputError, match="WLconv_z1.00_0001r.fits"):
        read_convergence_map(path, target_size=256, rebin=1)
    ms = load_maps(tmp_path, redshift=1.0, target_size=256)
    assert ms.maps.shape == (1, 256, 256) and ms.pixel_arcmin == pytest.approx(0.8203125)
    # a bare 512 header and no configured scale: the MassiveNuS side of 3.5 deg is assumed
    put(tmp_path, "convergence_gal_mnv0.0_om0.3_As2.1", "WLconv_z1.00_0001r.fits", big)
    assert load_maps(tmp_path, redshift=1.0, target_size=256).pixel_arcmin == pytest.approx(0.8203125)


def test_nan_policies(tmp_path):
    data = random_map(7, 32)
    data[3, 4] = np.nan
    data[10, 11] = np.inf
    path = put(tmp_path, FID_DIR, "WLconv_z1.00_0001r.fits", data)
    with pytest.raises(InputError, match=r"WLconv_z1.00_0001r.fits.*2 NaN/inf"):
        read_convergence_map(path, target_size=32)
    zero, info = read_convergence_map(path, target_size=32, nan_policy="zero")
    assert zero[3, 4] == 0 and zero[10, 11] == 0 and info["n_nonfinite"] == 2
    mean, _ = read_convergence_map(path, target_size=32, nan_policy="mean")
    finite = np.isfinite(data)
    assert mean[3, 4] == pytest.approx(float(data[finite].astype(np.float64).mean()), rel=1e-6)
    np.testing.assert_array_equal(mean[finite], data[finite])
    with pytest.raises(InputError):
        read_convergence_map(path, target_size=32, nan_policy="drop")


def _broken(case, root):
    """Build a tree with one broken thing; return the name the error message must contain."""
    ok = random_map(1, 32)
    put(root, FID_DIR, "WLconv_z1.00_0001r.fits", ok)
    maps = Path(root) / FID_DIR / "Maps10"
    bad = maps / "WLconv_z1.00_0002r.fits"
    if case == "not_fits":
        bad.write_text("this is not a FITS file\n" * 200)
    elif case == "empty":
        bad.write_bytes(b"")
    elif case == "truncated":
        put(root, FID_DIR, "tmp.fits", random_map(2, 64))
        bad.write_bytes((maps / "tmp.fits").read_bytes()[:2880 + 1000])
        (maps / "tmp.fits").unlink()
    elif case == "one_d":
        put(root, FID_DIR, bad.name, ok.ravel())
    elif case == "three_d":
        put(root, FID_DIR, bad.name, np.stack([ok, ok]))
    elif case == "not_square":
        put(root, FID_DIR, bad.name, ok[:, :16])
    elif case == "all_nan":
        put(root, FID_DIR, bad.name, np.full((32, 32), np.nan, np.float32))
    elif case == "constant":
        put(root, FID_DIR, bad.name, np.full((32, 32), 0.01, np.float32))
    elif case == "mixed_sizes":
        put(root, FID_DIR, "WLconv_z1.00_0003r.fits", random_map(3, 32))
        put(root, FID_DIR, bad.name, random_map(2, 64))
    elif case == "undividable_size":
        bad = put(root, "convergence_gal_mnv0.0_om0.3_As2.1", "WLconv_z1.00_0001r.fits", random_map(2, 48))
    elif case == "header_redshift":
        put(root, FID_DIR, bad.name, random_map(2, 32), {"Z": 1.5})
    elif case == "mixed_angles":
        put(root, FID_DIR, "WLconv_z1.00_0003r.fits", random_map(3, 32), {"ANGLE": 3.5})
        put(root, FID_DIR, "WLconv_z1.00_0004r.fits", random_map(4, 32), {"ANGLE": 3.5})
        put(root, FID_DIR, bad.name, random_map(2, 32), {"ANGLE": 5.0})
    elif case == "duplicate_realisation":
        bad = put(root, FID_DIR, "WLconv_z1.00_1r.fits", random_map(2, 32))
    elif case == "unparseable_dir":
        bad = put(root, "convergence_gal_mnvX_om0.3_As2.1", "WLconv_z1.00_0001r.fits", ok).parents[1]
    elif case == "unknown_param":
        bad = put(root, "convergence_gal_mnv0.1_om0.3_As2.1_w-1.0", "WLconv_z1.00_0001r.fits", ok).parents[1]
    elif case == "missing_param":
        bad = put(root, "convergence_gal_mnv0.1_om0.3", "WLconv_z1.00_0001r.fits", ok).parents[1]
    elif case == "same_params_twice":
        bad = put(root, "convergence_gal_mnv0.1_om0.3_As2.1", "WLconv_z1.00_0001r.fits", ok).parents[1]
    elif case == "no_maps_folder":
        bad = put(root, "convergence_gal_mnv0.0_om0.3_As2.1", "WLconv_z1.50_0001r.fits", ok, maps="Maps15").parents[1]
    elif case == "bad_file_name":
        bad = put(root, FID_DIR, "WLconv_z1.00_abcr.fits", ok)
    else:
        raise AssertionError(case)
    return bad.name


BROKEN = ["not_fits", "empty", "truncated", "one_d", "three_d", "not_square", "all_nan", "constant",
          "mixed_sizes", "undividable_size", "header_redshift", "mixed_angles", "duplicate_realisation",
          "unparseable_dir", "unknown_param", "missing_param", "same_params_twice", "no_maps_folder",
          "bad_file_name"]


@pytest.mark.filterwarnings("ignore:File may have been truncated")
@pytest.mark.parametrize("case", BROKEN)
def test_broken_inputs_raise_input_error_naming_the_file(case, tmp_path):
    name = _broken(case, tmp_path)
    before = sorted((p, p.stat().st_mtime_ns) for p in tmp_path.rglob("*"))
    with pytest.raises(InputError) as err:
        load_maps(tmp_path, redshift=1.0, target_size=32, nan_policy="zero")
    assert name in str(err.value)
    assert sorted((p, p.stat().st_mtime_ns) for p in tmp_path.rglob("*")) == before  # nothing written


def test_missing_root_and_empty_tree(tmp_path):
    with pytest.raises(InputError, match="missing"):
        load_maps(tmp_path / "missing", redshift=1.0, target_size=32)
    with pytest.raises(InputError, match="no convergence_gal"):
        scan_massivenus_tree(tmp_path, 1.0)
    (tmp_path / FID_DIR / "Maps10").mkdir(parents=True)
    with pytest.raises(InputError, match="Maps10"):
        scan_massivenus_tree(tmp_path, 1.0)
    with pytest.raises(InputError, match="0.25"):
        scan_massivenus_tree(tmp_path, 0.25)


def test_max_per_cosmology_and_threads(tmp_path):
    written = small_tree(tmp_path, realisations=(4, 1, 9, 2))
    ms = load_maps(tmp_path, redshift=1.0, target_size=32, max_per_cosmology=2, threads=2)
    assert ms.realisation.tolist() == [1, 2, 1, 2]
    assert ms.cosmology.tolist() == [0, 0, 1, 1]  # (0.0, 0.25, 1.9) sorts before (0.1, 0.3, 2.1)
    np.testing.assert_array_equal(ms.maps[2], written[(FID_DIR, 1)])
    full1 = load_maps(tmp_path, redshift=1.0, target_size=32, threads=1)
    full2 = load_maps(tmp_path, redshift=1.0, target_size=32, threads=3)
    np.testing.assert_array_equal(full1.maps, full2.maps)
    assert full1.files == full2.files and len(full1) == 8


def _mapset(n_cosmo, realisations):
    r = np.tile(np.asarray(realisations), n_cosmo)
    c = np.repeat(np.arange(n_cosmo), len(realisations))
    return MapSet(maps=np.zeros((len(r), 2, 2), np.float32), params=np.zeros((len(r), 3)), cosmology=c,
                  realisation=r, files=[""] * len(r), pixel_arcmin=1.0)


def test_split_by_realisation_is_shared_across_cosmologies_and_deterministic():
    ms = _mapset(3, range(1, 101))
    split = split_maps(ms, (0.8, 0.12, 0.08), seed=4)
    assert split.dtype.kind == "U"
    for c in range(3):
        counts = {s: int(np.sum(split[ms.cosmology == c] == s)) for s in ("train", "val", "test")}
        assert counts == {"train": 80, "val": 12, "test": 8}
        # the same realisations in each split for every cosmology
        np.testing.assert_array_equal(split[ms.cosmology == c], split[ms.cosmology == 0])
    np.testing.assert_array_equal(split, split_maps(ms, {"train": 0.8, "val": 0.12, "test": 0.08}, seed=4))
    assert not np.array_equal(split, split_maps(ms, (0.8, 0.12, 0.08), seed=5))
    # seed None: ascending realisation blocks, as AWD (train first, then val, then test)
    ordered = split_maps(ms, (80, 12, 8), seed=None)[:100]
    assert ordered.tolist() == ["train"] * 80 + ["val"] * 12 + ["test"] * 8
    # few realisations: every requested split still gets one
    small = split_maps(_mapset(2, [0, 5, 9, 11, 30]), (0.8, 0.12, 0.08), seed=0)
    assert sorted(set(small.tolist())) == ["test", "train", "val"]
    for bad in [(0.5, 0.2, 0.2), (80, 12, 7), (0.8, 0.2), {"train": 0.9, "holdout": 0.1}]:
        with pytest.raises(InputError, match="split"):
            split_maps(ms, bad, seed=0)


def test_mock_tree_round_trips_through_the_ingest(tmp_path):
    raw = tmp_path / "raw"
    cosmos = [3, {"omega_m": 0.27, "a_s": 2.0, "m_nu": 0.2}]
    paths = write_mock_tree(raw, cosmologies=cosmos, n_maps=3, npix_generate=64, npix_out=32, seed=11)
    assert len(paths) == 6 and all(p.is_file() for p in paths)
    assert paths[0].relative_to(raw).as_posix() == (
        "convergence_gal_mnv0.07024_om0.20235_As2.3075/Maps10/WLconv_z1.00_0001r.fits")
    ms = load_maps(raw, redshift=1.0, target_size=32)
    assert ms.pixel_arcmin == pytest.approx(3.5 * 60 / 32)
    np.testing.assert_array_equal(ms.params[0], [0.07024, 0.20235, 2.3075])
    np.testing.assert_array_equal(ms.params[-1], [0.2, 0.27, 2.0])
    for i, (c, r) in enumerate(zip(ms.cosmology, ms.realisation)):
        params = resolve_cosmology(cosmos[c])
        gen = MapGenerator(params, npix=64, side_deg=3.5, rebin=2)
        np.testing.assert_array_equal(ms.maps[i], gen.generate(cosmology_seed(11, params, r)).astype(np.float32))
    header = fits.getheader(paths[0])
    for key, value in {"ANGLE": 3.5, "Z": 1.0, "OMEGA_M": 0.20235, "M_NU": 0.07024, "NPIX": 32, "H0": 70.0,
                       "OMEGA_B": 0.046, "REALIS": 1, "ITYPE": "ConvergenceMap"}.items():
        assert header[key] == value
    assert header["A_S"] == pytest.approx(2.3075e-9) and header["COMMENT"]
    wcs = WCS(header)
    assert abs(wcs.wcs.cdelt[1]) * 32 == pytest.approx(3.5)
    assert fits.getdata(paths[0]).dtype == np.dtype(">f4")
    # the fast writer produces exactly the bytes of astropy's writeto
    with fits.open(paths[0]) as hdul:
        fits.PrimaryHDU(data=hdul[0].data, header=hdul[0].header).writeto(tmp_path / "astropy.fits")
    assert (tmp_path / "astropy.fits").read_bytes() == paths[0].read_bytes()
    settings = (raw / SETTINGS_FILE).read_text()
    assert '"seed": 11' in settings


def test_mock_tree_is_independent_of_threads_order_and_additions(tmp_path):
    kw = dict(n_maps=2, npix_generate=32, npix_out=16, seed=3)
    one = write_mock_tree(tmp_path / "a", cosmologies=[0, 1], threads=1, **kw)
    two = write_mock_tree(tmp_path / "b", cosmologies=[2, 1, 0], threads=2, **kw)
    more = write_mock_tree(tmp_path / "c", cosmologies=[1], threads=1, **dict(kw, n_maps=4))
    assert (len(one), len(two), len(more)) == (4, 6, 4)
    for p in one:
        rel = p.relative_to(tmp_path / "a").as_posix()
        np.testing.assert_array_equal(fits.getdata(p), fits.getdata(tmp_path / "b" / rel))
        if "om0.28205" in rel:
            np.testing.assert_array_equal(fits.getdata(p), fits.getdata(tmp_path / "c" / rel))


def test_mock_tree_replaces_its_own_tree_atomically_and_protects_other_folders(tmp_path):
    raw = tmp_path / "raw"
    kw = dict(cosmologies=[0], npix_generate=32, npix_out=16, seed=1)
    write_mock_tree(raw, n_maps=4, **kw)
    write_mock_tree(raw, n_maps=2, **kw)  # fewer maps: no stale files from the first tree
    assert len(scan_massivenus_tree(raw, 1.0)) == 2
    before = sorted(p.name for p in raw.rglob("*"))
    with pytest.raises(ValueError, match="kappa0"):  # fails inside the generator
        write_mock_tree(raw, n_maps=2, kappa0_factor=1e-4, **kw)
    assert sorted(p.name for p in raw.rglob("*")) == before
    assert not [p for p in tmp_path.iterdir() if p.name.startswith(".raw")]  # no temporary left
    user = tmp_path / "user"
    user.mkdir()
    (user / "my_maps.fits").write_text("precious")
    with pytest.raises(InputError, match="user"):
        write_mock_tree(user, n_maps=1, **kw)
    assert (user / "my_maps.fits").read_text() == "precious"


@needs_real
@pytest.mark.parametrize("name, pixel, std, mean, skewness", [
    ("massivenus_fiducial_z1_320px.fits", 3.5 * 60 / 512, 0.0183, 0.0022, 2.30),
    ("columbia_z1_256px.fits", 3.5 * 60 / 256, 0.0156, -0.0038, 2.58),
])
def test_real_maps_ingest_with_bare_headers(name, pixel, std, mean, skewness, tmp_path):
    data, info = read_convergence_map(REAL / name, target_size=None)
    assert info["byteorder"] == ">" and info["angle_deg"] is None and info["n_nonfinite"] == 0
    x = data.astype(np.float64)
    assert (x.std(), x.mean(), skew(x.ravel())) == (pytest.approx(std, abs=1e-4), pytest.approx(mean, abs=1e-4),
                                                     pytest.approx(skewness, abs=0.01))
    # the same file inside a MassiveNuS tree, rebinned 2x2 with the configured pixel scale
    target = tmp_path / FID_DIR / "Maps10" / "WLconv_z1.00_0001r.fits"
    target.parent.mkdir(parents=True)
    shutil.copyfile(REAL / name, target)
    n = data.shape[0]
    ms = load_maps(tmp_path, redshift=1.0, target_size=n // 2, pixel_arcmin=pixel)
    assert ms.pixel_arcmin == pytest.approx(2 * pixel)
    np.testing.assert_allclose(ms.maps[0], block_mean(x, 2), rtol=1e-6, atol=1e-9)


# ----------------------------------------------------------------------------- AWD's own layout

def _awd():
    import awd_cosmology_export as awd_export

    return awd_export


@pytest.mark.parametrize("header", ["bare", "lenstools"])
def test_awd_layout_reads_as_the_authors_loader(header, tmp_path):
    ex = _awd()
    written = ex.write_awd_tree(tmp_path, n_models=3, n_realisations=3, header=header)
    rows = np.loadtxt(tmp_path / ex.PARAMETER_FILE)[:3]  # AWD: np.loadtxt(parameter_file)[:ncosmo]
    for root in (tmp_path, tmp_path / "z1_256"):  # the data folder, or z1_256 with the file one up
        ms = load_maps(root, redshift=1.0, target_size=256)
        assert len(ms) == 9 and ms.maps.dtype == np.float32 and ms.maps.flags.c_contiguous
        for i, path in enumerate(ms.files):
            model, r = int(Path(path).parent.name[5:]), ms.realisation[i]
            np.testing.assert_array_equal(ms.maps[i], written[(model, r)])  # big-endian round trip, exact
            np.testing.assert_array_equal(ms.params[i], rows[model, 1:-1])  # AWD's params_[i, 1:-1]
        assert sorted(set(ms.realisation.tolist())) == [0, 1, 2]
        assert ms.pixel_arcmin == pytest.approx(3.5 * 60 / 256)  # 0.82', from ANGLE or the 3.5 deg default
        prefix = "z1_256/" if root == tmp_path else ""
        assert sorted(ms.folders.values()) == [f"{prefix}model00{m}" for m in range(3)]
        assert ms.skipped == []
    # rebinning to the default working size 128 averages 2x2 blocks of AWD's 256^2 maps
    half = load_maps(tmp_path, redshift=1.0, target_size=128)
    np.testing.assert_allclose(half.maps[0], block_mean(ms.maps[0].astype(np.float64), 2), rtol=1e-6)


def test_parameter_file_variants_and_errors(tmp_path):
    ex = _awd()
    from domains.cosmology.fits_io import read_parameter_file

    rows = ex.parameter_rows(4)
    path = tmp_path / "p.txt"
    np.testing.assert_array_equal(read_parameter_file(ex.write_parameter_file(path, rows)),
                                  rows[:, 1:4])
    # a header naming the columns in another order, commas, A_s as A_s
    path.write_text("# sigma_8, As, Omegam, Mnu\n0.8, 2.1e-9, 0.3, 0.1\n0.7, 1.9e-9, 0.25, 0.0\n")
    np.testing.assert_allclose(read_parameter_file(path), [[0.1, 0.3, 2.1], [0.0, 0.25, 1.9]])
    path.write_text("0.1 0.3 2.1\n")
    np.testing.assert_allclose(read_parameter_file(path), [[0.1, 0.3, 2.1]])
    for text, problem in [("1 0.1 0.3 2.1\n", "4 columns and no header"), ("0 0.1 0.3\n0 0.1 0.3 2.1\n", "line 2"),
                          ("0 0.1 x 2.1 0.8\n", "line 1 holds a value that is not a number"),
                          ("# only a comment\n", "no parameter rows"), ("0 0.1 1.3 2.1 0.8\n", "implausible")]:
        path.write_text(text)
        with pytest.raises(InputError, match=problem):
            read_parameter_file(path)


def test_awd_layout_errors_say_what_to_provide(tmp_path):
    ex = _awd()
    ex.write_awd_tree(tmp_path, n_models=2, n_realisations=2, npix=32, n_rows=2)
    (tmp_path / ex.PARAMETER_FILE).unlink()
    with pytest.raises(InputError, match="no cosmological_parameters.txt was found"):
        load_maps(tmp_path, redshift=1.0, target_size=32)
    ex.write_parameter_file(tmp_path / ex.PARAMETER_FILE, ex.parameter_rows(2))
    put(tmp_path, "z1_256/model002", "WLconv_z1.00_0000r.fits", random_map(1), maps="")
    with pytest.raises(InputError, match=r"model002: has no row in cosmological_parameters.txt \(2 rows"):
        load_maps(tmp_path, redshift=1.0, target_size=32)
    shutil.rmtree(tmp_path / "z1_256" / "model002")
    put(tmp_path, "z1_512/model000", "WLconv_z1.00_0000r.fits", random_map(1, 64), maps="")
    with pytest.raises(InputError, match="model### folders in several places.*cosmology.data.root"):
        load_maps(tmp_path, redshift=1.0, target_size=32)


def test_awd_model_folder_beside_massivenus_folders_is_read_and_junk_is_listed(tmp_path, caplog):
    ex = _awd()
    small_tree(tmp_path, realisations=(1, 2, 3))
    rows = ex.parameter_rows(8)
    ex.write_parameter_file(tmp_path / ex.PARAMETER_FILE, rows)
    for r in range(3):  # model007 in AWD's naming beside the MassiveNuS folders
        put(tmp_path, "model007", f"WLconv_z1.00_{r:04d}r.fits", random_map(50 + r), maps="")
    put(tmp_path, "model007", "WLconv_z1.50_0000r.fits", random_map(9), maps="")
    put(tmp_path, FID_DIR, "WLconv_z1.50_0001r.fits", random_map(0), maps="Maps15")
    (tmp_path / FID_DIR / "Maps10" / "notes.txt").write_text("x")
    (tmp_path / "plots").mkdir()
    (tmp_path / "README.md").write_text("x")
    with caplog.at_level("INFO", logger="domains.cosmology.fits_io"):
        ms = load_maps(tmp_path, redshift=1.0, target_size=32)
    assert len(ms) == 9 and len(np.unique(ms.cosmology)) == 3
    in_model7 = np.asarray([Path(f).parent.name == "model007" for f in ms.files])
    assert in_model7.sum() == 3
    np.testing.assert_array_equal(ms.params[in_model7][0], rows[7, 1:4])
    skipped = dict(ms.skipped)
    assert set(skipped) == {f"{FID_DIR}/Maps15", f"{FID_DIR}/Maps10/notes.txt", "model007/WLconv_z1.50_0000r.fits",
                            "plots", "README.md"}
    assert "other source redshift" in skipped[f"{FID_DIR}/Maps15"]
    warning = next(r.getMessage() for r in caplog.records if "entries not read" in r.getMessage())
    assert all(entry in warning for entry in skipped)
    counts = next(r.getMessage() for r in caplog.records if "maps per cosmology" in r.getMessage())
    assert counts.count("3 maps") == 3 and "model007" in counts
    # the same parameters in both layouts are refused
    ex.write_parameter_file(tmp_path / ex.PARAMETER_FILE,
                            np.vstack([rows[:7], [[7, 0.1, 0.3, 2.1, 0.8]]]))
    with pytest.raises(InputError, match=r"gives the same parameters \(0.1, 0.3, 2.1\) as model007"):
        load_maps(tmp_path, redshift=1.0, target_size=32)


def test_short_cosmologies_are_reported_in_the_log_and_the_maps_table(tmp_path, caplog):
    from awd.config import validate
    from awd.domain import get_domain

    small_tree(tmp_path / "raw", realisations=(1, 2, 3, 4, 5, 6))
    for r in (5, 6):
        (tmp_path / "raw" / FID_DIR / "Maps10" / f"WLconv_z1.00_{r:04d}r.fits").unlink()
    bad = random_map(3, 32)
    bad[0, :3] = np.nan
    (tmp_path / "raw" / FID_DIR / "Maps10" / "WLconv_z1.00_0003r.fits").unlink()
    put(tmp_path / "raw", FID_DIR, "WLconv_z1.00_0003r.fits", bad)
    dom = get_domain("cosmology", "domains.cosmology")
    cfg = validate({"data": {"source": "files", "root": str(tmp_path / "raw"), "target_size": 32,
                             "nan_policy": "mean", "split": [0.5, 0.25, 0.25], "split_seed": None}},
                   dom.schema_path, where="cosmology")
    with caplog.at_level("INFO"):
        ds = dom.ingest(cfg, tmp_path / "raw", tmp_path / "data")
    table = pd.read_csv(tmp_path / "data" / "maps.csv", keep_default_na=False)
    fid = table["file"].str.startswith(FID_DIR)
    assert table.loc[fid, "cosmology_maps"].tolist() == [4] * 4
    assert table.loc[~fid, "cosmology_maps"].tolist() == [6] * 6
    patched = table[table["nan_pixels"] > 0]
    assert patched["file"].tolist() == [f"{FID_DIR}/Maps10/WLconv_z1.00_0003r.fits"]
    assert patched["nan_pixels"].tolist() == [3] and patched["nan_patch"].tolist() == ["mean"]
    assert set(table.loc[table["nan_pixels"] == 0, "nan_patch"]) == {""}
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "fewer maps than the others (6)" in text and f"({FID_DIR}) 4 of 6" in text
    assert "WLconv_z1.00_0003r.fits: 3 NaN/inf pixels set to the mean" in text
    assert "cosmology.data.nan_policy='mean'" in text
    # 32 px over 3.5 deg: 6.56' working scale, warned against the heads' 0.82'
    assert "native 6.5625 arcmin" in text and "differs from the 0.82 arcmin" in text
    assert ds.meta["cosmologies"][1]["maps"] == 4 and ds.meta["nan_patched_files"] == 1


def test_every_nan_file_is_named_at_once_with_the_config_key(tmp_path):
    small_tree(tmp_path, realisations=(1, 2, 3))
    names = []
    for folder, r in [(FID_DIR, 2), ("convergence_gal_mnv0.0_om0.25_As1.9", 1), (FID_DIR, 3)]:
        data = random_map(r, 32)
        data[5, 5] = np.nan
        path = tmp_path / folder / "Maps10" / f"WLconv_z1.00_{r:04d}r.fits"
        path.unlink()
        names.append(str(put(tmp_path, folder, path.name, data)))
    with pytest.raises(InputError) as err:
        load_maps(tmp_path, redshift=1.0, target_size=32)
    message = str(err.value)
    assert "3 map files cannot be used" in message and all(name in message for name in names)
    assert message.count("set cosmology.data.nan_policy to 'zero' or 'mean'") == 3


def test_pixel_scale_is_logged_and_off_scale_working_size_is_warned(tmp_path, caplog):
    ex = _awd()
    from domains.cosmology.domain import _check_pixel_scale

    ex.write_awd_tree(tmp_path, n_models=2, n_realisations=2, npix=64, header="bare", n_rows=2)
    with caplog.at_level("INFO"):
        ms = load_maps(tmp_path, redshift=1.0, target_size=32, pixel_arcmin=0.41)
        _check_pixel_scale(ms.pixel_arcmin, ms.native_pixel_arcmin, 64)
    text = "\n".join(r.getMessage() for r in caplog.records)
    assert "native 0.4100 arcmin (64 px, cosmology.data.pixel_arcmin), working 0.8200 arcmin (32 px, 2x2" in text
    assert "differs from" not in text
    caplog.clear()
    with caplog.at_level("WARNING"):
        _check_pixel_scale(3.5 * 60 / 128, 3.5 * 60 / 512, 512)  # the 512^2 MassiveNuS maps at target_size 128
    assert "1.641 arcmin differs from the 0.82 arcmin" in caplog.text and "target_size: 256 gives" in caplog.text


# ----------------------------------------------------------------------------- FITS variants

def test_fits_header_and_storage_variants(tmp_path):
    base = random_map(3, 32, dtype=np.float64)
    path = tmp_path / "m.fits"
    # scaled 16-bit integers (BSCALE/BZERO): astropy applies the scaling
    hdu = fits.PrimaryHDU(data=base.copy())
    hdu.scale("int16", bscale=1e-5, bzero=0.0)
    hdu.writeto(path)
    got, _ = read_convergence_map(path, target_size=None)
    np.testing.assert_allclose(got, base, atol=1e-5)
    # integers without BSCALE are refused
    fits.PrimaryHDU(data=(base * 1000).astype(np.int16)).writeto(path, overwrite=True)
    with pytest.raises(InputError, match=r"m.fits: integer pixels \(BITPIX=16\) without BSCALE"):
        read_convergence_map(path, target_size=None)
    # a cube with one plane (NAXIS3 = 1) is one map
    fits.PrimaryHDU(data=base[None].astype(np.float32)).writeto(path, overwrite=True)
    assert read_convergence_map(path, target_size=None)[0].shape == (32, 32)
    # several images (kappa + mask) are ambiguous: listed
    fits.HDUList([fits.PrimaryHDU(base), fits.ImageHDU(np.ones((32, 32)), name="MASK")]).writeto(path, overwrite=True)
    with pytest.raises(InputError, match=r"holds 2 images \(HDU 0 'PRIMARY' 32x32, HDU 1 'MASK' 32x32\)"):
        read_convergence_map(path, target_size=None)
    # the map in an image extension after an empty primary, and a tile-compressed image
    fits.HDUList([fits.PrimaryHDU(), fits.ImageHDU(base.astype(np.float32))]).writeto(path, overwrite=True)
    np.testing.assert_array_equal(read_convergence_map(path, target_size=None)[0], base.astype(np.float32))
    fits.HDUList([fits.PrimaryHDU(), fits.CompImageHDU(base.astype(np.float32), quantize_level=0.0,
                                                       compression_type="GZIP_1")]).writeto(path, overwrite=True)
    np.testing.assert_array_equal(read_convergence_map(path, target_size=None)[0], base.astype(np.float32))
    # a linear TAN WCS gives the pixel scale; it must agree with ANGLE
    wcs = WCS(naxis=2)
    wcs.wcs.ctype = ["RA---TAN", "DEC--TAN"]
    wcs.wcs.cdelt = [-3.5 / 32, 3.5 / 32]
    wcs.wcs.crpix = [16.5, 16.5]
    fits.PrimaryHDU(base, header=wcs.to_header()).writeto(path, overwrite=True)
    assert read_convergence_map(path, target_size=16)[1]["pixel_arcmin"] == pytest.approx(2 * 3.5 * 60 / 32)
    header = wcs.to_header()
    header["ANGLE"] = 2.0
    fits.PrimaryHDU(base, header=header).writeto(path, overwrite=True)
    with pytest.raises(InputError, match="ANGLE=2.0 deg gives 3.75 arcmin per pixel but the WCS steps give 6.562"):
        read_convergence_map(path, target_size=None)
    wcs.wcs.cdelt = [-3.5 / 32, 3.0 / 32]
    fits.PrimaryHDU(base, header=wcs.to_header()).writeto(path, overwrite=True)
    with pytest.raises(InputError, match="expected square pixels"):
        read_convergence_map(path, target_size=None)
    # sizes that do not divide: the error names the key and the sizes that would
    fits.PrimaryHDU(base[:30, :30]).writeto(path, overwrite=True)
    with pytest.raises(InputError, match=r"set cosmology.data.target_size to a divisor of 30 \(30\)"):
        read_convergence_map(path, target_size=16)
    fits.PrimaryHDU(base[:, :20]).writeto(path, overwrite=True)
    with pytest.raises(InputError, match="32x20; expected a square map"):
        read_convergence_map(path, target_size=None)


def test_configured_pixel_scale_must_agree_with_the_headers(tmp_path):
    put(tmp_path, FID_DIR, "WLconv_z1.00_0001r.fits", random_map(1, 32), LENSTOOLS)
    assert load_maps(tmp_path, redshift=1.0, target_size=32, pixel_arcmin=3.5 * 60 / 32).pixel_arcmin == \
        pytest.approx(6.5625)
    with pytest.raises(InputError, match=r"header gives 6.562 arcmin per pixel but cosmology.data.pixel_arcmin=0.41"):
        load_maps(tmp_path, redshift=1.0, target_size=32, pixel_arcmin=0.41)


def test_values_unlike_convergence_and_header_units_are_warned(tmp_path, caplog):
    for r in (1, 2):  # S/N-like maps (sigma 1) with a unit in the header
        put(tmp_path, FID_DIR, f"WLconv_z1.00_{r:04d}r.fits", random_map(r) * 50, {"BUNIT": "sigma"})
    with caplog.at_level("WARNING"):
        load_maps(tmp_path, redshift=1.0, target_size=32)
    assert "median standard deviation of the maps is 1" in caplog.text and "not shear, S/N" in caplog.text
    assert "header unit(s) ['sigma']" in caplog.text
    assert "2 of 2 files give no pixel scale in the header (ANGLE or WCS CDELT); using assumed" in caplog.text
    caplog.clear()
    small_tree(tmp_path / "ok")
    with caplog.at_level("WARNING"):
        load_maps(tmp_path / "ok", redshift=1.0, target_size=32, pixel_arcmin=1.0)
    assert caplog.text == ""


def test_trees_without_maps_say_what_was_found_and_what_to_provide(tmp_path):
    (tmp_path / "kappaTNG").mkdir()
    (tmp_path / "kappaTNG" / "sample_map.hdf5").write_bytes(b"\x89HDF\r\n\x1a\n")
    with pytest.raises(InputError, match=r"convert other formats.*found: kappaTNG \(neither a MassiveNuS"):
        load_maps(tmp_path, redshift=1.0, target_size=32)
    path = tmp_path / "t.fits"
    fits.HDUList([fits.PrimaryHDU(), fits.BinTableHDU.from_columns([fits.Column("K", "E", array=np.ones(4))])]
                 ).writeto(path)
    with pytest.raises(InputError, match="no image data .*HEALPix"):
        read_convergence_map(path, target_size=None)


def test_one_cosmology_is_refused_by_the_ingest(tmp_path):
    from awd.config import validate
    from awd.domain import get_domain

    small_tree(tmp_path / "raw", folders=(FID_DIR,), realisations=(1, 2, 3, 4))
    dom = get_domain("cosmology", "domains.cosmology")
    cfg = validate({"data": {"source": "files", "root": str(tmp_path / "raw"), "target_size": 32,
                             "split": [0.5, 0.25, 0.25]}}, dom.schema_path, where="cosmology")
    with pytest.raises(InputError, match="one cosmology only; predicting Omega_m needs maps of at least 2"):
        dom.ingest(cfg, tmp_path / "raw", tmp_path / "data")
    assert not (tmp_path / "data").exists()
