"""How well a learner's audio supports the reference's words, read off the recogniser itself.

The transcript half of the score compares what the greedy decoder *wrote* with the reference's text. On accented
speech the greedy search goes astray at one token and never recovers ("We're meeting Maria at 5 o'clock" heard
as "May the mating mummy art soon for a clock"), so a right reading can get the text score of a wrong sentence.
Reading the reference's text through the decoder on the learner's audio (teacher forcing: one pass, no search)
asks the recogniser a narrower question: token by token, how does it rate the word that should come next against
the one it likes best there?

:func:`relative_likelihood` is the geometric mean over the text's tokens (end-of-text included) of
``p(expected token) / p(most likely token)``, each in (0, 1]: 1.0 when every expected token is the decoder's own
first choice (a clip against its own transcript gives exactly 1.0), near 0 when the audio says something else,
and no constant to tune. The geometric mean (not the arithmetic one) because the decoder, fed the reference's own
prefix, predicts function words and punctuation well whatever the audio says: averaged, those would give every
unrelated sentence a floor, as the character ratio did.

Chosen on the quality benchmark's pairs (``bench/quality_pairs.py``; the tuned-on espeak-ng set and corpus
sentences c01-c06, reported on c07-c12 as well): with ``text_sim_score`` the mean of the transcript similarity
and this score, accented readings against wrong sentences rise from AUC 0.980 to 0.994 on the held-out part.
"""

from __future__ import annotations

import math

import torch


def relative_likelihood(logits: torch.Tensor, targets: torch.Tensor, mask: torch.Tensor) -> list[float]:
    """Per row: exp(mean over the masked positions of log p(target) - max log p), in (0, 1].

    ``logits``: (rows, positions, vocabulary), the decoder's output at the positions that predict ``targets``
    (rows, positions); ``mask`` (rows, positions, bool) marks the positions that belong to the row's text (the
    rest is padding). A row with no masked position gets 0.0 (not called so by the backends).
    """
    logprobs = logits.float().log_softmax(dim=-1)
    chosen = logprobs.gather(2, targets.unsqueeze(-1)).squeeze(-1)
    gap = (chosen - logprobs.max(dim=-1).values) * mask
    counts = mask.sum(dim=-1)
    means = gap.sum(dim=-1) / counts.clamp(min=1)
    return [math.exp(m) if int(n) else 0.0 for m, n in zip(means.tolist(), counts.tolist(), strict=True)]
