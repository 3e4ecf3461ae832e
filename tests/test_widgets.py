"""The course's interactive figures (mmkd_helpers.widgets) and figure helpers (mmkd_helpers.visualisation)."""

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pytest  # noqa: E402

ipywidgets = pytest.importorskip("ipywidgets")

from mmkd_helpers.visualisation import (METHOD_COLOURS, MODALITY_COLOURS, course_style, dice_distribution,  # noqa: E402
                                        dice_heatmap, method_colour, show_predictions, tumour_box, whole_tumour_dice)
from mmkd_helpers.widgets import CAPTION_CLASS, WIDGET_CLASS, interactive_figure, overlay_browser  # noqa: E402


def _bare_figure(value):
    from matplotlib.figure import Figure

    fig = Figure(figsize=(2, 2))
    fig.subplots().plot([0, 1], [0, value])
    return fig


def test_interactive_figure_redraws_on_every_change_and_captions_after_the_picture(capsys):
    slider = ipywidgets.FloatSlider(value=1.0, min=0.0, max=3.0)
    menu = ipywidgets.Dropdown(options=["a", "b"], value="a")
    calls = []

    def render(height, name):
        calls.append((height, name))
        return _bare_figure(height)

    box = interactive_figure(render, {"height": slider, "name": menu}, title="toy", static=False)
    first = box.output.outputs[0]["data"]["image/png"]
    assert box.caption.value == "height = 1 · name = a" and calls == [(1.0, "a")]
    slider.value = 2.5
    assert calls[-1] == (2.5, "a") and box.caption.value == "height = 2.5 · name = a"
    assert box.output.outputs[0]["data"]["image/png"] != first
    menu.value = "b"
    assert calls[-1] == (2.5, "b")
    assert WIDGET_CLASS in box._dom_classes and CAPTION_CLASS in box.caption._dom_classes


def test_interactive_figure_shows_a_static_picture_for_headless_runs(monkeypatch):
    shown = []
    monkeypatch.setattr("IPython.display.display", lambda obj: shown.append(obj))
    interactive_figure(lambda v: _bare_figure(v), {"v": ipywidgets.IntSlider(value=1)}, static=True)
    assert len(shown) == 1 and shown[0].data[:8] == b"\x89PNG\r\n\x1a\n"


def test_interactive_figure_refuses_no_controls_or_a_non_widget():
    with pytest.raises(ValueError, match="at least one control"):
        interactive_figure(_bare_figure, {}, static=False)
    with pytest.raises(TypeError, match="'v' is a int"):
        interactive_figure(_bare_figure, {"v": 3}, static=False)


def test_overlay_browser_switches_combinations_and_checks_its_input():
    truth = np.zeros((20, 20), dtype=np.uint8)
    truth[5:10, 5:10] = 2
    predictions = {"baseline": {"FLAIR": truth * 0, "FLAIR+T1": truth},
                   "LCKD-m": {"FLAIR": truth, "FLAIR+T1": truth}}
    box = overlay_browser(np.random.default_rng(0).random((20, 20)), truth, predictions, static=False)
    menu = box.controls["modalities"]
    assert menu.value == "FLAIR+T1" and box.caption.value == "available modalities: FLAIR+T1"
    before = box.output.outputs[0]["data"]["image/png"]
    menu.value = "FLAIR"
    assert box.caption.value == "available modalities: FLAIR" and box.output.outputs[0]["data"]["image/png"] != before
    with pytest.raises(ValueError, match="has combinations"):
        overlay_browser(truth, truth, {"a": {"FLAIR": truth}, "b": {"T1": truth}}, static=False)


def test_whole_tumour_dice_and_the_tumour_box_by_hand():
    truth = np.zeros((10, 10), dtype=int)
    truth[2:4, 2:4] = 1  # 4 voxels
    predicted = np.zeros_like(truth)
    predicted[3:5, 2:4] = 4  # 4 voxels, 2 shared: Dice = 2*2/8 = 50 %
    assert whole_tumour_dice(predicted, truth) == pytest.approx(50.0)
    assert whole_tumour_dice(truth * 0, truth * 0) == 100.0
    assert tumour_box(truth, predicted, margin=1) == (slice(1, 6), slice(1, 5))
    assert tumour_box(truth * 0) == (slice(0, 10), slice(0, 10))


def test_show_predictions_has_a_legend_of_the_labels_and_dice_in_the_titles():
    truth = np.zeros((30, 30), dtype=int)
    truth[10:15, 10:15] = 2
    fig = show_predictions(np.ones((30, 30)), truth, {"model": truth}, title="t")
    assert [t.get_text() for t in fig.legends[0].get_texts()] == ["NCR/NET (1)", "edema (2)", "enhancing (4)"]
    assert "WT Dice 100 %" in fig.axes[1].get_title() and "zoomed" in fig._suptitle.get_text()
    assert fig.axes[0].images[0].get_array().shape == (5 + 12, 5 + 12)  # the 5x5 tumour and a margin of 6


def test_course_colours_are_fixed_and_methods_with_suffixes_share_their_colour():
    assert list(MODALITY_COLOURS) == ["FLAIR", "T1", "T1ce", "T2"] and len(set(MODALITY_COLOURS.values())) == 4
    assert method_colour("LCKD-m (α = 0.1)") == METHOD_COLOURS["LCKD-m"]
    assert method_colour("MetaKD bi-level") == METHOD_COLOURS["MetaKD bi-level"] != METHOD_COLOURS["MetaKD"]
    course_style()
    assert matplotlib.rcParams["axes.titlesize"] == 11


def test_seaborn_figures_label_their_axes_and_carry_a_colour_bar():
    rng = np.random.default_rng(0)
    results = pd.DataFrame({"combination": np.repeat(["FLAIR", "T1"], 20), "method": ["baseline", "LCKD-m"] * 20,
                            "region": "WT", "dice": rng.random(40)})
    fig = dice_distribution(results, region="WT")
    ax = fig.axes[0]
    assert ax.get_ylabel() == "WT Dice (%)" and ax.get_xlabel() == "combination"
    table = pd.DataFrame(rng.random((3, 2)) * 100, index=["FLAIR", "T1", "FLAIR+T1"],
                         columns=pd.MultiIndex.from_tuples([("ET", ""), ("WT", "")]))
    fig = dice_heatmap(table)
    assert len(fig.axes) == 2 and fig.axes[1].get_ylabel() == "Dice (%)"  # the colour bar
