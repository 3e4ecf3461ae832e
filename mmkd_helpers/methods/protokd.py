"""ProtoKD (Shuai Wang et al., ICASSP 2023) as a plug-in to the training engine.

A full-modality teacher, trained first and then frozen, teaches a single-modality student: the engine
trains the student with its segmentation loss (Eq. 5), and this method adds α·L_kd (Eq. 1) on the logits
and β·L_proto (Eq. 4) on the last decoder features (Eq. 6: L = L_seg + α·L_kd + β·L_proto, α = 10,
β = 0.1). Every missing-modality scenario gets its own student network: no missing-feature generation,
no modality dropping -- the student simply never sees the other modalities.

``alpha=0`` and ``beta=0`` give the ablations of Table 2 (pixel-KD only, prototype-KD only), and
``inter_class=False`` the intra-class-only row of Table 3. The unimodal baseline is the plain
:class:`~mmkd_helpers.methods.base.Method` on the same single-modality network.

Where the course's ProtoKD runs differ from the official code (each has an option that restores the code's):

* **Segmentation loss (Eq. 5).** The course: MONAI's Dice + cross-entropy, Dice per sample, plain
  denominators. The code: a cross-entropy weighted per batch by w_c = 1 − n_c/N plus a soft Dice over the whole
  batch with squared denominators, background included --
  ``TrainConfig(seg_loss="protokd_code")`` (:func:`mmkd_helpers.losses.segmentation.protokd_code_loss`).
* **Students' learning-rate schedule.** The code's student trainer computes a poly schedule but never applies
  it: its students train at a constant lr (1e-3); its teacher and unimodal baseline do use poly. The course
  uses its poly schedule for every network -- ``TrainConfig(schedule="constant")`` is the code's students'.
* **Budget.** The paper trains teacher and students for the same 50 000 iterations; so does the course, with its
  own step budget for both (``checkpoints.RUNS``). Its early-fusion networks train without skip dropout.
* **KL direction (Eq. 1).** ``kd_form="code"`` (default) is KL(teacher ‖ student), the code's;
  ``kd_form="paper"`` the printed KL(student ‖ teacher).
* **Backbone.** The code's 9.4 M-parameter VNet (BatchNorm, additive skips) is the course's UNet here, so that
  all four papers share one backbone size.

Notebook 06 shows each difference and measures what the course's choices give.
"""

from pathlib import Path

import torch

from ..losses.protokd import ABSENT_POLICIES, KD_FORMS, pixel_kd_loss, prototype_kd_loss
from ..losses.segmentation import class_targets
from ..models import load_trained_model
from ..store import load_pretrained
from .base import Method


def load_teacher(source, device="cpu"):
    """A frozen teacher from a model, a shipped checkpoint name, or a training checkpoint file (``last.pt``)."""
    if isinstance(source, torch.nn.Module):
        model = source
    elif isinstance(source, (str, Path)) and Path(source).suffix == ".pt":
        model, _ = load_trained_model(source)
    elif isinstance(source, str):
        model, _ = load_pretrained(source)
    else:
        raise TypeError(f"teacher must be a model, a shipped checkpoint name or a .pt file, got {type(source).__name__}")
    model = model.to(device).eval()
    for parameter in model.parameters():
        parameter.requires_grad_(False)
    return model


class ProtoKD(Method):
    """Pixel-wise (Eq. 1) + prototype (Eq. 4) distillation from a frozen full-modality teacher (Eq. 6)."""

    name = "protokd"

    def __init__(self, teacher=None, alpha: float = 10.0, beta: float = 0.1, temperature: float = 10.0,
                 kd_form: str = "code", t_squared: bool = False, include_background: bool = True,
                 absent: str = "batch", inter_class: bool = True):
        if teacher is None:
            raise ValueError("ProtoKD needs the option teacher: a model, a shipped checkpoint name or a .pt file")
        if kd_form not in KD_FORMS:
            raise ValueError(f"protokd option kd_form must be one of {KD_FORMS}, got {kd_form!r}")
        if absent not in ABSENT_POLICIES:
            raise ValueError(f"protokd option absent must be one of {ABSENT_POLICIES}, got {absent!r}")
        for option, value in (("alpha", alpha), ("beta", beta)):
            if value < 0:
                raise ValueError(f"protokd option {option} must be >= 0, got {value!r}")
        if temperature <= 0:
            raise ValueError(f"protokd option temperature must be > 0, got {temperature!r}")
        self.teacher_source = teacher
        self.options = {"alpha": alpha, "beta": beta, "temperature": temperature, "kd_form": kd_form,
                        "t_squared": t_squared, "include_background": include_background, "absent": absent,
                        "inter_class": inter_class}
        if not isinstance(teacher, torch.nn.Module):  # a name or a path is saved, so that a resume finds it
            self.options["teacher"] = str(teacher)
        self.teacher = None

    def setup(self, trainer) -> None:
        self.teacher = load_teacher(self.teacher_source, trainer.device)
        student = trainer.model.config
        if student.head != "classes" or self.teacher.config.head != "classes":
            raise ValueError(f"ProtoKD distils class distributions: teacher and student need head='classes', "
                             f"got teacher {self.teacher.config.head!r} and student {student.head!r}")

    def loss_terms(self, model, batch: dict, output) -> dict:
        o = self.options
        with torch.no_grad():  # the teacher always sees all four modalities
            teacher = self.teacher(batch["image"], torch.ones_like(batch["present"]))
        terms = {}
        if o["alpha"]:
            terms["kd"] = o["alpha"] * pixel_kd_loss(output.logits.float(), teacher.logits.float(),
                                                     o["temperature"], o["kd_form"], o["t_squared"])
        if o["beta"]:
            classes = class_targets(batch["label"])[:, 0]
            terms["proto"] = o["beta"] * prototype_kd_loss(
                output.decoded.float(), teacher.decoded.float(), classes, model.config.out_channels,
                o["include_background"], o["absent"], o["inter_class"])
        return terms
