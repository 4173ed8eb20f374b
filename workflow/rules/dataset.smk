# Dataset: the synthetic demo dataset (when dataset.source is synthetic), the subject x story
# table (of the whole selection, of each fit and of each task), the word table of each story, and
# results/dataset_description.json (results/ is a BIDS-derivatives dataset).

if config["dataset"]["source"] == "synthetic":

    from brainpred.synthetic import output_files as _synthetic_files

    rule synthetic_dataset:
        output:
            [f"{ROOT}/{f}" for f in _synthetic_files(config)],
        params:
            root=lambda w, output: dataset_root(output[0], 0),
            # the generator's own settings only (synthetic.model, not model.*: changing the
            # analysed model, or a typo in model.name, never regenerates or deletes the dataset;
            # it shares no setting, like the TR convention or the FIR span, with the analysis)
            config=config_for("synthetic",
                              model={"context_tokens": config["model"]["context_tokens"]}),
        conda:
            "../envs/brainpred.yaml"
        log:
            "logs/synthetic_dataset.log",
        benchmark:
            "benchmarks/out/synthetic_dataset.tsv"
        threads: 1
        resources:
            mem_mb=2000,
            runtime=10,
        script:
            "../scripts/synthetic_dataset.py"


rule run_table:
    input:
        participants=f"{ROOT}/participants.tsv",
        exclude=f"{ROOT}/code/scan_exclude.json",
        bold=[gifti(r.subject, r.basename, h) for r in RUNS.itertuples() for h in ("L", "R")],
        metadata=[f for r in RUNS.itertuples() for f in run_metadata(r.subject, r.basename)],
        # the runs' lengths are checked against their stories' word timing
        align=[align_file(s) for s in STORIES],
    output:
        RUN_TABLE,
    params:
        root=lambda w, input: dataset_root(input.participants, 0),
        config=config_for("dataset", "synthetic"),
    conda:
        "../envs/brainpred.yaml"
    log:
        "logs/run_table.log",
    benchmark:
        "benchmarks/out/run_table.tsv"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    script:
        "../scripts/run_table.py"


# the same table for the subjects of one fit (the selection replaced by them, params
# fit_table_config): the input of the fit's BOLD caches and fits, so that adding or removing a
# subject reruns only the jobs of its own fit (README: incremental reruns)
rule fit_run_table:
    input:
        participants=f"{ROOT}/participants.tsv",
        exclude=f"{ROOT}/code/scan_exclude.json",
        bold=lambda w: [gifti(r.subject, r.basename, h)
                        for r in fit_runs(w.fit).drop_duplicates("basename").itertuples()
                        for h in ("L", "R")],
        metadata=lambda w: [f for r in fit_runs(w.fit).drop_duplicates("basename").itertuples()
                            for f in run_metadata(r.subject, r.basename)],
        align=lambda w: [align_file(s) for s in sorted(fit_runs(w.fit)["story"].unique())],
    output:
        fit_table("{fit}"),
    params:
        root=lambda w, input: dataset_root(input.participants, 0),
        config=lambda w: fit_table_config(w.fit),
    conda:
        "../envs/brainpred.yaml"
    log:
        "logs/run_table/{fit}.log",
    benchmark:
        "benchmarks/out/run_table/{fit}.tsv"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    script:
        "../scripts/run_table.py"


# the same table for the listeners of one task (selection: the task and its subjects, params
# task_table_config): the input of the task's listener sums and noise ceilings, so that adding
# or removing a subject reruns only the ceilings of the tasks that subject heard
rule task_run_table:
    input:
        participants=f"{ROOT}/participants.tsv",
        exclude=f"{ROOT}/code/scan_exclude.json",
        bold=lambda w: [gifti(r.subject, r.basename, h)
                        for r in TASK_RUNS[w.task].drop_duplicates("basename").itertuples()
                        for h in ("L", "R")],
        metadata=lambda w: [f for r in TASK_RUNS[w.task].drop_duplicates("basename").itertuples()
                            for f in run_metadata(r.subject, r.basename)],
        align=lambda w: [align_file(s) for s in sorted(TASK_RUNS[w.task]["story"].unique())],
    output:
        task_table("{task}"),
    params:
        root=lambda w, input: dataset_root(input.participants, 0),
        config=lambda w: task_table_config(w.task),
    conda:
        "../envs/brainpred.yaml"
    log:
        "logs/run_table/task-{task}.log",
    benchmark:
        "benchmarks/out/run_table/task-{task}.tsv"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=10,
    script:
        "../scripts/run_table.py"


rule story_words:
    input:
        align=lambda w: align_file(w.story),
        transcript=lambda w: transcript_input(w.story),
    output:
        words=words_file("{story}"),
        text=text_file("{story}"),
    params:
        root=lambda w, input: dataset_root(input.align, 3),
    conda:
        "../envs/brainpred.yaml"
    log:
        "logs/story_words/story-{story}.log",
    benchmark:
        "benchmarks/out/story_words/story-{story}.tsv"
    threads: 1
    resources:
        mem_mb=1000,
        runtime=5,
    script:
        "../scripts/story_words.py"


rule dataset_description:
    output:
        DATASET_DESCRIPTION,
    params:
        # the result-changing keys (their hash is recorded): a runtime-only edit reruns nothing
        config=config_for(*config),
        version=brainpred_version(),
    conda:
        "../envs/brainpred.yaml"
    log:
        "logs/dataset_description.log",
    localrule: True
    threads: 1
    resources:
        mem_mb=500,
        runtime=2,
    script:
        "../scripts/dataset_description.py"
