"""Checkers of notebook 04 (LCKD, part 2: cross-modal knowledge distillation). Each computes its expected answer
from what the notebook passes (its tables, its tensors) or with the package's own function, never from a number
typed here."""

import numpy as np
import torch

from ..constants import COMBINATIONS, combination_name
from . import checker, is_close, is_option


@checker("04.1", hint="ET columns of `table`: LCKD-m minus baseline, row by row, then the mean over the combination "
                      "rows whose name has no 'T1ce' (leave the 'Average' row out)")
def _(answer, table, region="ET", without="T1ce", method="LCKD-m", reference="baseline"):
    names = {combination_name(p) for p in COMBINATIONS}
    rows = [r for r in table.index if r in names and without not in str(r).split("+")]
    if not rows:
        raise ValueError(f"the table has no combination rows without {without}")
    difference = table.loc[rows, (region, method)].astype(float) - table.loc[rows, (region, reference)].astype(float)
    return is_close(answer, float(difference.mean()), abs_=0.051)


@checker("04.2", hint="list the (teacher, student) pairs of teach='all': every available modality is a student of "
                      "each available teacher, the other teacher and the teacher itself included; sum |f_t - f_s|")
def _(answer, features, present, teachers=(0, 2)):
    from ..losses.lckd import cross_modal_kd_loss

    features = torch.as_tensor(features, dtype=torch.float32).reshape(1, -1, 1)
    present = torch.as_tensor(present, dtype=torch.bool).reshape(1, -1)
    expected = cross_modal_kd_loss(features, present, teachers=list(teachers), p=1, teach="all").item()
    return is_close(answer, expected, abs_=1e-4)


def _kd_cases():
    """Random features and presence masks, with a missing teacher and a sample with one modality."""
    generator = torch.Generator().manual_seed(4)
    features = torch.randn(4, 4, 3, 2, 2, generator=generator)
    present = torch.tensor([[True, True, True, True], [True, False, True, False], [False, True, False, True],
                            [False, False, True, False]])
    return features, present


@checker("04.3", hint="my_kd(features, present, teachers, teach) with features (N, M, C, *spatial): per sample, for "
                      "each present teacher and each present student (teach='students': the non-teachers; 'all': "
                      "every modality), the mean absolute difference over C and space, summed; then the mean over N")
def _(answer, teach_modes=("students", "all")):
    from ..losses.lckd import cross_modal_kd_loss

    if not callable(answer):
        return False, "the answer is a function: my_kd(features, present, teachers, teach)"
    features, present = _kd_cases()
    for teachers in ([0], [0, 2], [1, 3]):
        for teach in teach_modes:
            expected = cross_modal_kd_loss(features, present, teachers, p=1, teach=teach)
            got = torch.as_tensor(answer(features.clone(), present.clone(), list(teachers), teach), dtype=torch.float32)
            if got.shape != expected.shape or not torch.allclose(got, expected, rtol=1e-4, atol=1e-5):
                return False, (f"with teachers {teachers} and teach={teach!r} your loss differs from Eq. 4's on the "
                               "check's random features; look at missing modalities and at the reduction")
    return True


_INDEPENDENCE = "239ee3686599e189c61383c429a613f8ffe598232f13a198728bcbbb8d0182e6"  # digest("04.4", <right option>)


@checker("04.4", hint="ask what the test assumes of the values it pairs, and whether the 15 values of one case "
                      "could have come out differently from each other by chance")
def _(answer):
    return is_option("04.4", answer, _INDEPENDENCE)


@checker("04.5", hint="per seed of the baseline: 100 times the mean Dice of its rows with combination 'T1' (all cases "
                      "and regions); then the standard deviation over the seeds with ddof=1 (0 with one seed)")
def _(answer, runs, method="baseline", combination="T1"):
    tables = runs[method]
    means = np.array([100 * t[t.combination == combination].dice.astype(float).mean() for t in tables])
    if np.isnan(means).any():
        raise ValueError(f"a table of {method} has no rows for the combination {combination}")
    expected = float(means.std(ddof=1)) if len(means) > 1 else 0.0
    return is_close(answer, expected, abs_=0.051)
