"""Notebook 07's t-SNE picker: mmkd_helpers.widgets.embedding_picker over precomputed embeddings, drawn by
mmkd_helpers.visualisation.embedding_figure."""

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402

ipywidgets = pytest.importorskip("ipywidgets")

from mmkd_helpers.visualisation import MODALITY_COLOURS, embedding_figure  # noqa: E402
from mmkd_helpers.widgets import WIDGET_CLASS, embedding_picker  # noqa: E402

NAMES = ["FLAIR", "T1", "T1ce", "T2"]


def _grid():
    rng = np.random.default_rng(0)
    index = np.repeat(np.arange(4), 10)
    embeddings = {(model, p): rng.normal(size=(40, 2)) + (0 if model == "A" else 5) * index[:, None]
                  for model in ("A", "B") for p in (5, 30)}
    distances = {"A": np.array([[0, 1, 2, 3], [1, 0, 1, 2], [2, 1, 0, 1], [3, 2, 1, 0]], dtype=float),
                 "B": np.full((4, 4), 0.5) - 0.5 * np.eye(4)}
    return embeddings, index, distances


def _png(box):
    return box.output.outputs[0]["data"]["image/png"]


def test_moving_the_first_control_changes_the_picture_and_the_caption():
    embeddings, index, distances = _grid()
    box = embedding_picker(embeddings, index, distances, anchor="T1ce", static=False)
    assert WIDGET_CLASS in box._dom_classes
    first_control = next(iter(box.controls.values()))
    assert isinstance(first_control, ipywidgets.Dropdown) and first_control.value == "A"
    before, caption = _png(box), box.caption.value
    assert caption == "teacher = A · anchor = T1ce · perplexity = 30"
    first_control.value = "B"
    assert _png(box) != before and box.caption.value == "teacher = B · anchor = T1ce · perplexity = 30"
    box.controls["perplexity"].value = 5
    assert box.caption.value.endswith("perplexity = 5")
    box.controls["anchor"].value = "FLAIR"
    assert "anchor = FLAIR" in box.caption.value


def test_the_picker_refuses_an_incomplete_grid_or_an_unknown_anchor():
    embeddings, index, distances = _grid()
    del embeddings["B", 5]
    with pytest.raises(ValueError, match="every model needs every perplexity"):
        embedding_picker(embeddings, index, distances, static=False)
    embeddings, index, distances = _grid()
    with pytest.raises(ValueError, match="anchor must be one of"):
        embedding_picker(embeddings, index, distances, anchor="PD", static=False)
    with pytest.raises(ValueError, match="distances cover"):
        embedding_picker(embeddings, index, {"A": distances["A"]}, static=False)
    with pytest.raises(ValueError, match="at least one embedding"):
        embedding_picker({}, index, static=False)


def test_embedding_figure_puts_the_anchor_on_top_in_its_colour_and_bars_the_distances():
    embeddings, index, _ = _grid()
    fig = embedding_figure(embeddings["A", 5], index, "toy", highlight="T2",
                           distances={"FLAIR": 3.0, "T1": 2.0, "T1ce": 1.0}, distance_limit=4.0)
    scatter, bars = fig.axes[0], fig.axes[1]
    clouds = dict(zip(NAMES, scatter.collections))
    assert clouds["T2"].get_alpha() > clouds["FLAIR"].get_alpha()
    assert clouds["T2"].get_zorder() > clouds["T1"].get_zorder()
    assert np.allclose(clouds["T1ce"].get_facecolor()[0][:3], MODALITY_COLOURS["T1ce"])
    assert [p.get_height() for p in bars.patches] == [3.0, 2.0, 1.0]
    assert bars.get_ylim() == (0.0, 4.0) and "T2" in bars.get_ylabel()
    assert scatter.get_xlabel() and bars.get_xlabel() == "modality"
    with pytest.raises(ValueError, match="highlight must be one of"):
        embedding_figure(embeddings["A", 5], index, highlight="PD")
    assert len(embedding_figure(embeddings["A", 5], index).axes) == 1
