"""Notebook 05's IWV explorer (mmkd_helpers.widgets.iwv_explorer and the figure it redraws)."""

import math

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

ipywidgets = pytest.importorskip("ipywidgets")

from mmkd_helpers.widgets import WIDGET_CLASS, iwv_explorer, iwv_kd_terms, iwv_terms_figure  # noqa: E402

# two modalities of one voxel present, features 1 and 4: |f_1 - f_2| = 3 in both directions
FEATURES = torch.tensor([1.0, 4.0, 0.0, 0.0]).view(1, 4, 1)
PRESENT = torch.tensor([[True, True, False, False]])


def test_the_pair_terms_by_hand_add_up_to_the_weighted_kd_loss():
    raw = torch.log(torch.tensor([0.8, 0.2, 0.5, 0.5]))  # softmax: (0.4, 0.1, 0.25, 0.25)
    terms, weights, total = iwv_kd_terms(FEATURES, PRESENT, raw)
    np.testing.assert_allclose(weights, [0.4, 0.1, 0.25, 0.25], rtol=1e-6)
    assert terms[0, 1] == pytest.approx(4 * 3) and terms[1, 0] == pytest.approx(0.25 * 3)  # w_i / w_j times 3
    assert terms.sum() - terms[0, 1] - terms[1, 0] == 0  # no term with a missing modality, none with i = j
    assert total == pytest.approx(12.75)


def test_the_figure_labels_every_axis_and_titles_the_total():
    fig = iwv_terms_figure(FEATURES, PRESENT, [0.7, -0.7, 0.0, 0.0], reference=("uniform", [0, 0, 0, 0]))
    bars, stacks = fig.axes[:2]
    for ax in (bars, stacks):
        assert ax.get_xlabel() and ax.get_ylabel()
    # e^1.4 * 3 + e^-1.4 * 3 with the weights; 3 + 3 with uniform ones
    assert f"{3 * (math.exp(1.4) + math.exp(-1.4)):.3g}" in stacks.get_title() and "uniform: 6" in stacks.get_title()


def test_moving_the_first_slider_redraws_the_picture_and_the_caption():
    box = iwv_explorer(FEATURES, PRESENT, [0.7, -0.7, 0.0, 0.0], static=False)
    assert WIDGET_CLASS in box._dom_classes
    first = list(box.controls.values())[0]
    assert isinstance(first, ipywidgets.FloatSlider) and list(box.controls) == ["FLAIR", "T1", "T1ce", "T2"]
    assert f"ℓ_kd = {3 * (math.exp(1.4) + math.exp(-1.4)):.4g}" in box.caption.value
    before = box.output.outputs[0]["data"]["image/png"]
    first.value = -0.7  # equal raw weights for the two present modalities: 3 + 3
    assert "ℓ_kd = 6" in box.caption.value and box.output.outputs[0]["data"]["image/png"] != before


def test_the_explorer_refuses_a_weight_per_modality_too_few():
    with pytest.raises(ValueError, match="3 raw weights for 4 modalities"):
        iwv_explorer(FEATURES, PRESENT, [0.0, 0.0, 0.0], static=False)
