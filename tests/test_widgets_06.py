"""Notebook 06's temperature slider (mmkd_helpers.widgets.temperature_explorer and the figure it redraws)."""

import math

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

ipywidgets = pytest.importorskip("ipywidgets")

from mmkd_helpers.widgets import WIDGET_CLASS, softened_kl_map, softened_line_figure, temperature_explorer  # noqa: E402


def test_the_per_pixel_kl_by_hand_and_its_mean_is_eq_1():
    teacher = torch.tensor([math.log(3.0), 0.0]).view(2, 1, 1)  # (0.75, 0.25) at T = 1
    student = torch.zeros(2, 1, 1)  # (0.5, 0.5)
    kl, p_s, p_t, loss = softened_kl_map(student, teacher, 1.0)
    by_hand = (0.75 * math.log(0.75 / 0.5) + 0.25 * math.log(0.25 / 0.5)) / 2  # mean over the two classes
    assert kl[0, 0] == pytest.approx(by_hand, rel=1e-5) and loss == pytest.approx(by_hand, rel=1e-5)
    np.testing.assert_allclose(p_t[:, 0, 0], [0.75, 0.25], rtol=1e-6)
    # at T = 3 the teacher is 3^(1/3) : 1, closer to the student: a smaller KL
    assert softened_kl_map(student, teacher, 3.0)[3] < by_hand


def _slice(seed):
    generator = torch.Generator().manual_seed(seed)
    return 3 * torch.randn(4, 24, 20, generator=generator)


def _truth():
    truth = np.zeros((24, 20), dtype=np.uint8)
    truth[6:16, 5:14], truth[9:12, 8:11] = 2, 1
    truth[10, 9] = 4
    return truth


def test_the_figure_has_a_colour_bar_and_labels_every_axis():
    fig = softened_line_figure(_slice(1), _slice(2), 4.0, _truth(), student_name="T1 ProtoKD")
    assert len(fig.axes) == 4  # the map, its colour bar, the probabilities, the KL along the line
    assert "KL" in fig.axes[-1].get_ylabel()  # the colour bar is the last axes
    for ax in fig.axes[:3]:
        assert ax.get_xlabel() and ax.get_ylabel()


def test_moving_the_temperature_redraws_the_picture_and_the_caption():
    students = {"unimodal": _slice(1), "ProtoKD": _slice(3)}
    box = temperature_explorer(_slice(2), students, _truth(), temperature=10.0, static=False)
    assert WIDGET_CLASS in box._dom_classes
    slider = list(box.controls.values())[0]
    assert isinstance(slider, ipywidgets.FloatSlider) and box.caption.value.startswith("T = 10 · student: ProtoKD")
    before = box.output.outputs[0]["data"]["image/png"]
    slider.value = 2.0
    assert box.caption.value.startswith("T = 2 ·") and box.output.outputs[0]["data"]["image/png"] != before
    loss = softened_kl_map(students["ProtoKD"], _slice(2), 2.0)[3]
    assert box.caption.value.endswith(f"Eq. 1 on the slice = {loss:.4g}")
    box.controls["student"].value = "unimodal"
    assert "student: unimodal" in box.caption.value
    with pytest.raises(ValueError, match="at least one student"):
        temperature_explorer(_slice(2), {}, static=False)
