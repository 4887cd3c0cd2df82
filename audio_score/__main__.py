import sys

from audio_score.cli import main

sys.exit(main())
