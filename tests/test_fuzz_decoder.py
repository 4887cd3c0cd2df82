"""Fuzzing the decoder: mutated real files of every format through ``decode_audio``, both backends.

The only outcomes allowed are samples that keep the decoder's promises or one of the documented decode errors
(:class:`AudioError` subclasses: undecodable, empty, too large). Any other exception, a hang past the deadline or
a crash of the process fails. Profiles and mutations are in fuzzing.py; ``make fuzz`` runs this for longer.
"""

from __future__ import annotations

import pytest
from fuzzing import RATE, check_samples, examples, mutated_media
from hypothesis import example, given

from audio_score.audio import decode_audio
from audio_score.errors import AudioError
from audio_score_tools.crafted import wav_bytes

MAX_SECONDS = 5.0


def decode_or_refuse(data: bytes, backend: str) -> None:
    try:
        samples = decode_audio(data, sampling_rate=RATE, max_seconds=MAX_SECONDS, backend=backend)  # type: ignore[arg-type]
    except AudioError:
        return
    check_samples(samples, MAX_SECONDS)


# Inputs that once escaped as other exceptions (a 500 in the router); kept as regression examples.
@example(case=("crafted", wav_bytes(rate=2**31 - 1)))  # resampled to zero samples: numpy's ValueError
@example(case=("crafted", wav_bytes(bits=0)))  # no decoder, no codec context: AttributeError
@example(case=("crafted", wav_bytes(format_tag=0x1234)))
@given(case=mutated_media())
@examples(ci=1200)
def test_pyav_decodes_or_refuses_every_mutation(case: tuple[str, bytes]) -> None:
    decode_or_refuse(case[1], "pyav")


@example(case=("crafted", wav_bytes(rate=2**31 - 1)))
@given(case=mutated_media())
@examples(ci=250)
@pytest.mark.timeout(600)
def test_pydub_decodes_or_refuses_every_mutation(case: tuple[str, bytes]) -> None:
    decode_or_refuse(case[1], "pydub")
