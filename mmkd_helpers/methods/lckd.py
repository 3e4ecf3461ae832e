"""LCKD: Learnable Cross-modal Knowledge Distillation (Wang et al., MICCAI 2023) as a method plug-in.

* Teacher election, Eqs. 1-2: every ``election_every`` steps each modality is given to the model alone
  on the election cases; per region (task) the modality with the best Dice wins (Eq. 1), and the
  winners are reduced to the teacher set T by phi (Eq. 2).
* Cross-modal KD, Eq. 4 (:func:`mmkd_helpers.losses.lckd.cross_modal_kd_loss`) at the bottleneck,
  added to the segmentation loss with weight alpha (Eq. 7).
* Missing-feature generation (Eq. 5) and the decoder (Eq. 6) are the model's
  (:class:`mmkd_helpers.models.SharedEncoderUNet`).

Where the paper and the official code differ the options choose; the
defaults follow the paper, and the comment of each option names the code's choice.
"""

import copy
from collections import Counter

import numpy as np
import pandas as pd
import torch

from ..constants import CLASS_LABELS, MODALITY_NAMES, REGION_NAMES, REGIONS
from ..evaluation import logits_to_label, predict_combinations, region_dice, region_masks
from ..losses.lckd import TEACH_MODES, cross_modal_kd_loss
from .base import Hook, Method


DICE_KINDS = ("hard", "soft")
PHI_KINDS = ("unique", "most_frequent")
ELECTION_DATA = ("val", "train")


# -- teacher election (Eqs. 1-2) ----------------------------------------------------------------------------
def region_probabilities(logits: torch.Tensor, head: str = "regions") -> torch.Tensor:
    """(3, *spatial) probabilities of ET, TC, WT from logits (C, *spatial).

    ``regions`` head: the sigmoid of each channel. ``classes`` head: softmax, then each region is the
    sum of its classes' probabilities (ET = class 3, TC = classes 1 + 3, WT = classes 1 + 2 + 3).
    """
    if head == "regions":
        return torch.sigmoid(logits)
    probs = torch.softmax(logits, dim=0)
    return torch.stack([sum(probs[CLASS_LABELS.index(v)] for v in values) for values in REGIONS.values()])


def soft_region_dice(probabilities: torch.Tensor, label) -> np.ndarray:
    """Soft Dice per region (ET, TC, WT): 2 sum(p y) / (sum(p) + sum(y) + 1), the LCKD code's election
    score: probabilities, no threshold, smoothing 1 in the denominator only."""

    truth = torch.from_numpy(region_masks(label)).float().flatten(1)
    probs = probabilities.float().flatten(1)
    return (2 * (probs * truth).sum(1) / (probs.sum(1) + truth.sum(1) + 1)).numpy()


def single_modality_dice(model, volumes, roi_size, overlap: float = 1 / 3, dice: str = "hard",
                         sw_batch_size: int = 4):
    """Dice of each modality given alone, averaged over cases: the score of LCKD (Wang et al.,
    MICCAI 2023) Eq. 1.

    ``volumes``: ``(case_id, images (M, *spatial), label)``. For every case and modality m the model
    sees only m (present = one-hot; the model fills the other bottleneck slots with f_m, Eq. 5) through
    full-volume sliding-window inference (:func:`mmkd_helpers.evaluation.predict_combinations`).

    * ``dice="hard"`` (the paper's Dice d): the thresholded, hierarchically rebuilt label map scored with
      the BraTS Dice of :func:`mmkd_helpers.evaluation.region_dice` (empty vs empty = 1).
    * ``dice="soft"`` (the code): :func:`soft_region_dice` on the probabilities.

    Both are **averaged** over cases (Eq. 1 and the code sum them; the argmax is the same, the mean
    reads as a Dice). Returns a DataFrame, index = regions (ET, TC, WT), columns = modality names.
    """

    if dice not in DICE_KINDS:
        raise ValueError(f"dice must be one of {DICE_KINDS}, got {dice!r}")
    volumes = list(volumes)
    if not volumes:
        raise ValueError("single_modality_dice needs at least one volume")
    head = model.config.head
    num_modalities = len(volumes[0][1])
    scores = np.zeros((len(REGION_NAMES), num_modalities))
    singles = [np.arange(num_modalities) == m for m in range(num_modalities)]
    for _, images, label in volumes:
        for m, logits in enumerate(predict_combinations(model, images, singles, roi_size, overlap, sw_batch_size)):
            if dice == "hard":
                scores[:, m] += region_dice(logits_to_label(logits, head), label)
            else:
                scores[:, m] += soft_region_dice(region_probabilities(logits, head), label)
    return pd.DataFrame(scores / len(volumes), index=list(REGION_NAMES), columns=list(MODALITY_NAMES[:num_modalities]))


def elect(dice_table, phi: str = "unique"):
    """Teacher election, LCKD (Wang et al., MICCAI 2023) Eqs. 1-2.

    ``dice_table``: DataFrame, index = regions (tasks), columns = modality names (as returned by
    :func:`single_modality_dice`). Returns ``(winners, teachers)``:

    * ``winners`` {region: modality index}: Eq. 1, the argmax over modalities per region; ties go to
      the lower modality index (as ``argmax`` in the code).
    * ``teachers`` sorted list of modality indices: Eq. 2 with phi = ``"unique"`` (the paper's default,
      LCKD-m: the set of distinct winners) or ``"most_frequent"`` (LCKD-s, §3.3 and Table 2: the single
      modality that wins the most regions; ties go to the lower index).
    """
    if phi not in PHI_KINDS:
        raise ValueError(f"phi must be one of {PHI_KINDS}, got {phi!r}")
    unknown = [c for c in dice_table.columns if c not in MODALITY_NAMES]
    if unknown:
        raise ValueError(f"dice table columns must be modality names {MODALITY_NAMES}, got {unknown}")
    index = [MODALITY_NAMES.index(c) for c in dice_table.columns]
    table = dice_table.iloc[:, np.argsort(index)]  # canonical order, so argmax's first maximum is the lower index
    order = sorted(index)
    winners = {str(region): order[int(np.argmax(row.to_numpy()))] for region, row in table.iterrows()}
    if phi == "unique":
        return winners, sorted(set(winners.values()))
    votes = Counter(winners.values())
    return winners, [min(m for m, n in votes.items() if n == max(votes.values()))]


def teacher_names(teachers) -> str:
    """``[0, 2]`` -> ``"FLAIR,T1ce"``."""
    return ",".join(MODALITY_NAMES[t] for t in teachers)


# -- the method -----------------------------------------------------------------------------------------------
def _check_choice(name: str, value, choices) -> None:
    if value not in choices:
        raise ValueError(f"LCKD option {name} must be one of {choices}, got {value!r}")


class LCKD(Method):
    """LCKD (Wang et al., MICCAI 2023): teacher election (Eqs. 1-2) + cross-modal KD (Eq. 4), Eq. 7.

    Options (JSON values, saved in checkpoints; paper default first, the code's choice in brackets):

    * ``alpha=0.1``: weight of the KD term (Eq. 7; the code's ``kd_wt`` is also 0.1).
    * ``p=1``: 1 = mean absolute error per pair (paper's best, the code), 2 = mean squared error.
    * ``teach="students"`` [code ``"all"``]: see :func:`~mmkd_helpers.losses.lckd.cross_modal_kd_loss`.
    * ``phi="unique"`` (LCKD-m) or ``"most_frequent"`` (LCKD-s, Table 2), Eq. 2.
    * ``election_every=500``: steps between elections (code: 5000 of 115 000); 0 never elects, so the
      teachers stay ``initial_teachers`` (a fixed-teacher ablation).
    * ``election_dice="hard"`` [code ``"soft"``]: the Dice of the election, see :func:`single_modality_dice`.
    * ``elect_at_start=False`` [code True]: also elect once in :meth:`setup`, on the untrained model. The code
      elects after its first update (iteration 0); here it is before it, so step 1 already uses the result.
    * ``election_data="val"`` [code ``"train"``]: the held-out validation cases (``trainer.val_volumes``; the
      paper holds out 20 % of the training data), or cases of the training list (the code elects on 57 cases
      that it also trains on). ``"train"`` takes the first ``len(trainer.val_volumes)``
      training volumes (all when there are no validation volumes), so both choices score the same number
      of cases and differ only in whether the model has trained on them.
    * ``initial_teachers=[0]``: the teachers until the first election (the code's ``--teachers`` default, FLAIR).
    * ``election_roi=None``: sliding-window size of the election; None takes the training crop
      (``trainer.dataset.roi_size``), the window the course evaluates with; overlap 1/3. The code uses
      80x160x160 tiles with overlap 1/3, the size of its training crop.

    State (saved in every checkpoint, so a resumed run continues exactly): ``teachers`` and
    ``election_log``, a list of ``{"step", "winners" {region: modality index}, "teachers" [indices],
    "dice" {region: {modality name: Dice}}}``, one entry per election.
    """

    name = "lckd"

    def __init__(self, alpha: float = 0.1, p: int = 1, teach: str = "students", phi: str = "unique",
                 election_every: int = 500, election_dice: str = "hard", elect_at_start: bool = False,
                 election_data: str = "val", initial_teachers=(0,), election_roi=None):
        _check_choice("p", p, (1, 2))
        _check_choice("teach", teach, TEACH_MODES)
        _check_choice("phi", phi, PHI_KINDS)
        _check_choice("election_dice", election_dice, DICE_KINDS)
        _check_choice("election_data", election_data, ELECTION_DATA)
        if election_every < 0:
            raise ValueError(f"LCKD option election_every must be >= 0, got {election_every}")
        initial_teachers = [int(t) for t in initial_teachers]
        if not initial_teachers or not all(0 <= t < len(MODALITY_NAMES) for t in initial_teachers):
            raise ValueError(f"LCKD option initial_teachers must be modality indices 0-3, got {initial_teachers}")
        self.options = {"alpha": float(alpha), "p": int(p), "teach": teach, "phi": phi,
                        "election_every": int(election_every), "election_dice": election_dice,
                        "elect_at_start": bool(elect_at_start), "election_data": election_data,
                        "initial_teachers": initial_teachers,
                        "election_roi": None if election_roi is None else [int(r) for r in election_roi]}
        self.teachers = sorted(set(initial_teachers))
        self.election_log = []

    # -- engine interface ---------------------------------------------------------------------------------
    def setup(self, trainer) -> None:
        """Checks that the election cases exist."""
        elections = self.options["election_every"] > 0 or self.options["elect_at_start"]
        if elections and self.options["election_data"] == "val" and not trainer.val_volumes:
            raise ValueError("LCKD elects teachers on validation cases (election_data='val'), "
                             "but the trainer was given no val_volumes")

    def start(self, trainer) -> dict | None:
        """With ``elect_at_start`` (the official code), elect at step 0, on the untrained model."""
        return self.run_election(trainer, step=0) if self.options["elect_at_start"] else None

    def loss_terms(self, model, batch: dict, output) -> dict:
        """``{"kd": alpha * Eq. 4}`` on the per-modality bottleneck features before filling (Eq. 7)."""
        kd = cross_modal_kd_loss(output.bottleneck, batch["present"], self.teachers, p=self.options["p"],
                                 teach=self.options["teach"])
        return {"kd": self.options["alpha"] * kd}

    def hooks(self) -> list:
        every = self.options["election_every"]
        return [Hook(every=every, fn=self.run_election, name="teacher election")] if every else []

    def state_dict(self) -> dict:
        return {"teachers": list(self.teachers), "election_log": copy.deepcopy(self.election_log)}

    def load_state_dict(self, state: dict) -> None:
        self.teachers = list(state["teachers"])
        self.election_log = copy.deepcopy(list(state["election_log"]))

    # -- the election ------------------------------------------------------------------------------------
    def run_election(self, trainer, step: int) -> dict:
        """Run the teacher election (Eqs. 1-2) on ``trainer.model``, update ``self.teachers``, log it.

        Returns the history columns: ``teachers`` (e.g. ``"FLAIR,T1ce"``) and ``elect_<region>_<modality>``
        (the single-modality Dice table, flattened).
        """
        table = single_modality_dice(trainer.model, self.election_volumes(trainer), self.election_roi(trainer),
                                     dice=self.options["election_dice"])
        winners, self.teachers = elect(table, self.options["phi"])
        dice = {region: {modality: float(v) for modality, v in row.items()} for region, row in table.iterrows()}
        self.election_log.append({"step": int(step), "winners": winners, "teachers": list(self.teachers), "dice": dice})
        flat = {f"elect_{region}_{modality}": v for region, row in dice.items() for modality, v in row.items()}
        return {"teachers": teacher_names(self.teachers), **flat}

    def election_volumes(self, trainer) -> list:
        """``(case_id, images, label)`` of the election cases (see the ``election_data`` option)."""
        if self.options["election_data"] == "val":
            return list(trainer.val_volumes)
        volumes = trainer.dataset.volumes[:len(trainer.val_volumes) or None]
        return [(f"train{i}", images, label) for i, (images, label) in enumerate(volumes)]

    def election_roi(self, trainer) -> tuple:
        """The sliding window of the election: the option if set, else the training crop (the window the
        course evaluates with, so that the election scores what the evaluation will score)."""
        if self.options["election_roi"] is not None:
            return tuple(self.options["election_roi"])
        return tuple(trainer.dataset.roi_size)
