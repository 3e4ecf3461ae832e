"""Checkers of notebook 08 (Mind the Gap, part 2: the students). Each works its expected answer out from the
context the notebook passes (the package's functions, the students' per-seed Dice tables)."""

import numpy as np
import pandas as pd
import torch

from . import checker, is_close


@checker("08.1", hint="softmax of the teacher's logits / T (p_t) and log-softmax of the student's (log p_s) over "
                      "the class dimension 1; p_t (log p_t − log p_s), then the mean over every element, no T²")
def _(answer, seed=0):
    from ..losses.protokd import pixel_kd_loss

    if not callable(answer):
        return False, "set answer to your function itself (answer = my_kd), not to a value"
    generator = torch.Generator().manual_seed(seed)
    for shape, temperature in (((2, 4, 3, 3), 10.0), ((1, 4, 2, 2, 2), 2.0), ((3, 2, 5), 1.0)):
        student, teacher = torch.randn(shape, generator=generator), 3 * torch.randn(shape, generator=generator)
        mine = answer(student.clone(), teacher.clone(), temperature)
        if mine is None:
            return False, "your function returns None: write its body"
        mine = torch.as_tensor(mine, dtype=torch.float32)
        if mine.numel() != 1:
            return False, f"your function returns {mine.numel()} values: reduce to the mean over every element"
        expected = pixel_kd_loss(student, teacher, temperature, form="code")
        if not torch.allclose(mine.reshape(()), expected, rtol=1e-4, atol=1e-7):
            reverse = pixel_kd_loss(student, teacher, temperature, form="paper")
            if torch.allclose(mine.reshape(()), reverse, rtol=1e-4, atol=1e-7):
                return False, "that is KL(student ‖ teacher), the paper's printed direction; the course distils the other"
            return False, "your KD differs from the package's on random logits; check the temperature and the mean"
    return True


def _student_verdicts(tables, aligned, unaligned, alpha=0.05):
    """Per modality: the verdict of the aligned teacher's student against the unaligned teacher's, region "mean",
    with the p-values of all modalities adjusted together by Holm."""
    from ..evaluation import compare_seeds, holm_verdicts

    rows = [compare_seeds({unaligned: runs[unaligned], aligned: runs[aligned]}, unaligned).query("region == 'mean'")
            for runs in tables.values()]
    return holm_verdicts(pd.concat(rows, ignore_index=True), alpha=alpha)["verdict"].tolist()


@checker("08.2", hint="a student counts only when its difference is beyond the seed spread AND its Holm-adjusted "
                      "p < 0.05; count the modalities where the P*_mix teacher's student is 'better'")
def _(answer, tables, aligned, unaligned):
    value = float(answer)
    if value != int(value) or not 0 <= value <= len(tables):
        return False, f"answer with a whole number of modalities, 0 to {len(tables)}"
    return int(value) == _student_verdicts(tables, aligned, unaligned).count("better")


@checker("08.3", hint="per seed: the mean over cases of each case's mean of ET, TC and WT, in %; then the sample SD "
                      "(ddof=1) of those per-seed values")
def _(answer, seed_tables):
    values = [100 * t.groupby(["case", "combination"]).dice.mean().mean() for t in seed_tables]
    if len(values) < 2:
        return False, "a seed SD needs at least two seeds; these tables hold one"
    return is_close(answer, float(np.std(values, ddof=1)), abs_=0.051)
