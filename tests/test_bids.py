"""results/ as a BIDS-derivatives dataset: every file name the workflow plans follows the BIDS
entity order (brainpred.derivatives), maps carry their hemisphere and a JSON sidecar."""

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from brainpred import derivatives, io

REPO = Path(__file__).resolve().parents[1]


def _planned_files(workdir, *config, overlays=()):
    """The files a run of the demo config (and ``overlays``, config files read after it) would
    write (``snakemake --summary``: no job runs)."""
    (workdir / "config.yaml").write_text((REPO / "config" / "config.yaml").read_text())
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    proc = subprocess.run([sys.executable, "-m", "snakemake", "--snakefile",
                           str(REPO / "Snakefile"), "--directory", str(workdir),
                           "--configfile", str(workdir / "config.yaml"),
                           *(str(REPO / "config" / o) for o in overlays), "--summary",
                           *(("--config", *config) if config else ())],
                          cwd=workdir, env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return sorted({line.split("\t")[0] for line in proc.stdout.splitlines()
                   if line.startswith("results/")})


def test_every_planned_file_name_follows_the_bids_entity_order(tmp_path):
    files = _planned_files(tmp_path, "noise_ceiling={enabled: true}")
    names = {Path(f).name for f in files}
    # every output kind of the demo, the noise ceiling and the analyses included
    assert "dataset_description.json" in names
    assert any(n.startswith("fit-s001to008seq") for n in names)
    assert any("_hemi-L_space-fsaverage5_desc-noiseceiling_statmap.func.gii" in n
               for n in names)
    assert len(files) > 150
    bad = []
    for f in files:
        if Path(f).name in ("dataset_description.json",):
            continue                          # BIDS top-level files
        try:
            derivatives.check_name(f)
        except ValueError as err:
            bad.append(str(err))
    assert not bad, bad[:10]
    # hemi before space in every map (BIDS order), as fMRIPrep names its surface files
    maps = [n for n in names if n.endswith(".func.gii")]
    assert maps and all(n.index("_hemi-") < n.index("_space-") for n in maps)
    # the tables and the paper comparison are keyed by model and layer
    assert any(f.startswith("results/tables/model-tinygpt2_layer-8_desc-paper_comparison")
               for f in files)
    assert all("/model-tinygpt2_layer-8/" in f for f in files
               if "/group/" in f or "/scores/" in f or "/analyses/" in f or "/figures/" in f)


def test_the_beyond_the_paper_outputs_follow_the_entity_order_too(tmp_path):
    """config/beyond.yaml: banded penalty, nuisance, partition, variants and three models."""
    files = _planned_files(tmp_path, overlays=("beyond.yaml",))
    names = {Path(f).name for f in files}
    for analysis in ("variants", "partition", "models"):
        assert any(f"_desc-{analysis}regions_stats.tsv" in n for n in names), analysis
    assert any("_hemi-L_space-fsaverage5_desc-unique_statmap.func.gii" in n for n in names)
    assert any(f.startswith("results/features/model-tinyllama/") for f in files)
    assert any("desc-models_comparison" in n for n in names)
    bad = []
    for f in files:
        if Path(f).name == "dataset_description.json":
            continue
        try:
            derivatives.check_name(f)
        except ValueError as err:
            bad.append(str(err))
    assert not bad, bad[:10]


@pytest.mark.parametrize("name, match", [
    ("sub-001_space-fsaverage5_hemi-L_desc-x_statmap.func.gii", "not in the BIDS order"),
    ("sub-001_desc-x_layer-8_statmap.func.gii", "not in the BIDS order"),
    ("sub-001_colour-red_statmap.func.gii", "unknown entities"),
    ("sub-001_model-tiny-gpt2_statmap.func.gii", "not an entity-label pair"),
    ("sub-001_hemi-L_desc-x.func.gii", "needs a suffix"),
    ("sub-001_desc-a_desc-b_statmap.func.gii", "repeated"),
])
def test_names_out_of_order_or_not_bids_are_refused(name, match):
    with pytest.raises(ValueError, match=match):
        derivatives.check_name(name)


def test_names_in_order_are_accepted():
    for name in ["sub-001_task-pieman_run-1_hemi-L_space-fsaverage6_desc-clean_bold.func.gii",
                 "group_hemi-R_space-fsaverage5_desc-forecastscore_statmap.func.gii",
                 "story-a_layer-8_desc-continuations.npz", "fit-s001to008seq0a1b2c_desc-x.npz",
                 "model-gpt2_layer-8_desc-paper_comparison.tsv", "report.html"]:
        derivatives.check_name(name)
    assert derivatives.ENTITIES.index("hemi") < derivatives.ENTITIES.index("space")
    assert derivatives.ENTITIES[-1] == "desc"


def test_surface_maps_carry_their_hemisphere_and_a_sidecar(tmp_path):
    """Workbench places a GIfTI by AnatomicalStructurePrimary; nilearn reads one column per
    data array; the sidecar says what the values are and the distance of each array."""
    from nilearn.surface import load_surf_data
    import nibabel as nib

    maps = np.arange(3 * 8, dtype=np.float32).reshape(3, 8)
    paths = [tmp_path / f"group_hemi-{h}_space-fsaverage5_desc-forecastscore_statmap.func.gii"
             for h in "LR"]
    io.write_surface_maps(*paths, maps, [f"mean forecast score d={d}" for d in (0, 5, 10)])
    for path, structure, half in zip(paths, ("CortexLeft", "CortexRight"),
                                     (slice(0, 4), slice(4, 8))):
        img = nib.load(path)
        assert img.meta["AnatomicalStructurePrimary"] == structure
        assert [d.meta["AnatomicalStructurePrimary"] for d in img.darrays] == [structure] * 3
        np.testing.assert_array_equal(load_surf_data(str(path)), maps[:, half].T)
        sidecar = json.loads(path.with_name(path.name.replace(".func.gii", ".json"))
                             .read_text())
        assert sidecar["Distances"] == [0, 5, 10] and sidecar["DistanceUnits"] == "words"
        assert sidecar["AnatomicalStructurePrimary"] == structure
        assert "F(d)" in sidecar["Description"] and sidecar["Units"]
        assert sidecar["DataArrays"][1] == "mean forecast score d=5"
    # a name that is not BIDS (a library user's own file) still gets its hemisphere
    io.write_surface_maps(tmp_path / "a.func.gii", tmp_path / "b.func.gii", maps[:1], ["x"])
    assert nib.load(tmp_path / "b.func.gii").meta["AnatomicalStructurePrimary"] == "CortexRight"
    assert "Distances" not in json.loads((tmp_path / "a.json").read_text())


def test_dataset_description_is_a_derivative_with_version_and_config_hash(tmp_path):
    from brainpred.stages.dataset import make_dataset_description

    cfg = {"dataset": {"source": "local", "root": "/data/narratives"}, "stats": {"fdr_q": 0.01}}
    out = tmp_path / "dataset_description.json"
    make_dataset_description(cfg, "0.1.0", out)
    desc = json.loads(out.read_text())
    assert desc["DatasetType"] == "derivative" and desc["BIDSVersion"]
    (gen,) = desc["GeneratedBy"]
    assert gen["Name"] == "brainpred" and gen["Version"] == "0.1.0"
    assert gen["ConfigHash"] == derivatives.config_hash(cfg)
    assert desc["SourceDatasets"][0]["URL"].startswith("https://openneuro.org")
    other = {**cfg, "stats": {"fdr_q": 0.05}}
    assert derivatives.config_hash(other) != gen["ConfigHash"]
    # key order does not change the hash
    assert derivatives.config_hash(dict(reversed(list(cfg.items())))) == gen["ConfigHash"]


def test_the_readme_documents_the_entity_order():
    text = (REPO / "README.md").read_text()
    assert "BIDS-derivatives" in text
    assert ", ".join(derivatives.CUSTOM_ENTITIES) in text
