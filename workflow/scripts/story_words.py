"""Rule story_words: word table and text of one story."""
from brainpred.jobs import setup_logging
from brainpred.stages.dataset import make_story_words

setup_logging(snakemake.log[0])
make_story_words(snakemake.params.root, snakemake.wildcards.story, snakemake.output.words,
                 snakemake.output.text)
