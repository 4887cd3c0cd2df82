"""audio-score core library: settings, decoding, model backends, reference cache, similarity.

Nothing here imports a web framework, and torch is imported only inside ``audio_score.backends``.
"""

__version__ = "0.1.0"
