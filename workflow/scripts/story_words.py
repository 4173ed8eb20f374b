"""Rule story_words: word table and text of one story."""
from brainpred.pipeline import make_story_words
from brainpred.workflow import setup_logging

setup_logging(snakemake.log[0])
make_story_words(snakemake.params.root, snakemake.wildcards.story, snakemake.output.words,
                 snakemake.output.text)
