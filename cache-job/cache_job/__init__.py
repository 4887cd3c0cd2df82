"""The cache Job: ``audio-score cache-build`` (:mod:`cache_job.cli`), run by the chart's Indexed Job in the
predictor image. Computing an entry is the core's (:mod:`audio_score.entries`); this package adds what only the
Job needs: clip discovery, shards, batching with decode-ahead, a progress bar and a JSON summary."""
