"""Checkers of notebook 10 (MetaKD on AV-MNIST): the asymmetry of the weighted pulls (Eq. 5), a prediction of what
noise in one modality does to the importance weights, and whether a little audio in training helps."""

import math

import numpy as np

from . import checker, is_close

_DIRECTIONS = ("higher", "lower")
_VERDICTS = ("better", "tie", "worse")


@checker("10.1", hint="in Eq. 5 modality j learns from i with the weight w_i / w_j: compare the weight of "
                      "'audio learns from image' with the weight of 'image learns from audio'")
def _(answer, weights):
    image, audio = (float(w) for w in weights)
    return is_close(answer, (image / audio) / (audio / image), rel=1e-3)


@checker("10.2", hint="predict before you look, then think about the meta step: which feature, scaled up, lowers "
                      "the validation loss when the audio is noisy?")
def _(answer, w_clean, w_noisy):
    prediction = str(answer).strip().lower()
    if prediction not in _DIRECTIONS:
        return False, 'answer "higher" or "lower"'
    return prediction == ("higher" if w_noisy > w_clean else "lower")


@checker("10.3", hint="the course's rule: a difference of the seed means counts only beyond the seed spread, the "
                      "larger of the two SDs over seeds (ddof=1)")
def _(answer, with_audio, without_audio):
    verdict = str(answer).strip().lower()
    if verdict not in _VERDICTS:
        return False, 'answer "better", "tie" or "worse"'
    if min(len(with_audio), len(without_audio)) < 2:
        return False, "with one seed there is no spread to judge by: run with N_SEEDS of at least 2"
    spread = max(np.std(with_audio, ddof=1), np.std(without_audio, ddof=1))
    difference = float(np.mean(with_audio) - np.mean(without_audio))
    expected = ("tie" if not math.isfinite(spread) or abs(difference) <= spread
                else "better" if difference > 0 else "worse")
    return verdict == expected
