"""Checkers of notebook 06 (ProtoKD: pixel-wise and prototype distillation).

Each checker works its expected answer out from the context the notebook passes (logits, a class map, the
students and the teacher, the notebook's comparison tables) with the package's functions.
"""

import numpy as np
import torch

from . import checker, is_close
from ..losses.protokd import class_prototypes, pixel_kd_loss, similarity_maps


@checker("06.1", hint="soften both with softmax(z / T), then Σ_c p_s(c) · log(p_s(c) / p_t(c)): the student's "
                      "distribution comes first in the printed Eq. 1; sum over the classes, do not average")
def _(answer, student, teacher, temperature):
    student, teacher = torch.as_tensor(student, dtype=torch.float32), torch.as_tensor(teacher, dtype=torch.float32)
    classes = student.shape[1]
    expected = float(pixel_kd_loss(student, teacher, temperature, form="paper")) * classes
    return is_close(answer, expected, rel=1e-3, abs_=1e-4)


@checker("06.2", hint="class_prototypes returns which classes each patch contains; absent='batch' keeps a class "
                      "only when every patch of the batch has it")
def _(answer, labels, num_classes):
    labels = torch.as_tensor(labels)
    features = torch.zeros(labels.shape[0], 1, *labels.shape[1:])
    _, present = class_prototypes(features, labels, num_classes)
    expected = {int(k) for k in torch.nonzero(present.all(dim=0)).flatten()}
    try:
        given = {int(k) for k in answer}
    except TypeError:
        return False, "answer a list of class indices, e.g. [0, 2]"
    return given == expected


@checker("06.3", hint="Eq. 2: the masked mean of the features per class (a one-hot of the class map); Eq. 3: the "
                      "cosine of every voxel's feature with every prototype (normalise both, then a dot product)")
def _(answer):
    if not callable(answer):
        return False, "the answer is a function: my_similarity_maps(features, classes, num_classes)"
    generator = torch.Generator().manual_seed(0)
    features = torch.randn(2, 5, 4, 3, 2, generator=generator)
    classes = torch.randint(0, 3, (2, 4, 3, 2), generator=generator)
    classes[:, 0, 0, 0], classes[:, 1, 0, 0], classes[:, 2, 0, 0] = 0, 1, 2  # every class in every sample
    expected = similarity_maps(features, class_prototypes(features, classes, 3)[0])
    try:
        mine = torch.as_tensor(answer(features.clone(), classes.clone(), 3), dtype=torch.float32)
    except Exception as error:  # the learner's code: say what went wrong, never stop the notebook
        return False, f"your function raised {type(error).__name__}: {error}"
    if tuple(mine.shape) != tuple(expected.shape):
        return False, f"your maps have the shape {tuple(mine.shape)}; expected (N, K, *spatial) = {tuple(expected.shape)}"
    if not torch.allclose(mine, expected, atol=1e-4):
        return False, "your maps differ from the package's: check the prototypes (Eq. 2) first, then the cosine"
    return True


def kd_directions(student, teacher, dataset, temperature: float, batch_size: int = 2) -> dict:
    """Eq. 1 in both directions ("code": KL(p_t ‖ p_s), "paper": KL(p_s ‖ p_t)) for ``student`` against ``teacher``
    (all modalities) on the first ``batch_size`` samples of ``dataset``."""
    from torch.utils.data import default_collate

    batch = default_collate([dataset[i] for i in range(batch_size)])
    device = next(student.parameters()).device
    with torch.no_grad():
        image = batch["image"].to(device)
        s_logits = student.eval()(image).logits.float()
        t_logits = teacher.eval()(image, torch.ones(image.shape[:2], dtype=torch.bool, device=device)).logits.float()
    return {form: float(pixel_kd_loss(s_logits, t_logits, temperature, form=form)) for form in ("code", "paper")}


@checker("06.4", hint="the student was trained to make KL(p_t ‖ p_s) small, not the reverse; then compute both "
                      "(pixel_kd_loss with form='code' and form='paper')")
def _(answer, student, teacher, dataset, temperature):
    answer = str(answer).strip().lower()
    if answer not in ("larger", "smaller"):
        return False, "answer 'larger' or 'smaller'"
    kd = kd_directions(student, teacher, dataset, temperature)
    return answer == ("larger" if kd["paper"] > kd["code"] else "smaller")


def margin_gain_correlation(teacher_vs, protokd_vs) -> tuple:
    """(Pearson r, number of pairs) between the teacher's margin over the unimodal student and ProtoKD's gain over
    it, per (modality, region) without the regions' mean: the ``difference`` columns of the two compare_seeds
    tables (``teacher_vs`` with a ``student`` column, ``protokd_vs`` with a ``modality`` column)."""
    margin = teacher_vs[teacher_vs.region != "mean"].set_index(["student", "region"])["difference"]
    gain = protokd_vs[protokd_vs.region != "mean"].set_index(["modality", "region"])["difference"]
    gain.index.names = margin.index.names
    both = margin.to_frame("margin").join(gain.rename("gain"), how="inner")
    return float(np.corrcoef(both["margin"], both["gain"])[0, 1]), len(both)


@checker("06.5", hint="one pair per modality and region (leave out the mean), the teacher's difference beside "
                      "ProtoKD's, then the Pearson correlation of the two columns")
def _(answer, teacher_vs, protokd_vs):
    r, _ = margin_gain_correlation(teacher_vs, protokd_vs)
    return is_close(answer, r, abs_=0.01)
