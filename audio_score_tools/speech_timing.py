"""Speech with known word boundaries: festival reads a sentence and says where it put each word.

The ground truth for the word-timing benchmarks (reference word times, per-word feedback): a synthesiser knows
exactly where every word it generated starts and ends, so no human labelling and no second model is needed.
Festival is the engine because its utterance structure exposes that timing directly (the ``Word`` relation's
``word_start``/``word_end`` features, each word linked to the text token it was read from), which espeak-ng's and
flite's command lines do not. Times are reported per text token as written ("5", "o'clock", "We're"): festival
expands "5" to the word "five" and splits some tokens in several words, so a token's span runs from its first
word's start to its last word's end; punctuation tokens have no words and are dropped.

Needs Debian's ``festival`` with the ``festvox-kallpc16k``, ``festvox-kdlpc16k`` and ``festvox-us-slt-hts``
voices (the corpus script's list); :func:`festival_available` says whether they are there.
"""

from __future__ import annotations

import shutil
import subprocess
import tempfile
import wave
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import soxr

from audio_score.word_times import WordTime

#: Installed festival voices, by the name of their ``voice_*`` function without the prefix.
FESTIVAL_VOICES: tuple[str, ...] = ("kal_diphone", "ked_diphone", "cmu_us_slt_arctic_hts")
_TIMEOUT_S = 120.0


@dataclass(frozen=True)
class TimedSpeech:
    """Synthesised speech and the engine's own span of every text token (seconds from the first sample)."""

    audio: np.ndarray
    sampling_rate: int
    words: tuple[WordTime, ...]
    engine: str

    @property
    def duration_s(self) -> float:
        return len(self.audio) / self.sampling_rate


def festival_available(voice: str = FESTIVAL_VOICES[0]) -> bool:
    """True when the festival binary and ``voice`` are installed."""
    if shutil.which("festival") is None:
        return False
    return any(Path("/usr/share/festival/voices").glob(f"*/{voice}"))


def _scheme_string(text: str) -> str:
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _script(text: str, voice: str, wav: Path) -> str:
    # One line per word: the token it was read from, then its start and end. Tokens are printed by position
    # (an index per Token item) so two equal tokens in one sentence stay apart. A token's daughters are viewed in
    # the Token relation; their timing features only resolve in the Word relation, hence ``item.relation``.
    return f"""
(voice_{voice})
(set! utt (utt.synth (Utterance Text {_scheme_string(text)})))
(utt.save.wave utt {_scheme_string(str(wav))} 'riff)
(set! tokens (utt.relation.items utt 'Token))
(set! n 0)
(mapcar (lambda (tok)
  (set! n (+ n 1))
  (mapcar (lambda (d)
     (set! w (item.relation d 'Word))
     (if w (format t "W\\t%d\\t%s\\t%f\\t%f\\n" n (item.name tok) (item.feat w "word_start") (item.feat w "word_end"))))
   (item.daughters tok)))
 tokens)
"""


def _parse(stdout: str) -> tuple[WordTime, ...]:
    spans: dict[int, list] = {}
    for line in stdout.splitlines():
        parts = line.split("\t")
        if len(parts) != 5 or parts[0] != "W":
            continue
        index, token, start, end = int(parts[1]), parts[2], float(parts[3]), float(parts[4])
        if index in spans:
            spans[index][2] = end
        else:
            spans[index] = [token, start, end]
    return tuple(WordTime(token, start, max(start, end)) for token, start, end in (spans[k] for k in sorted(spans)))


def _read_wav(path: Path) -> tuple[np.ndarray, int]:
    with wave.open(str(path), "rb") as f:
        if f.getsampwidth() != 2:
            raise RuntimeError(f"festival wrote {8 * f.getsampwidth()}-bit audio; expected 16-bit")
        raw = np.frombuffer(f.readframes(f.getnframes()), dtype="<i2")
        channels, rate = f.getnchannels(), f.getframerate()
    samples = raw.reshape(-1, channels).mean(axis=1).astype(np.float32) / 32768.0
    return samples, rate


def festival_timed(text: str, voice: str = FESTIVAL_VOICES[0], sampling_rate: int = 16000) -> TimedSpeech:
    """Read ``text`` with festival's ``voice``; the audio (float32 mono at ``sampling_rate``) and every token's span.

    ``RuntimeError`` when festival fails or reports no words (the voice is missing, say).
    """
    if voice not in FESTIVAL_VOICES:
        raise ValueError(f"festival voice {voice!r}: one of {', '.join(FESTIVAL_VOICES)}")
    with tempfile.TemporaryDirectory(prefix="audio-score-festival-") as tmp:
        wav = Path(tmp) / "speech.wav"
        script = Path(tmp) / "speak.scm"
        script.write_text(_script(text, voice, wav))
        run = subprocess.run(
            ["festival", "-b", str(script)], capture_output=True, text=True, timeout=_TIMEOUT_S, check=False
        )
        if run.returncode != 0 or not wav.exists():
            raise RuntimeError(f"festival ({voice}) failed: {run.stderr.strip()[-500:]}")
        words = _parse(run.stdout)
        samples, rate = _read_wav(wav)
    if not words:
        raise RuntimeError(f"festival ({voice}) reported no word timing for {text!r}: {run.stderr.strip()[-300:]}")
    if rate != sampling_rate:
        samples = soxr.resample(samples, rate, sampling_rate).astype(np.float32)
    return TimedSpeech(audio=samples, sampling_rate=sampling_rate, words=words, engine=f"festival:{voice}")
