"""CME raw-data readers: the cmeAnalysis folder tree, multi-channel TIFF/OME-TIFF files,
broken inputs, and cmeAnalysis ProcessedTracks.mat / lifetimeData.mat in MAT v5 and v7.3."""
from __future__ import annotations

import logging
import math
import xml.etree.ElementTree as ET

import h5py
import numpy as np
import pandas as pd
import pytest
import scipy.io
import tifffile
from cmeanalysis_export import write_mat73
from scipy import stats

from awd.io import InputError
from domains.cme import cmeanalysis_io as cio
from domains.cme.tracking.movie_io import (Movie, interval_from_name, interval_suffix, iter_movies,
                                  read_movie, scan_cell_tree, scan_movie_files, write_cell_tree)

T, H, W = 24, 20, 28


@pytest.fixture
def movie() -> Movie:
    data = np.random.default_rng(0).integers(900, 5000, (T, 2, H, W)).astype(np.uint16)
    return Movie(data, 1.5, 0.08, "Cell1")


def _plain_tiff(path, stack, **kwargs):
    path.parent.mkdir(parents=True, exist_ok=True)
    tifffile.imwrite(path, stack, photometric="minisblack", **kwargs)
    return path


def _cell(root, cell_name, clathrin, auxilin, **kwargs):
    """A cell folder with plain (metadata-free) channel TIFFs."""
    cell = root / "cond" / cell_name
    _plain_tiff(cell / "TagRFP" / "c.tif", clathrin, **kwargs)
    _plain_tiff(cell / "EGFP" / "a.tif", auxilin, **kwargs)
    return cell


# ----------------------------------------------------------------------------- folder tree


def test_interval_from_name_follows_cmeanalysis_convention():
    assert interval_from_name("Cell1_1s") == 1.0
    assert interval_from_name("1_1.5s") == 1.5
    assert interval_from_name("Cell2_500ms") == 0.5
    assert interval_from_name("Cell3") is None
    assert interval_from_name("Cell3_1sec") is None
    for dt in (1.0, 1.5, 0.5, 2.0, 0.25):
        assert interval_from_name("Cell1_" + interval_suffix(dt)) == pytest.approx(dt)


def test_cell_tree_round_trip(tmp_path, movie):
    cell_dir = write_cell_tree(tmp_path, "A7D2", "Cell1", movie,
                               side_files={"info.json": {"a": 1}, "t.parquet": pd.DataFrame({"x": [1]})})
    second = Movie(movie.data[::-1].copy(), 1.5, 0.08, "Cell10")
    write_cell_tree(tmp_path, "A7D2", "Cell10", second)
    write_cell_tree(tmp_path, "A7D2", "Cell2", movie)
    assert cell_dir == tmp_path.resolve() / "A7D2" / "Cell1_1.5s"
    table = scan_cell_tree(tmp_path)
    assert list(table["cell"]) == ["Cell1_1.5s", "Cell2_1.5s", "Cell10_1.5s"]  # natural order
    assert list(table["interval_s"]) == [1.5, 1.5, 1.5]
    assert set(table["condition"]) == {"A7D2"}
    back = read_movie(table["cell_dir"][0])
    np.testing.assert_array_equal(back.data, movie.data)
    assert back.data.dtype == np.uint16
    assert back.frame_interval_s == 1.5 and back.pixel_size_um == pytest.approx(0.08)
    assert back.name == "Cell1_1.5s" and back.condition == "A7D2"
    assert [p.parent.name for p in back.sources] == ["TagRFP", "EGFP"]
    assert (cell_dir / "info.json").is_file() and (cell_dir / "t.parquet").is_file()
    movies = list(iter_movies(tmp_path))
    assert [m.name for m in movies] == list(table["cell"])
    np.testing.assert_array_equal(movies[2].data, second.data)


def test_frame_sequence_channel_folders_and_hidden_files(tmp_path, movie):
    cell = tmp_path / "cond" / "Cell1_2s"
    for c, folder in enumerate(("TagRFP", "EGFP")):
        for t in range(T):  # frame_10 must sort after frame_9
            _plain_tiff(cell / folder / f"frame_{t}.tif", movie.data[t, c])
        (cell / folder / "._frame_0.tif").write_bytes(b"macOS resource fork")
    back = read_movie(cell, pixel_size_um=0.1)
    np.testing.assert_array_equal(back.data, movie.data)
    assert back.frame_interval_s == 2.0 and back.pixel_size_um == 0.1


def test_missing_metadata_asks_for_the_setting(tmp_path, movie):
    cell = _cell(tmp_path, "Cell1", movie.data[:, 0], movie.data[:, 1])
    with pytest.raises(InputError, match="set cme.data.frame_interval_s") as err:
        read_movie(cell, pixel_size_um=0.08)
    assert "Cell1" in str(err.value)
    with pytest.raises(InputError, match="set cme.data.pixel_size_um"):
        read_movie(cell, frame_interval_s=1.0)
    back = read_movie(cell, frame_interval_s=1.0, pixel_size_um=0.08)
    np.testing.assert_array_equal(back.data, movie.data)
    with pytest.raises(InputError, match="positive"):
        read_movie(cell, frame_interval_s=-1.0, pixel_size_um=0.08)


def test_disagreeing_interval_raises_unless_configured(tmp_path, movie, caplog):
    cell = write_cell_tree(tmp_path, "cond", "Cell1", movie)  # ImageJ finterval 1.5
    renamed = cell.rename(cell.parent / "Cell1_2s")  # folder name says 2 s
    with pytest.raises(InputError, match="disagrees"):
        read_movie(renamed)
    with caplog.at_level(logging.WARNING):
        assert read_movie(renamed, frame_interval_s=2.0).frame_interval_s == 2.0
    assert "overrides" in caplog.text


# ----------------------------------------------------------------------------- multi-channel files


def _ome(path, data, **meta):
    tifffile.imwrite(path, data, photometric="minisblack", metadata=meta, ome=True)
    return path


@pytest.mark.parametrize("variant", ["imagej_tcyx", "imagej_tzcyx_ms", "ome_tcyx", "ome_ctyx",
                                     "ome_tzcyx_deltat"])
def test_multichannel_files_with_metadata(tmp_path, movie, variant):
    d = movie.data  # (T, C, Y, X)
    path = tmp_path / "cond" / (f"{variant}.ome.tif" if variant.startswith("ome") else f"{variant}.tif")
    path.parent.mkdir()
    if variant == "imagej_tcyx":
        tifffile.imwrite(path, d, imagej=True, resolution=(1 / 0.08, 1 / 0.08),
                         metadata={"axes": "TCYX", "unit": "micron", "finterval": 1.5})
    elif variant == "imagej_tzcyx_ms":
        tifffile.imwrite(path, d[:, None], imagej=True, resolution=(1 / 0.08, 1 / 0.08),
                         metadata={"axes": "TZCYX", "unit": "um", "finterval": 1500, "tunit": "ms"})
    elif variant == "ome_tcyx":
        _ome(path, d, axes="TCYX", PhysicalSizeX=0.08, TimeIncrement=1.5, TimeIncrementUnit="s",
             Channel={"Name": ["TagRFP", "EGFP"]})
    elif variant == "ome_ctyx":
        _ome(path, np.moveaxis(d, 1, 0).copy(), axes="CTYX", PhysicalSizeX=80,
             PhysicalSizeXUnit="nm", TimeIncrement=1500, TimeIncrementUnit="ms")
    else:
        stamps = [1.5 * t + 0.1 * c for t in range(T) for c in range(2)]
        _ome(path, d[:, None], axes="TZCYX", PhysicalSizeX=0.08, Plane={"DeltaT": stamps})
    # files without channel names need the explicit order (cme.data.channel_indices)
    named = variant == "ome_tcyx"
    if not named:
        with pytest.raises(InputError, match=r"2 unnamed channels.*cme.data.channel_indices"):
            read_movie(path)
    back = read_movie(path) if named else read_movie(path, channels=(0, 1))
    np.testing.assert_array_equal(back.data, d)
    assert back.frame_interval_s == pytest.approx(1.5)
    assert back.pixel_size_um == pytest.approx(0.08)
    assert back.name == variant and back.condition == "cond"
    table = scan_movie_files(tmp_path)
    assert list(table["cell"]) == [variant]


def test_channel_selection_resolution_units_and_z_as_time(tmp_path, movie, caplog):
    d = movie.data
    three = np.stack([d[:, 1], d[:, 0] // 2, d[:, 0]], axis=1)
    path = _ome(tmp_path / "three.ome.tif", three, axes="TCYX", PhysicalSizeX=0.1, TimeIncrement=1.0)
    with pytest.raises(InputError, match="3 unnamed channels"):
        read_movie(path)
    back = read_movie(path, channels=(2, 0))
    np.testing.assert_array_equal(back.data, d)
    with pytest.raises(InputError, match=r"channel_indices \[0, 3\] do not pick"):
        read_movie(path, channels=(0, 3))
    # ImageJ stack saved as slices: Z stands for time
    zpath = tmp_path / "zc.tif"
    tifffile.imwrite(zpath, d, imagej=True, metadata={"axes": "ZCYX"})
    with caplog.at_level(logging.WARNING):
        back = read_movie(zpath, frame_interval_s=1.0, pixel_size_um=0.08, channels=(0, 1))
    np.testing.assert_array_equal(back.data, d)
    assert "as time" in caplog.text
    # plain TIFF resolution tags in centimetres
    cell = _cell(tmp_path, "Cell1_1s", d[:, 0], d[:, 1], resolution=(1e4 / 0.107, 1e4 / 0.107),
                 resolutionunit="CENTIMETER")
    assert read_movie(cell).pixel_size_um == pytest.approx(0.107)


def test_channels_are_chosen_by_name_never_by_order(tmp_path, movie, caplog):
    """A CTYX OME-TIFF with auxilin first (['EGFP', 'TagRFP']): the names decide."""
    d = movie.data
    ctyx = np.stack([d[:, 1], d[:, 0]])  # C = (EGFP, TagRFP), T, Y, X
    path = _ome(tmp_path / "cell.ome.tif", ctyx, axes="CTYX", PhysicalSizeX=0.08, TimeIncrement=1.5,
                Channel={"Name": ["EGFP", "TagRFP"]})
    with tifffile.TiffFile(path) as tf:  # real OME metadata, read by another parser
        assert [c.attrib["Name"] for c in ET.fromstring(tf.ome_metadata).iter()
                if c.tag.endswith("}Channel")] == ["EGFP", "TagRFP"]
    with caplog.at_level(logging.INFO):
        back = read_movie(path)
    np.testing.assert_array_equal(back.data, d)  # channel 0 = clathrin (TagRFP)
    assert "master 'TagRFP' = channel 1" in caplog.text
    # names that contain the configured ones ('EGFP-Aux1'), and other master/slave names
    path2 = _ome(tmp_path / "cell2.ome.tif", ctyx, axes="CTYX", PhysicalSizeX=0.08, TimeIncrement=1.5,
                 Channel={"Name": ["EGFP-Aux1", "CLTA-TagRFP"]})
    np.testing.assert_array_equal(read_movie(path2).data, d)
    np.testing.assert_array_equal(read_movie(path2, master="EGFP", slave="TagRFP").data, d[:, ::-1])
    # explicit indices agree with the names or stop; unmatched names stop with the list
    np.testing.assert_array_equal(read_movie(path, channels=(1, 0)).data, d)
    with pytest.raises(InputError, match="disagree with the channel names"):
        read_movie(path, channels=(0, 1))
    with pytest.raises(InputError, match=r"channels \['EGFP', 'TagRFP'\], none matching cme.data.master 'Cy3'"):
        read_movie(path, master="Cy3", slave="GFP")
    np.testing.assert_array_equal(read_movie(path, master="Cy3", slave="GFP", channels=(1, 0)).data, d)
    # ImageJ hyperstacks: slice labels repeating every channel name
    ij = tmp_path / "ij.tif"
    tifffile.imwrite(ij, ctyx.swapaxes(0, 1).copy(), imagej=True, resolution=(1 / 0.08, 1 / 0.08),
                     metadata={"axes": "TCYX", "unit": "um", "finterval": 1.5, "Labels": ["EGFP", "TagRFP"] * T})
    np.testing.assert_array_equal(read_movie(ij).data, d)


def test_iter_movies_mixed_layouts_and_empty_root(tmp_path, movie):
    write_cell_tree(tmp_path, "tree", "Cell1", movie)
    (tmp_path / "files").mkdir()
    _ome(tmp_path / "files" / "m1.ome.tif", movie.data, axes="TCYX", PhysicalSizeX=0.08,
         TimeIncrement=1.5, Channel={"Name": ["TagRFP", "EGFP"]})
    names = [(m.condition, m.name) for m in iter_movies(tmp_path)]
    assert names == [("tree", "Cell1_1.5s"), ("files", "m1")]
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="no movies found"):
        list(iter_movies(tmp_path / "empty"))
    with pytest.raises(InputError, match="no cell folders"):
        scan_cell_tree(tmp_path / "empty")


# ----------------------------------------------------------------------------- broken inputs


def _expect(path_fragment, call, match):
    with pytest.raises(InputError, match=match) as err:
        call()
    assert path_fragment in str(err.value), str(err.value)
    return err.value


def test_broken_files_name_the_file(tmp_path, movie):
    d = movie.data
    cell = write_cell_tree(tmp_path, "c", "Cell1", movie)
    tiff = next((cell / "EGFP").glob("*.tif"))
    raw = tiff.read_bytes()
    tiff.write_bytes(raw[: len(raw) // 2])
    _expect(tiff.name, lambda: read_movie(cell), "truncated|damaged|unreadable")
    tiff.write_bytes(b"")
    _expect(tiff.name, lambda: read_movie(cell), "empty")
    tiff.write_text("not a tiff at all")
    _expect(tiff.name, lambda: read_movie(cell), "unreadable")
    # a truncated plain (metadata-free) TIFF
    bad_cell = _cell(tmp_path / "r", "Cell1_1s", d[:, 0], d[:, 1])
    plain = bad_cell / "EGFP" / "a.tif"
    raw = plain.read_bytes()
    plain.write_bytes(raw[: len(raw) // 2])
    _expect("a.tif", lambda: read_movie(bad_cell, pixel_size_um=1), "truncated|damaged|unreadable")
    _expect("nothere", lambda: read_movie(tmp_path / "nothere"), "no such")


@pytest.mark.filterwarnings("ignore:.*zero-size array")
@pytest.mark.parametrize("case", ["shape", "frames", "too_few", "zero", "one_channel",
                                  "multi_page_pair", "rgb"])
def test_inconsistent_movies(tmp_path, movie, case):
    d = movie.data
    c, a = d[:, 0], d[:, 1]
    opts = dict(frame_interval_s=1.0, pixel_size_um=0.08)
    if case == "shape":
        cell = _cell(tmp_path, "Cell1", c, a[:, :-2])
        _expect("Cell1", lambda: read_movie(cell, **opts), "shapes differ")
    elif case == "frames":
        cell = _cell(tmp_path, "Cell1", c, a[:-3])
        err = _expect("Cell1", lambda: read_movie(cell, **opts), "frame counts differ")
        assert "c.tif" in str(err) and "a.tif" in str(err)
    elif case == "too_few":
        cell = _cell(tmp_path, "Cell1", c[:5], a[:5])
        _expect("c.tif", lambda: read_movie(cell, **opts), "5 frames, fewer than the minimum 20")
        assert read_movie(cell, min_frames=5, **opts).n_frames == 5
    elif case == "zero":
        cell = _cell(tmp_path, "Cell1", np.zeros((0, H, W), np.uint16), a)
        _expect("c.tif", lambda: read_movie(cell, **opts), "zero frames")
    elif case == "one_channel":
        path = _ome(tmp_path / "one.ome.tif", c, axes="TYX", PhysicalSizeX=0.08, TimeIncrement=1.0)
        _expect("one.ome.tif", lambda: read_movie(path), "no channel axis")
    elif case == "multi_page_pair":
        cell = _cell(tmp_path, "Cell1", c, a)
        _plain_tiff(cell / "EGFP" / "b.tif", a)
        _expect("a.tif", lambda: read_movie(cell, **opts), "one multi-page TIFF")
    else:
        path = tmp_path / "rgb.tif"
        tifffile.imwrite(path, np.zeros((T, H, W, 3), np.uint16), photometric="rgb")
        cell = tmp_path / "cond" / "Cell9"
        (cell / "TagRFP").mkdir(parents=True)
        (cell / "EGFP").mkdir()
        (cell / "TagRFP" / "rgb.tif").write_bytes(path.read_bytes())
        _plain_tiff(cell / "EGFP" / "a.tif", a)
        _expect("rgb.tif", lambda: read_movie(cell, **opts), "RGB")


def test_float_data_policy(tmp_path, movie, caplog):
    d = movie.data
    opts = dict(frame_interval_s=1.0, pixel_size_um=0.08)
    cell = _cell(tmp_path, "Cell1", d[:, 0].astype(np.float32), d[:, 1])
    with caplog.at_level(logging.WARNING):
        back = read_movie(cell, **opts)
    np.testing.assert_array_equal(back.data, d)
    assert "float32 pixel data (converted exactly to uint16) are not raw camera counts" in caplog.text
    assert "cme.labels.aux_thresh" in caplog.text and "amplitudes" in caplog.text
    # 8-bit and contrast-stretched uint16 data: accepted, with the same warning
    for name, data in (("u8", (d[:, 0] // 64).astype(np.uint8)), ("stretched", np.interp(
            d[:, 0], (d[:, 0].min(), d[:, 0].max()), (0, 65535)).round().astype(np.uint16))):
        caplog.clear()
        cell = _cell(tmp_path / name, "Cell1", data, d[:, 1])
        with caplog.at_level(logging.WARNING):
            read_movie(cell, **opts)
        assert caplog.text.count("are not raw camera counts") == 1, name
        assert ("uint8 pixel data" if name == "u8" else "contrast-stretched") in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        read_movie(_cell(tmp_path / "raw", "Cell1", d[:, 0], d[:, 1]), **opts)
    assert "camera counts" not in caplog.text
    fractional = d[:, 0].astype(np.float32) + 0.5
    cell = _cell(tmp_path / "b", "Cell1", fractional, d[:, 1])
    _expect("c.tif", lambda: read_movie(cell, **opts), "not integral")
    negative = d[:, 0].astype(np.int32) - 2000
    cell = _cell(tmp_path / "c", "Cell1", negative, d[:, 1])
    _expect("c.tif", lambda: read_movie(cell, **opts), "outside the uint16")
    nan = d[:, 0].astype(np.float32)
    nan[0, 0, 0] = np.nan
    cell = _cell(tmp_path / "d", "Cell1", nan, d[:, 1])
    _expect("c.tif", lambda: read_movie(cell, **opts), "NaN")


def test_folders_without_expected_channels(tmp_path, movie):
    d = movie.data
    only = tmp_path / "a" / "cond" / "Cell1_1s"
    _plain_tiff(only / "TagRFP" / "c.tif", d[:, 0])
    _expect("Cell1_1s", lambda: scan_cell_tree(tmp_path / "a"), "lacks the channel folder 'EGFP'")
    _expect("Cell1_1s", lambda: read_movie(only, pixel_size_um=1), "slave channel folder 'EGFP'")
    wrong = tmp_path / "b" / "cond" / "Cell2_1s"
    _plain_tiff(wrong / "RFP" / "c.tif", d[:, 0])
    _plain_tiff(wrong / "GFP" / "a.tif", d[:, 1])
    _expect("Cell2_1s", lambda: scan_cell_tree(tmp_path / "b"), "neither channel folder")
    assert len(scan_cell_tree(tmp_path / "b", master="RFP", slave="GFP")) == 1
    empty = tmp_path / "c" / "cond" / "Cell3_1s"
    (empty / "TagRFP").mkdir(parents=True)
    _plain_tiff(empty / "EGFP" / "a.tif", d[:, 1])
    _expect("TagRFP", lambda: scan_cell_tree(tmp_path / "c"), "no .tif")
    misplaced = tmp_path / "d" / "TagRFP"
    misplaced.mkdir(parents=True)
    _expect("TagRFP", lambda: scan_cell_tree(tmp_path / "d"), "two levels higher")


# ----------------------------------------------------------------------------- MAT writers


def _to_scipy(value):
    """Plain Python (dict = struct, list of dicts = struct array, list = cell) -> savemat input."""
    if isinstance(value, dict):
        return _struct_array([value])
    if isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
        return _struct_array(value)
    if isinstance(value, list):
        out = np.empty((1, len(value)), dtype=object)
        for i, v in enumerate(value):
            out[0, i] = _to_scipy(v)
        return out
    return value


def _struct_array(elements):
    names = list(elements[0])
    out = np.empty((1, len(elements)), dtype=[(n, "O") for n in names])
    for i, el in enumerate(elements):
        for n in names:
            out[0, i][n] = _to_scipy(el[n])
    return out


def write_mat5(path, variables):
    scipy.io.savemat(path, {k: _to_scipy(v) for k, v in variables.items()})


WRITERS = {"v5": write_mat5, "v73": write_mat73}


def _processed_tracks():
    """Two cmeAnalysis tracks: a complete one with a gap and buffers; a compound one."""
    rng = np.random.default_rng(1)

    def per_frame(n, base):
        return np.round(base + rng.normal(0, 10, (2, n)), 3)

    f1 = np.array([[6.0, 7, 8, 9]])
    buffer = lambda frames: {"t": frames - 1.0, "f": frames, "x": per_frame(5, 20), "y": per_frame(5, 30),
                             "A": per_frame(5, 100), "c": per_frame(5, 500), "A_pstd": per_frame(5, 50),
                             "c_pstd": per_frame(5, 5), "sigma_r": per_frame(5, 300),
                             "SE_sigma_r": per_frame(5, 30), "pval_Ar": rng.random((2, 5))}
    msd = np.full((1, 10), np.nan)
    msd[0, :3] = [0.1, 0.4, 0.3]
    track1 = {"t": f1 - 1, "f": f1, "x": per_frame(4, 20), "y": per_frame(4, 30), "A": per_frame(4, 1500),
              "c": per_frame(4, 500), "A_pstd": per_frame(4, 150), "c_pstd": per_frame(4, 5),
              "sigma_r": per_frame(4, 300), "SE_sigma_r": per_frame(4, 30), "pval_Ar": rng.random((2, 4)),
              "isPSF": np.array([[1.0, 1, np.nan, 1], [0, 1, np.nan, 1]]),
              "gapVect": np.array([[0.0, 0, 1, 0]]), "gapStatus": np.array([[4.0]]),
              "gapIdx": [np.array([[3.0]])],
              "nSeg": np.array([[1.0]]), "visibility": np.array([[1.0]]), "lifetime_s": np.array([[4.0]]),
              "start": np.array([[6.0]]), "end": np.array([[9.0]]),
              "startBuffer": buffer(np.array([[1.0, 2, 3, 4, 5]])),
              "endBuffer": buffer(np.array([[10.0, 11, 12, 13, 14]])),
              "MotionAnalysis": {"totalDisplacement": np.array([[1.25]]), "MSD": msd, "MSDstd": msd},
              "catIdx": np.array([[1.0]]), "isCCP": np.array([[1.0]]),
              "significantMaster": np.array([[1.0], [0.0]]), "significantSlave": np.array([[0.0], [1.0]])}
    f2 = np.array([[3.0, 4, 5, np.nan, 4, 5, 6]])
    sep = lambda a: np.where(np.isnan(f2), np.nan, a)
    track2 = {k: (sep(per_frame(7, 10 * i + 1)) if isinstance(v, np.ndarray) and v.shape == (2, 4) else v)
              for i, (k, v) in enumerate(track1.items())}
    track2.update({"t": f2 - 1, "f": f2, "isPSF": sep(np.ones((2, 7))), "gapVect": np.zeros((1, 7)),
                   "gapStatus": np.zeros((0, 0)), "gapIdx": [], "nSeg": np.array([[2.0]]),
                   "visibility": np.array([[2.0]]), "lifetime_s": np.array([[4.0]]),
                   "start": np.array([[3.0]]), "end": np.array([[6.0]]), "startBuffer": np.zeros((0, 0)),
                   "endBuffer": np.zeros((0, 0)), "MotionAnalysis": np.zeros((0, 0)),
                   "catIdx": np.array([[7.0]]), "isCCP": np.array([[0.0]])})
    return [track1, track2]


def _tracks_path(root, version):
    path = root / "A7D2" / "Cell3_1s" / "TagRFP" / "Tracking" / "ProcessedTracks.mat"
    path.parent.mkdir(parents=True)
    return path


@pytest.mark.parametrize("version", ["v5", "v73"])
def test_processed_tracks_round_trip(tmp_path, version):
    tracks = _processed_tracks()
    path = _tracks_path(tmp_path, version)
    WRITERS[version](path, {"tracks": tracks, "processingInfo": {"procFlag": np.array([[1.0, 1.0]])}})
    assert h5py.is_hdf5(path) == (version == "v73")
    tables = cio.read_processed_tracks(path)
    tr, det = tables.tracks, tables.detections
    assert list(tr["track_id"]) == [1, 2]
    assert set(tr["cell"]) == {"Cell3_1s"} and set(tr["condition"]) == {"A7D2"}
    assert list(tr["start_frame"]) == [5, 2] and list(tr["end_frame"]) == [8, 5]
    assert list(tr["n_frames"]) == [4, 4] and list(tr["catIdx"]) == [1, 7]
    assert list(tr["nSeg"]) == [1, 2] and list(tr["visibility"]) == [1, 2]
    assert tr["msd_max"][0] == 0.4 and tr["total_displacement"][0] == 1.25
    assert np.isnan(tr["msd_max"][1]) and np.isnan(tr["total_displacement"][1])
    assert list(tr["isCCP"]) == [True, False] and list(tr["n_gaps"]) == [1, 0]
    assert bool(tr["significantSlave_auxilin"][0]) and not bool(tr["significantSlave_clathrin"][0])
    assert bool(tr["significantMaster_clathrin"][0]) and not bool(tr["significantMaster_auxilin"][0])
    assert tr["mean_total_displacement"][0] == 1.25 / 4
    assert tr["A_max_auxilin"][0] == np.max(tracks[0]["A"][1])
    assert tr["A_max_clathrin"][1] == np.nanmax(tracks[1]["A"][0])
    # track 1: 5 start-buffer, 4 track and 5 end-buffer frames, values exactly as stored
    one = det[det["track_id"] == 1]
    assert list(one["part"]) == ["start_buffer"] * 5 + ["track"] * 4 + ["end_buffer"] * 5
    assert list(one["frame"]) == list(range(14))
    assert list(one["gap"]) == [False] * 7 + [True] + [False] * 6
    body = one[one["part"] == "track"]
    src = tracks[0]
    for col, field, ch in [("x", "x", 0), ("x_clathrin", "x", 0), ("y_auxilin", "y", 1)]:
        np.testing.assert_array_equal(body[col], src[field][ch] - 1.0)
    for col, field, ch in [("A_clathrin", "A", 0), ("A_auxilin", "A", 1), ("pval_Ar_auxilin", "pval_Ar", 1),
                           ("sigma_r_clathrin", "sigma_r", 0), ("isPSF_auxilin", "isPSF", 1),
                           ("c_pstd_auxilin", "c_pstd", 1)]:
        np.testing.assert_array_equal(body[col], src[field][ch])
    np.testing.assert_array_equal(body["t_s"], [5.0, 6, 7, 8])
    sb = one[one["part"] == "start_buffer"]
    np.testing.assert_array_equal(sb["A_auxilin"], src["startBuffer"]["A"][1])
    assert sb["isPSF_clathrin"].isna().all()
    # track 2: two segments split at the NaN column, no buffers
    two = det[det["track_id"] == 2]
    assert list(two["segment"]) == [1, 1, 1, 2, 2, 2]
    assert list(two["frame"]) == [2, 3, 4, 3, 4, 5]
    np.testing.assert_array_equal(two["A_clathrin"], tracks[1]["A"][0][~np.isnan(tracks[1]["f"][0])])


def test_processed_tracks_v5_and_v73_agree_and_tree_reader(tmp_path):
    tracks = _processed_tracks()
    tables = {}
    for version, writer in WRITERS.items():
        path = _tracks_path(tmp_path / version, version)
        writer(path, {"tracks": tracks})
        tables[version] = cio.read_processed_tracks(path)
    pd.testing.assert_frame_equal(tables["v5"].tracks, tables["v73"].tracks)
    pd.testing.assert_frame_equal(tables["v5"].detections, tables["v73"].detections)
    # read through the folder tree (needs both channel folders)
    for version in WRITERS:
        tifffile.imwrite(tmp_path / version / "A7D2" / "Cell3_1s" / "TagRFP" / "m.tif",
                         np.zeros((3, 8, 8), np.uint16), photometric="minisblack")
        (tmp_path / version / "A7D2" / "Cell3_1s" / "EGFP").mkdir()
        tifffile.imwrite(tmp_path / version / "A7D2" / "Cell3_1s" / "EGFP" / "m.tif",
                         np.zeros((3, 8, 8), np.uint16), photometric="minisblack")
    tree = cio.read_cmeanalysis_tree(tmp_path / "v73")
    pd.testing.assert_frame_equal(tree.detections, tables["v73"].detections)
    with pytest.raises(InputError, match="lifetimeData.mat"):
        cio.read_cmeanalysis_tree(tmp_path / "v73", source="lifetimeData")


def _lifetime_data():
    rng = np.random.default_rng(2)
    nf, n_all = 30, 5
    cat = np.array([[1.0], [2], [1], [1], [5]])
    lengths = np.array([[4.0], [3], [6], [5], [7]])
    start = np.array([[6.0], [2], [10], [20], [3]])
    nt = int((cat == 1).sum())
    A = np.full((nt, nf, 2), np.nan)
    A_pstd, sigma_r, SE = A.copy(), A.copy(), A.copy()
    gap = np.zeros((nt, nf), dtype=bool)
    for k, length in enumerate(lengths[cat == 1].astype(int)):
        A[k, :length] = rng.uniform(-100, 2500, (length, 2))
        A_pstd[k, :length] = rng.uniform(80, 250, (length, 2))
        sigma_r[k, :length] = rng.uniform(250, 400, (length, 2))
        npx = rng.integers(60, 130, (length, 2))
        SE[k, :length] = sigma_r[k, :length] / np.sqrt(2 * (npx - 1))
    gap[0, 2] = True
    return {"lifetime_s": lengths * 1.5, "trackLengths": lengths, "start": start, "catIdx": cat,
            "index": np.arange(1.0, n_all + 1)[:, None],
            "significantMaster": np.array([[1.0, 0], [1, 1], [0, 0], [1, 0], [1, 1]]),
            "significantSlave": np.array([[0.0, 1], [0, 0], [0, 1], [1, 0], [0, 0]]),
            "A": A, "A_pstd": A_pstd, "sigma_r": sigma_r, "SE_sigma_r": SE,
            "sbA": rng.uniform(0, 300, (nt, 5, 2)), "ebA": rng.uniform(0, 300, (nt, 5, 2)),
            "sbSigma_r": rng.uniform(250, 400, (nt, 5, 2)), "ebSigma_r": rng.uniform(250, 400, (nt, 5, 2)),
            "gapMat_Ia": gap}


@pytest.mark.parametrize("version", ["v5", "v73"])
def test_lifetime_data_round_trip(tmp_path, version):
    data = _lifetime_data()
    path = tmp_path / "C" / "Cell1_1s" / "TagRFP" / "Analysis" / "lifetimeData.mat"
    path.parent.mkdir(parents=True)
    WRITERS[version](path, data)
    tables = cio.read_lifetime_data(path)
    tr, det = tables.tracks, tables.detections
    assert list(tr["start_frame"]) == [5, 1, 9, 19, 2]
    assert list(tr["end_frame"]) == [8, 3, 14, 23, 8]
    assert list(tr["catIdx"]) == [1, 2, 1, 1, 5] and list(tr["lifetime_s"]) == [6, 4.5, 9, 7.5, 10.5]
    assert list(tr["significantSlave_auxilin"]) == [True, False, True, False, False]
    np.testing.assert_array_equal(tr["A_max_clathrin"][[0, 2, 3]], np.nanmax(data["A"][:, :, 0], axis=1))
    assert tr["A_max_clathrin"][[1, 4]].isna().all()
    assert set(det["track_id"]) == {1, 3, 4}
    body = det[det["part"] == "track"]
    assert len(body) == 4 + 6 + 5 and len(det) == len(body) + 3 * 10
    k = 1  # second category-1 track = track 3, frames 9..14
    rows = body[body["track_id"] == 3]
    assert list(rows["frame"]) == list(range(9, 15))
    np.testing.assert_array_equal(rows["A_auxilin"], data["A"][k, :6, 1])
    np.testing.assert_array_equal(rows["t_s"], np.arange(9, 15) * 1.5)
    sb = det[(det["track_id"] == 3) & (det["part"] == "start_buffer")]
    assert list(sb["frame"]) == list(range(4, 9))
    np.testing.assert_array_equal(sb["A_clathrin"], data["sbA"][k, :, 0])
    assert det.loc[(det["track_id"] == 1) & (det["frame"] == 7), "gap"].item()
    # pval_Ar: cmeAnalysis' Welch test of A > k sigma_r, checked against scipy's Welch t-test
    npx = np.round((rows["sigma_r_auxilin"] / rows["SE_sigma_r_auxilin"]) ** 2 / 2 + 1).to_numpy()
    kk = stats.norm.ppf(0.975)
    ref = stats.ttest_ind_from_stats(rows["A_auxilin"], rows["A_pstd_auxilin"], npx,
                                     kk * rows["sigma_r_auxilin"], kk * rows["SE_sigma_r_auxilin"], npx,
                                     equal_var=False, alternative="greater").pvalue
    np.testing.assert_allclose(rows["pval_Ar_auxilin"], ref, rtol=1e-9)
    pvals = body["pval_Ar_auxilin"].to_numpy()
    assert np.any(pvals < 0.05) and np.any(pvals > 0.5)  # the test case spans both outcomes


def test_amplitude_pvalue_hand_case():
    # npx = 81 (SE = sigma_r / sqrt(160)); A exactly at k sigma_r gives p = 1/2
    k = stats.norm.ppf(0.975)
    sigma_r, se = 300.0, 300.0 / math.sqrt(160)
    assert cio.amplitude_pvalue(k * sigma_r, 150.0, sigma_r, se) == pytest.approx(0.5)
    big = cio.amplitude_pvalue(3000.0, 150.0, sigma_r, se)
    assert big < 1e-20


@pytest.mark.parametrize("version", ["v5", "v73"])
def test_broken_mat_files_name_the_file(tmp_path, version):
    path = tmp_path / "ProcessedTracks.mat"
    WRITERS[version](path, {"tracks": _processed_tracks()})
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 3])
    _expect("ProcessedTracks.mat", lambda: cio.read_processed_tracks(path), "unreadable MAT")
    path.write_text("hello")
    _expect("ProcessedTracks.mat", lambda: cio.read_processed_tracks(path), "unreadable MAT")
    WRITERS[version](path, {"other": np.ones((2, 2))})
    _expect("ProcessedTracks.mat", lambda: cio.read_processed_tracks(path), "no 'tracks' variable")
    bad = _processed_tracks()
    del bad[0]["f"], bad[1]["f"]
    WRITERS[version](path, {"tracks": bad})
    _expect("ProcessedTracks.mat", lambda: cio.read_processed_tracks(path), r"lacks the fields \['f'\]")
    WRITERS[version](path, {"lifetime_s": np.ones((3, 1))})
    _expect("ProcessedTracks.mat", lambda: cio.read_lifetime_data(path), "missing variables")
    _expect("nothere.mat", lambda: cio.read_lifetime_data(tmp_path / "nothere.mat"), "not found")


# ----------------------------------------------------------------------------- exports as labs publish them


def test_export_fixture_lifetime_data_and_processed_tracks_agree(tmp_path):
    """The two cmeAnalysis outputs of the same tracks (MATLAB v7.3 layout, real field
    conventions: buffers without 'f', empty fields, NaN-padded matrices) give the same
    per-frame amplitudes and p-values for the category-1 tracks; the trees need no movies."""
    from cmeanalysis_export import write_cmeanalysis_export

    cells = write_cmeanalysis_export(tmp_path, n_cells=2, n_tracks=40, n_frames=90, seed=7,
                                     files=("lifetimeData", "ProcessedTracks"))
    with open(cells[0] / "TagRFP/Tracking/ProcessedTracks.mat", "rb") as fh:
        assert fh.read(19) == b"MATLAB 7.3 MAT-file"
    table, source = cio.scan_output_tree(tmp_path)
    assert source == "ProcessedTracks" and list(table["cell"]) == ["Cell1_1s", "Cell2_1s"]
    pt = cio.read_cmeanalysis_tree(tmp_path)
    lt = cio.read_cmeanalysis_tree(tmp_path, source="lifetimeData")
    assert len(pt.tracks) == len(lt.tracks) == 80
    for col in ("track_id", "start_frame", "end_frame", "n_frames", "lifetime_s", "catIdx"):
        np.testing.assert_array_equal(pt.tracks[col].to_numpy(), lt.tracks[col].to_numpy(), err_msg=col)
    # real buffers (t but no f) are placed before start / after end
    buffers = pt.detections[pt.detections["part"] != "track"]
    cat1 = pt.tracks[pt.tracks["catIdx"] == 1]
    assert len(buffers) == 10 * int((pt.tracks["visibility"] == 1).sum()) and len(cat1) > 20
    one = pt.detections[(pt.detections["cell"] == "Cell1_1s") & (pt.detections["track_id"] == cat1["track_id"].iloc[0])]
    start, end = cat1["start_frame"].iloc[0], cat1["end_frame"].iloc[0]
    assert list(one["frame"]) == list(range(start - 5, end + 6))
    np.testing.assert_array_equal(one["t_s"], one["frame"] * 1.0)
    # category-1 frames: lifetimeData (p-values recomputed) = ProcessedTracks (p-values stored)
    keys = ["cell", "track_id", "part", "frame"]
    pt_cat1 = pt.detections.merge(pt.tracks.loc[pt.tracks["catIdx"] == 1, ["cell", "track_id"]],
                                  on=["cell", "track_id"])
    both = lt.detections.merge(pt_cat1, on=keys, suffixes=("_lt", "_pt"), validate="one_to_one")
    assert len(both) == len(lt.detections) == len(pt_cat1)
    for ch in ("clathrin", "auxilin"):
        np.testing.assert_array_equal(both[f"A_{ch}_lt"], both[f"A_{ch}_pt"])
        core = both["part"] == "track"
        np.testing.assert_allclose(both.loc[core, f"pval_Ar_{ch}_lt"], both.loc[core, f"pval_Ar_{ch}_pt"], rtol=1e-9)
    assert "x" in pt.detections and "x" not in lt.detections
    np.testing.assert_array_equal(both["gap_lt"], both["gap_pt"])


def test_output_tree_without_movies_or_slave_folder_and_missing_outputs(tmp_path):
    from cmeanalysis_export import write_cmeanalysis_export

    cells = write_cmeanalysis_export(tmp_path / "a", n_cells=3, n_tracks=10, n_frames=60)
    table, source = cio.scan_output_tree(tmp_path / "a")
    assert source == "lifetimeData" and not table["missing"].any()
    (cells[1] / "TagRFP/Analysis/lifetimeData.mat").unlink()
    _expect("Cell2_1s", lambda: cio.read_cmeanalysis_tree(tmp_path / "a"),
            r"output missing for the cells \['Cell2_1s'\]")
    _expect("", lambda: cio.read_cmeanalysis_tree(tmp_path / "a", source="ProcessedTracks"),
            r"missing for the cells \['Cell1_1s', 'Cell2_1s', 'Cell3_1s'\]")
    _expect("a", lambda: cio.scan_output_tree(tmp_path / "a", master="mCherry"), "no cell folders with a 'mCherry'")
    _expect("a", lambda: cio.scan_output_tree(tmp_path / "a", condition="GAK"), "conditions: \\['A7D2'\\]")
    _expect("A7D2", lambda: cio.scan_output_tree(tmp_path / "a" / "A7D2"), "folder above it")
    _expect("Cell1_1s", lambda: cio.scan_output_tree(cells[0]), "two levels higher")
