# Download (dataset.source: datalad): get, from the DataLad clone at dataset.root, the files
# the other rules read, before they need them. The clone and its metadata come first, outside
# the workflow, so that the DAG can be computed up front:
#     python -m brainpred.download metadata --configfile config/pieman.yaml
# (see config/README.md). One job per run (its two GIfTIs) and per story (align.csv and the
# transcript when the release has it), so a new selection only fetches what is new; the
# FreeSurfer surfaces and aparc.a2009s annotations of the space come with rule
# download_freesurfer (`snakemake download_freesurfer`, or as the input of a rule that reads
# them). Cap concurrent downloads with `--resources download=N`.

if config["dataset"]["source"] == "datalad":

    from brainpred.download import FREESURFER_FILES as _FREESURFER_FILES

    rule download_bold:
        output:
            left=gifti("{subject}", "{basename}", "L"),
            right=gifti("{subject}", "{basename}", "R"),
        params:
            root=ROOT,
            extra=[],
        log:
            "logs/download/bold/{subject}/{basename}.log",
        threads: 1
        resources:
            mem_mb=1000,
            runtime=120,
            download=1,
        script:
            "../scripts/download.py"

    rule download_story:
        output:
            align=f"{ROOT}/stimuli/gentle/{{story}}/align.csv",
        params:
            root=ROOT,
            extra=lambda w: [f"stimuli/gentle/{w.story}/transcript.txt"],
        log:
            "logs/download/story/story-{story}.log",
        threads: 1
        resources:
            mem_mb=500,
            runtime=30,
            download=1,
        script:
            "../scripts/download.py"

    rule download_freesurfer:
        output:
            [f"{ROOT}/{f.format(space=SPACE, h=h)}" for f in _FREESURFER_FILES
             for h in ("lh", "rh")],
        params:
            root=ROOT,
            extra=[],
        log:
            "logs/download/freesurfer.log",
        threads: 1
        resources:
            mem_mb=500,
            runtime=60,
            download=1,
        script:
            "../scripts/download.py"
