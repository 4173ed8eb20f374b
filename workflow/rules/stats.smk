# Group statistics across subjects: mean maps, Wilcoxon + FDR, 95% CIs, the d* map, the noise
# ceiling, and region tables (split Destrieux parcels, bilateral regions, key regions) of every
# score.


from brainpred.regions import hemi_paths as _hemi_paths

_RC = config.get("regions", {}) or {}
_LABELS = _hemi_paths(ROOT, _RC.get("labels", ""))
# surfaces for the anterior-posterior split ("" = nilearn fsaverage5, or the dataset's
# FreeSurfer fsaverage6 pial surfaces)
_SURFACE = _RC.get("surface", "") or (
    "derivatives/freesurfer/fsaverage6/surf/{fs_hemi}.pial"
    if _LABELS and int(_RC.get("split_max_size", 500) or 0) > 0 and SPACE == "fsaverage6"
    else ""
)
ATLAS_INPUTS = {
    "labels": _LABELS,
    "surface": _hemi_paths(ROOT, _SURFACE) if _LABELS else [],
}
_GROUP_MAPS = {"brain": "brainscore", "brain_fdr": "brainscorefdr", "dstar": "dstar",
               "gain": "gain", "gain_maxd": "gainmaxd"}
if NOISE_CEILING:
    _GROUP_MAPS.update(ceiling="noiseceiling", pct_ceiling="pctceiling")
GROUP_OUTPUTS = {
    "npz": f"{GROUP}/group_desc-scores.npz",
    "regions": f"{GROUP}/group_desc-regions_scores.tsv",
    "regions_stats": f"{GROUP}/group_desc-regions_stats.tsv",
    **{
        f"{key}_{h}": f"{GROUP}/group_space-{SPACE}_hemi-{h}_desc-{desc}.func.gii"
        for key, desc in _GROUP_MAPS.items()
        for h in "LR"
    },
}


rule group:
    input:
        npz=[subject_outputs(s)["npz"] for s in SUBJECTS],
        ceiling=(
            [CEILING_OUTPUTS["npz"].format(subject=s) for s in SUBJECTS]
            if NOISE_CEILING
            else []
        ),
        **ATLAS_INPUTS,
    output:
        **GROUP_OUTPUTS,
    params:
        config=config_for("stats", "noise_ceiling", "regions"),
    conda:
        "../envs/brainpred.yaml"
    log:
        f"logs/group/model-{MODEL}_layer-{LAYER}.log",
    benchmark:
        f"benchmarks/out/group/model-{MODEL}_layer-{LAYER}.tsv"
    threads: 1
    resources:
        # every subject's maps in memory: subjects x (#distances + 2) x vertices float32, x4
        mem_mb=2000
        + 4 * len(SUBJECTS) * (len(config["forecast"]["distances"]) + 2)
        * (81924 if SPACE == "fsaverage6" else 20484) * 4 // 10**6,
        runtime=10 + len(SUBJECTS) // 10,
    script:
        "../scripts/group.py"
