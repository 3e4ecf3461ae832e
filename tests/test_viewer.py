"""The interactive slice viewer, driven programmatically (no kernel, no browser: tests/test_browser.py
drives it in a real one): the controls change the caption and the image, and nothing piles up."""

import base64
import io
import subprocess
import sys

import numpy as np
import pytest

from mmkd_helpers.phantom import generate_case
from mmkd_helpers.viewer import LABEL_COLOURS, caption_text, default_slice, slice_viewer

SIZE = 32


@pytest.fixture(scope="module")
def case():
    return generate_case(0, size=SIZE)


@pytest.fixture
def viewer(case):
    return slice_viewer(case.images.astype("float32"), case.label, static=False)


def _png(box) -> bytes:
    (out,) = box.output.outputs
    assert out["output_type"] == "display_data"
    return base64.b64decode(out["data"]["image/png"])


def _pixels(box) -> np.ndarray:
    import matplotlib.image

    return matplotlib.image.imread(io.BytesIO(_png(box)), format="png")


def test_initial_view_is_the_slice_with_most_tumour_and_the_caption_says_so(case, viewer):
    counts = (case.label > 0).sum(axis=(0, 1))
    assert counts.max() > 0
    expected = int(np.argmax(counts))
    assert viewer.slider.value == expected
    assert viewer.slider.max == SIZE - 1
    assert viewer.caption.value == f"slice {expected} / {SIZE} · FLAIR"
    assert _png(viewer).startswith(b"\x89PNG")


def test_default_slice_without_labels_is_the_middle_and_follows_the_axis(case):
    assert default_slice(None, 2, 31) == 15
    label = np.zeros((5, 6, 7), np.uint8)
    label[3, 1, 2] = 4
    label[3, 2, 2] = 1
    label[1, 4, 6] = 2
    assert [default_slice(label, axis, n) for axis, n in zip(range(3), label.shape)] == [3, 1, 2]
    box = slice_viewer(case.images, None, axis=1, static=False)
    assert box.slider.value == SIZE // 2 and box.labels.disabled and not box.labels.value


@pytest.mark.parametrize("move", [1, -3])
def test_moving_the_slider_changes_caption_and_image(viewer, move):
    before_caption, before_png = viewer.caption.value, _png(viewer)
    k = viewer.slider.value + move
    viewer.slider.value = k
    assert viewer.caption.value == caption_text(k, SIZE, "FLAIR") == f"slice {k} / {SIZE} · FLAIR"
    assert viewer.caption.value != before_caption
    assert _png(viewer) != before_png


def test_modality_menu_changes_caption_and_image(viewer):
    k = viewer.slider.value
    narrow = _pixels(viewer)
    viewer.modality.value = "T1ce"
    assert viewer.caption.value == f"slice {k} / {SIZE} · T1ce"
    t1ce = _pixels(viewer)
    assert t1ce.shape == narrow.shape and not np.array_equal(t1ce, narrow)
    viewer.modality.value = "all"
    assert viewer.caption.value == f"slice {k} / {SIZE} · all"
    wide = _pixels(viewer)
    assert wide.shape[1] > 3 * narrow.shape[1]  # four panels side by side
    assert viewer.modality.options == ("FLAIR", "T1", "T1ce", "T2", "all")


def test_label_check_box_toggles_the_coloured_overlay(viewer):
    def coloured(pixels):  # saturated pixels: the grey-scale image has none, the overlay does
        rgb = pixels[..., :3]
        return int(((rgb.max(axis=-1) - rgb.min(axis=-1)) > 0.2).sum())

    assert viewer.labels.value and not viewer.labels.disabled
    with_labels = coloured(_pixels(viewer))
    viewer.labels.value = False
    without = coloured(_pixels(viewer))
    assert without == 0 < with_labels
    assert viewer.caption.value.startswith("slice ")
    viewer.labels.value = True
    assert coloured(_pixels(viewer)) == with_labels


def test_overlay_colours_are_the_brats_ones():
    """One colour table for the viewer and the notebooks' figures."""
    from mmkd_helpers import visualisation

    assert LABEL_COLOURS is visualisation.LABEL_COLOURS
    rgba = visualisation.label_overlay(np.array([[0, 1, 2, 4]]))
    assert rgba[0, 0, 3] == 0
    assert 0 < rgba[0, 1, 3] < 1  # semi-transparent
    assert tuple(rgba[0, 1, :3]) == LABEL_COLOURS[1] == (1.0, 0.0, 0.0)  # NCR/NET red
    assert rgba[0, 2, 1] > 0.5 and rgba[0, 2, 0] == 0  # ED green
    assert tuple(rgba[0, 3, :3]) == LABEL_COLOURS[4] == (1.0, 1.0, 0.0)  # ET yellow


def test_static_view_is_displayed_once_and_no_figure_piles_up(case, monkeypatch):
    import IPython.display
    import matplotlib.pyplot as plt

    shown = []
    monkeypatch.setattr(IPython.display, "display", lambda *objs, **kw: shown.extend(objs))
    figures = plt.get_fignums()
    box = slice_viewer(case.images, case.label, title="case 0")
    for k in range(3):
        box.slider.value = k
    box.modality.value = "all"
    assert len(shown) == 1 and isinstance(shown[0], IPython.display.Image)
    assert shown[0].data == _png(slice_viewer(case.images, case.label, title="case 0", static=False))
    assert plt.get_fignums() == figures
    assert "case 0" in box.children[0].value


def test_bad_inputs_are_refused_with_clear_messages(case):
    with pytest.raises(ValueError, match="M, X, Y, Z"):
        slice_viewer(case.images[0], static=False)
    with pytest.raises(ValueError, match="modality_names"):
        slice_viewer(case.images[:3], static=False)
    with pytest.raises(ValueError, match="label shape"):
        slice_viewer(case.images, case.label[:-1], static=False)
    with pytest.raises(ValueError, match="axis"):
        slice_viewer(case.images, axis=3, static=False)


def test_importing_the_viewer_stays_cheap():
    code = ("import sys, mmkd_helpers.viewer; "
            "print(sorted(m for m in ('matplotlib', 'ipywidgets', 'IPython') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
