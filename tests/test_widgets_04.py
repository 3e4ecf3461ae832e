"""Notebook 04's widget: the overlay browser of the baseline and LCKD-m over the 15 combinations of available
modalities (mmkd_helpers.widgets.overlay_browser), driven as the notebook builds it."""

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

pytest.importorskip("ipywidgets")

from mmkd_helpers.constants import COMBINATIONS, combination_name  # noqa: E402
from mmkd_helpers.widgets import WIDGET_CLASS, overlay_browser  # noqa: E402


@pytest.fixture
def browser():
    """A 24 x 24 slice with a square tumour; the baseline finds it only when T1ce is given, LCKD-m always."""
    truth = np.zeros((24, 24), dtype=np.uint8)
    truth[8:16, 8:16] = 2
    truth[10:14, 10:14] = 4
    names = [combination_name(p) for p in COMBINATIONS]
    predictions = {"baseline": {n: truth if "T1ce" in n.split("+") else np.zeros_like(truth) for n in names},
                   "LCKD-m": {n: truth for n in names}}
    image = np.random.default_rng(0).random((24, 24))
    return overlay_browser(image, truth, predictions, title="baseline vs LCKD-m", static=False), names


def test_the_browser_offers_the_15_combinations_and_opens_on_all_four(browser):
    box, names = browser
    menu = box.controls["modalities"]
    assert list(menu.options) == names and len(names) == 15
    assert menu.value == "FLAIR+T1+T1ce+T2" and box.caption.value == "available modalities: FLAIR+T1+T1ce+T2"
    assert WIDGET_CLASS in box._dom_classes


def test_moving_the_menu_redraws_the_picture_and_the_caption(browser):
    box, _ = browser
    menu = box.controls["modalities"]
    pictures = {menu.value: box.output.outputs[0]["data"]["image/png"]}
    for name in ("T1", "T1ce", "FLAIR+T2"):
        menu.value = name
        assert box.caption.value == f"available modalities: {name}"
        pictures[name] = box.output.outputs[0]["data"]["image/png"]
    # the baseline misses the tumour without T1ce: T1 and FLAIR+T2 differ from the four-modality view
    assert pictures["T1"] != pictures["FLAIR+T1+T1ce+T2"] and pictures["FLAIR+T2"] != pictures["FLAIR+T1+T1ce+T2"]
    assert len(set(pictures.values())) >= 3
