import numpy as np
import pytest

from brainpred.errors import DataError
from brainpred.regions import (load_labels, read_hemi_labels, region_means, split_regions,
                               write_label_gifti)


def _hemi_labels(n=30):
    lab = np.zeros(n, dtype=int)
    lab[:10] = 1
    lab[10:25] = 2
    lab[25:28] = 5
    return lab  # 28, 29 unlabelled


def test_label_gifti_round_trip(tmp_path):
    lab = _hemi_labels()
    names = {1: "G_temp_sup", 2: "S_front_inf", 5: "Pole_occipital"}
    pl = write_label_gifti(tmp_path / "hemi-L.label.gii", lab, names)
    lab_r = lab.copy()
    lab_r[:3] = -1
    pr = write_label_gifti(tmp_path / "hemi-R.label.gii", lab_r, names)
    assert not list(tmp_path.glob(".*tmp*"))  # atomic write left nothing behind

    one, one_names = read_hemi_labels(pl)
    np.testing.assert_array_equal(one, np.where(lab > 0, lab, -1))
    assert one_names == names

    labels, all_names = load_labels(pl, pr)
    assert labels.shape == (60,)
    np.testing.assert_array_equal(labels[:30], np.where(lab > 0, lab, -1))
    np.testing.assert_array_equal(labels[30:], np.where(lab_r > 0, lab_r + 1000, -1))
    assert all_names[1] == "L G_temp_sup" and all_names[1002] == "R S_front_inf"
    assert set(all_names) == {1, 2, 5, 1001, 1002, 1005}


def test_annot_read(tmp_path):
    import nibabel.freesurfer as fs

    # index 0 'Unknown', 3 'Medial_wall' are unlabelled; -1 is unlabelled too
    idx = np.array([0, 1, 1, 2, 2, 2, 3, 3, -1, 4], dtype=np.int32)
    ctab = np.array([[25, 5, 25, 0, 0], [200, 0, 0, 0, 0], [0, 200, 0, 0, 0],
                     [0, 0, 200, 0, 0], [100, 100, 0, 0, 0]], dtype=np.int32)
    ctab[:, 4] = ctab[:, 0] + ctab[:, 1] * 256 + ctab[:, 2] * 256 ** 2
    names = [b"Unknown", b"G_front_inf-Opercular_part", b"S_temporal_sup", b"Medial_wall",
             b"G_pariet_inf-Angular"]
    for h in "lr":
        fs.write_annot(str(tmp_path / f"{h}h.aparc.a2009s.annot"), idx, ctab, names,
                       fill_ctab=False)
    labels, nm = load_labels(tmp_path / "lh.aparc.a2009s.annot",
                             tmp_path / "rh.aparc.a2009s.annot")
    np.testing.assert_array_equal(labels[:10], [-1, 1, 1, 2, 2, 2, -1, -1, -1, 4])
    np.testing.assert_array_equal(labels[10:], [-1, 1001, 1001, 1002, 1002, 1002, -1, -1, -1,
                                                1004])
    assert nm == {1: "L G_front_inf-Opercular_part", 2: "L S_temporal_sup",
                  4: "L G_pariet_inf-Angular", 1001: "R G_front_inf-Opercular_part",
                  1002: "R S_temporal_sup", 1004: "R G_pariet_inf-Angular"}


def test_load_labels_errors_name_file(tmp_path):
    good = write_label_gifti(tmp_path / "L.label.gii", _hemi_labels(), {1: "a", 2: "b", 5: "c"})
    with pytest.raises(DataError, match="missing.label.gii"):
        load_labels(good, tmp_path / "missing.label.gii")
    bad = tmp_path / "corrupt.label.gii"
    bad.write_text("not xml at all")
    with pytest.raises(DataError, match="corrupt.label.gii"):
        load_labels(bad, good)
    bad_annot = tmp_path / "rh.bad.annot"
    bad_annot.write_bytes(b"\x00\x01")
    with pytest.raises(DataError, match="rh.bad.annot"):
        load_labels(good, bad_annot)


def test_region_means_tidy():
    labels = np.array([1, 1, 2, 2, 2, -1, 1001])
    names = {1: "L a", 2: "L b", 1001: "R a"}
    v = np.array([1.0, 3.0, 2.0, np.nan, 4.0, 100.0, np.nan])
    df = region_means(v, labels, names)
    assert list(df.columns) == ["region", "label", "hemi", "n_vertices", "value"]
    assert df["region"].tolist() == ["L a", "L b", "R a"]
    np.testing.assert_allclose(df["value"].to_numpy(), [2.0, 3.0, np.nan])
    assert df["hemi"].tolist() == ["L", "L", "R"]
    assert df["n_vertices"].tolist() == [2, 3, 1]

    v2 = np.stack([v, 2 * v])  # (n_d, V)
    df2 = region_means(v2, labels, names, dims=["distance"], coords={"distance": [0, 8]},
                       value_name="F")
    assert len(df2) == 6 and list(df2.columns[:2]) == ["distance", "region"]
    row = df2[(df2.distance == 8) & (df2.region == "L b")]
    np.testing.assert_allclose(row["F"].to_numpy(), [6.0])
    df3 = region_means(np.zeros((2, 3, 7)), labels, names)
    assert len(df3) == 18 and {"dim0", "dim1"} <= set(df3.columns)


def test_split_regions_small_mesh():
    rng = np.random.default_rng(0)
    n = 1300
    coords = np.column_stack([rng.normal(size=n), rng.uniform(-50, 50, n), rng.normal(size=n)])
    labels = np.full(n, -1)
    labels[:1100] = 7     # 1100 vertices -> 3 slabs (367, 367, 366)
    labels[1100:1250] = 3  # 150 vertices -> stays whole
    new, new_names = split_regions(labels, coords, names={7: "L big", 3: "L small"},
                                   max_size=500)
    assert (new[1250:] == -1).all()
    assert new_names == {1: "L small", 2: "L big [1/3]", 3: "L big [2/3]", 4: "L big [3/3]"}
    np.testing.assert_array_equal(np.unique(new[1100:1250]), [1])
    sizes = [int((new == k).sum()) for k in (2, 3, 4)]
    assert sorted(sizes) == [366, 367, 367] and sum(sizes) == 1100
    assert max(sizes) <= 500
    # slabs are contiguous along y and ordered posterior -> anterior
    y = coords[:, 1]
    for a, b in [(2, 3), (3, 4)]:
        assert y[new == a].max() <= y[new == b].min()
    # every original vertex keeps belonging to a part of its region
    assert set(np.unique(new[:1100])) == {2, 3, 4}
    with pytest.raises(ValueError):
        split_regions(labels, coords[:, :2])


def test_hemi_paths_bids_and_freesurfer():
    from brainpred.errors import ConfigError
    from brainpred.regions import hemi_paths

    assert hemi_paths("/data/", "label/{fs_hemi}.aparc.a2009s.annot") == [
        "/data/label/lh.aparc.a2009s.annot", "/data/label/rh.aparc.a2009s.annot"]
    assert hemi_paths("/data", "x_hemi-{hemi}.label.gii") == ["/data/x_hemi-L.label.gii",
                                                              "/data/x_hemi-R.label.gii"]
    assert hemi_paths("/data", "/abs/{hemi}.gii")[0] == "/abs/L.gii"
    assert hemi_paths("/data", "") == []
    with pytest.raises(ConfigError, match="fs_hemi"):
        hemi_paths("/data", "{hemisphere}.annot")


def _destrieux_like():
    # 2 hemispheres x 10 vertices along y; FreeSurfer-style Destrieux names
    names_h = {1: "S_temporal_sup", 2: "G_temp_sup-G_T_transv", 3: "G_front_inf-Triangul_part",
               4: "G_front_inf-Opercular_part", 5: "G_pariet_inf-Angular"}
    lab = np.array([1, 1, 1, 1, 2, 3, 4, 5, 5, -1])
    labels = np.concatenate([lab, np.where(lab > 0, lab + 1000, -1)])
    names = {k: f"L {v}" for k, v in names_h.items()}
    names.update({k + 1000: f"R {v}" for k, v in names_h.items()})
    y = np.arange(10, dtype=float)
    coords = np.column_stack([np.zeros(20), np.concatenate([y, y]), np.zeros(20)])
    return labels, names, coords


def test_key_regions_from_destrieux_names():
    from brainpred.regions import key_region_labels

    labels, names, coords = _destrieux_like()
    key, key_names = key_region_labels(labels, names, coords)
    inv = {v: k for k, v in key_names.items()}
    assert set(inv) == {"Heschl", "aSTS", "pSTS", "IFG", "angular"}  # no supramarginal label
    # STS = vertices 0..3 (y = 0..3): posterior half 0, 1; anterior half 2, 3 (both hemis)
    np.testing.assert_array_equal(np.flatnonzero(key == inv["pSTS"]), [0, 1, 10, 11])
    np.testing.assert_array_equal(np.flatnonzero(key == inv["aSTS"]), [2, 3, 12, 13])
    np.testing.assert_array_equal(np.flatnonzero(key == inv["IFG"]), [5, 6, 15, 16])
    np.testing.assert_array_equal(np.flatnonzero(key == inv["Heschl"]), [4, 14])
    assert key[9] == -1


def test_atlas_levels_split_and_bilateral():
    from brainpred.regions import atlas_levels

    labels, names, coords = _destrieux_like()
    levels = atlas_levels(labels, names, coords, max_size=2)
    parcel, parcel_names = levels["parcel"]
    # STS (4 vertices) -> 2 slabs per hemisphere, posterior first
    sts = [k for k, v in parcel_names.items() if v.startswith("L S_temporal_sup")]
    assert [parcel_names[k] for k in sts] == ["L S_temporal_sup [1/2]", "L S_temporal_sup [2/2]"]
    np.testing.assert_array_equal(np.flatnonzero(parcel == sts[0]), [0, 1])
    bil, bil_names = levels["bilateral"]
    k = {v: i for i, v in bil_names.items()}["S_temporal_sup"]
    np.testing.assert_array_equal(np.flatnonzero(bil == k), [0, 1, 2, 3, 10, 11, 12, 13])
    assert "key" in levels
    no_key = atlas_levels(np.array([1, 1, 1001]), {1: "L a", 1001: "R a"}, None, max_size=0)
    assert set(no_key) == {"parcel", "bilateral"}


def test_load_coords_fsaverage5_and_freesurfer(tmp_path):
    import nibabel as nib

    from brainpred.regions import load_coords

    c = load_coords(None, n_per_hemi=10242)
    assert c.shape == (20484, 3) and np.isfinite(c).all()
    verts = np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32)
    faces = np.array([[0, 1, 2], [1, 2, 3]], dtype=np.int32)
    paths = []
    for h in ("lh", "rh"):
        paths.append(tmp_path / f"{h}.pial")
        nib.freesurfer.write_geometry(str(paths[-1]), verts, faces)
    out = load_coords(paths, n_per_hemi=4)
    np.testing.assert_allclose(out, np.concatenate([verts, verts]), rtol=1e-6)
    with pytest.raises(DataError, match="vertices per hemisphere"):
        load_coords(paths, n_per_hemi=5)
    with pytest.raises(DataError, match="not found"):
        load_coords([tmp_path / "nope.pial", paths[1]])
