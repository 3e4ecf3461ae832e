"""Checkers of notebook 07 (mmkd_helpers/exercises/n07_pmix.py) on right and wrong answers, with small hand-made
contexts whose expected answers are worked out by hand here."""

from types import SimpleNamespace

import numpy as np
import pandas as pd
import torch

from mmkd_helpers.exercises import check, keys_of_notebook


def _said(capsys):
    return capsys.readouterr().out


def test_notebook_07_has_exactly_five_checkers():
    assert keys_of_notebook("07") == ["07.1", "07.2", "07.3", "07.4", "07.5"]


def test_07_1_accepts_a_hand_written_kl_and_refuses_wrong_ones(capsys):
    def kl(mu, logvar):  # ½ (μ² + σ² − log σ² − 1), averaged
        return (0.5 * (mu**2 + torch.exp(logvar) - logvar - 1)).mean()

    assert check("07.1", kl) and "correct" in _said(capsys)
    assert not check("07.1", lambda mu, logvar: (0.5 * (mu**2 + torch.exp(logvar) - logvar - 1)).sum())
    assert "not yet" in _said(capsys)
    # the paper's printed form with v = σ: 2 log(1/σ) + σ² + μ²/2 − 1/2
    assert not check("07.1", lambda mu, logvar: (-logvar + torch.exp(logvar) + mu**2 / 2 - 0.5).mean())
    assert not check("07.1", lambda mu, logvar: None) and "returns None" in _said(capsys)
    assert not check("07.1", 0.5) and "function itself" in _said(capsys)
    assert not check("07.1", None) and "no answer yet" in _said(capsys)


def test_07_2_the_paper_form_favours_the_anchor(capsys):
    z = torch.tensor([[0.0, 1.0, 2.0, 3.0]])[..., None, None]
    # the anchor's own distance is 0: the softmax weights move onto it, whichever modality it is
    assert check("07.2", "T1ce", latents=z, anchor=2) and "correct" in _said(capsys)
    assert check("07.2", " t1ce ", latents=z, anchor=2)
    assert check("07.2", "FLAIR", latents=z, anchor=0)
    assert not check("07.2", "T2", latents=z, anchor=2) and "not yet" in _said(capsys)
    assert not check("07.2", "PD", latents=z, anchor=2) and "modality name" in _said(capsys)
    assert not check("07.2", None, latents=z, anchor=2) and "no answer yet" in _said(capsys)


def test_07_3_the_lambda_that_balances_the_first_logged_step(capsys):
    history = pd.DataFrame({"step": [0, 1, 2], "seg": [np.nan, 2.0, 1.0], "align": [np.nan, 0.5, 0.1]})
    # λ = 1: L_align = 0.5 at the first logged step, so λ = 2.0 / 0.5 = 4
    assert check("07.3", 4.0, history=history, lam=1.0) and "correct" in _said(capsys)
    # λ = 2: the logged 0.5 is 2·L_align, L_align = 0.25, so λ = 2.0 / 0.25 = 8
    assert check("07.3", 8.0, history=history, lam=2.0)
    assert not check("07.3", 4.0, history=history, lam=2.0) and "too low" in _said(capsys)
    assert not check("07.3", 20.0, history=history, lam=1.0) and "too high" in _said(capsys)
    assert not check("07.3", None, history=history, lam=1.0) and "no answer yet" in _said(capsys)


def test_07_4_the_best_modality_on_et(capsys):
    ranking = pd.DataFrame({"WT": [55, 90, 70, 50], "TC": [65, 61, 58, 47], "ET": [20, 60, 24, 18]},
                           index=["T1ce", "FLAIR", "T2", "T1"])
    assert check("07.4", "FLAIR", ranking=ranking) and "correct" in _said(capsys)
    assert check("07.4", "flair", ranking=ranking)
    assert not check("07.4", "T1ce", ranking=ranking) and "not yet" in _said(capsys)
    assert not check("07.4", None, ranking=ranking) and "no answer yet" in _said(capsys)


class _Teacher(torch.nn.Module):
    """A stand-in shared-encoder teacher: its bottleneck feature of modality j is j·d ± 1 (one channel), so the
    gap is, by hand, the mean pairwise centroid distance (d, 2d, 3d, d, 2d, d: 5d/3) over the spread (1)."""

    def __init__(self, d):
        super().__init__()
        self.d = d
        self.dummy = torch.nn.Parameter(torch.zeros(1))
        self.config = SimpleNamespace(fusion="shared", depth=2, spatial_dims=3)

    def forward(self, image):
        signs = torch.tensor([1.0, -1.0] * 4).reshape(2, 2, 2)
        bottleneck = torch.stack([j * self.d + signs for j in range(4)])[None, :, None]  # (1, 4, 1, 2, 2, 2)
        return SimpleNamespace(features=[torch.zeros(1, 4, 1, 4, 4, 4), bottleneck])


def test_07_5_the_bottleneck_gap_ratio(capsys):
    volumes = [("case", np.ones((4, 4, 4, 4), dtype=np.float32), None)]
    teachers = {"none": _Teacher(3.0), "mixture": _Teacher(1.5)}  # gaps 5 and 2.5: ratio 0.5
    assert check("07.5", 0.5, teachers=teachers, volumes=volumes) and "correct" in _said(capsys)
    assert check("07.5", 0.505, teachers=teachers, volumes=volumes)
    assert not check("07.5", 1.0, teachers=teachers, volumes=volumes) and "too high" in _said(capsys)
    assert not check("07.5", None, teachers=teachers, volumes=volumes) and "no answer yet" in _said(capsys)

