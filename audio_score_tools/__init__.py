"""Tools around the product, not part of it, and in none of its images: ``audio-score up`` (everything on one
machine), the ``score`` client, starting/stopping subcommands (:mod:`audio_score_tools.procs`), and for tests, the
demo and benchmarks: tiny real-format models, the CTranslate2 -> transformers Whisper converter, media files,
ready workspaces. It builds on the core and the services; nothing in them imports it."""
