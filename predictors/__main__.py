"""``python -m predictors ...`` is ``audio-score predictor ...``."""

import sys

from audio_score.cli import main

sys.exit(main(["predictor", *sys.argv[1:]]))
