"""Rule effective_config: the run's configuration as the workflow used it (defaults filled)."""
from brainpred.config import dump_config
from brainpred.io import atomic_write
from brainpred.jobs import setup_logging

log = setup_logging(snakemake.log[0])
with atomic_write(snakemake.output[0]) as f:
    f.write("# The effective configuration of this run: the config file(s) and --config\n"
            "# overrides, every other key at its schema default (workflow/schemas/).\n"
            "# Runtime-only keys (batch sizes, device, backend, download jobs) are those of\n"
            "# the run that wrote this file: changing them alone changes no result.\n")
    f.write(dump_config(snakemake.config))
log.info("wrote %s", snakemake.output[0])
