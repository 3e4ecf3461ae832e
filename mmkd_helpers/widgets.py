"""Interactive figures for the notebooks: ipywidgets controls over a matplotlib picture, with a static fallback.

:func:`interactive_figure` is the one pattern every widget of the course follows (the slice viewer of
:mod:`mmkd_helpers.viewer` was its first instance):

* ``render(**values)`` draws a bare :class:`matplotlib.figure.Figure` for the controls' current values; it is
  rendered to PNG and written into an ``Output`` widget by replacing its ``outputs`` (one message, no flicker, and
  it works outside a kernel, so unit tests can drive the widget by setting ``control.value``).
* A caption under the picture says what is shown (``name = value · ...``); it is updated *after* the picture, so
  whoever sees the new caption also has the new picture (the browser test relies on it).
* With ``static=True`` the first view is also displayed as a plain PNG, so a notebook executed headless
  (papermill, nbval, CI) or read on the web, where widgets are not live, still shows the figure.
* The box carries the DOM class ``mmkd-widget`` and the caption ``mmkd-caption``: the browser test
  (``tests/test_browser.py``) finds every widget of a notebook by them and moves its first control.

:func:`overlay_browser` is the course's browser of predicted label maps over the 15 combinations.
ipywidgets, IPython and matplotlib are imported inside the functions: importing this module stays cheap.
"""

import base64
import io

from .visualisation import show_predictions

WIDGET_CLASS = "mmkd-widget"
CAPTION_CLASS = "mmkd-caption"


def figure_png(figure, dpi: int = 100) -> bytes:
    """The PNG bytes of a matplotlib Figure (``bbox_inches="tight"``, so nothing is cut off)."""
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight")
    return buffer.getvalue()


def default_caption(values: dict) -> str:
    """``name = value · name = value`` for the controls' values (floats to 3 significant digits)."""
    return " · ".join(f"{name} = {value:.3g}" if isinstance(value, float) else f"{name} = {value}"
                      for name, value in values.items())


def interactive_figure(render, controls: dict, title: str | None = None, caption=None, static: bool = True,
                       dpi: int = 100):
    """A widget that redraws ``render(**values)`` whenever one of ``controls`` changes.

    ``render``: a function of the controls' values (keyword arguments named as the keys of ``controls``) that
    returns a matplotlib Figure, made with ``matplotlib.figure.Figure`` (not ``pyplot``, which would show it a
    second time in a notebook). ``controls``: name -> ipywidgets value widget (``IntSlider``, ``FloatSlider``,
    ``Dropdown``, ``SelectionSlider``, ``ToggleButtons``...); the first one is the one the browser test moves.
    ``caption``: a function of the values dict returning the caption text (default :func:`default_caption`).

    Returns the ``ipywidgets.VBox``, with ``.controls`` (the dict), ``.output`` and ``.caption`` as attributes and
    ``.redraw()`` to draw again. With ``static=True`` the first view is also displayed as a plain PNG.
    """
    import ipywidgets as widgets
    from IPython.display import Image, display

    if not controls:
        raise ValueError("interactive_figure needs at least one control (name -> ipywidgets value widget)")
    for name, control in controls.items():
        if not hasattr(control, "value") or not hasattr(control, "observe"):
            raise TypeError(f"control {name!r} is a {type(control).__name__}, not an ipywidgets value widget")
    caption_of = caption or default_caption
    output = widgets.Output(layout=widgets.Layout(min_height="240px"))
    caption_widget = widgets.HTML(value="")
    caption_widget.add_class(CAPTION_CLASS)

    def values() -> dict:
        return {name: control.value for name, control in controls.items()}

    def redraw(_change=None):
        current = values()
        png = figure_png(render(**current), dpi=dpi)
        text = caption_of(current)
        output.outputs = ({"output_type": "display_data", "metadata": {},
                           "data": {"image/png": base64.b64encode(png).decode("ascii"), "text/plain": f"<{text}>"}},)
        caption_widget.value = text  # after the picture: whoever sees the caption sees the picture

    redraw()
    for control in controls.values():
        control.observe(redraw, names="value")
    children = [widgets.HBox(list(controls.values())), output, caption_widget]
    if title:
        children.insert(0, widgets.HTML(value=f"<b>{title}</b>"))
    box = widgets.VBox(children)
    box.add_class(WIDGET_CLASS)
    box.controls, box.output, box.caption, box.redraw = controls, output, caption_widget, redraw
    if static:
        display(Image(data=base64.b64decode(output.outputs[0]["data"]["image/png"]), format="png"))
    return box


def overlay_browser(image, truth, predictions: dict, title: str | None = None, static: bool = True, zoom: bool = True):
    """Predicted label maps of one slice for every combination of available modalities, method beside method.

    ``image``: a 2-D background slice (e.g. FLAIR); ``truth``: its 2-D BraTS label slice; ``predictions``:
    method name -> {combination name (``"FLAIR+T1"``) -> 2-D predicted label slice}, every method with the same
    combinations. A menu picks the combination; each method's prediction is drawn beside the ground truth with
    its Dice of the whole tumour on this slice in the panel title; ``zoom`` crops to the tumour.
    """
    import ipywidgets as widgets

    if not predictions:
        raise ValueError("overlay_browser needs at least one method's predictions")
    combinations = list(next(iter(predictions.values())))
    for method, by_combination in predictions.items():
        if list(by_combination) != combinations:
            raise ValueError(f"method {method!r} has combinations {list(by_combination)}, "
                             f"the first method has {combinations}")
    menu = widgets.Dropdown(options=combinations, value=combinations[-1], description="modalities",
                            layout=widgets.Layout(width="320px"))

    def render(modalities):
        shown = {method: by_combination[modalities] for method, by_combination in predictions.items()}
        return show_predictions(image, truth, shown, title=f"available: {modalities}", zoom=zoom, pyplot=False)

    return interactive_figure(render, {"modalities": menu}, title=title, static=static,
                              caption=lambda values: f"available modalities: {values['modalities']}")


def embedding_picker(embeddings: dict, modality_index, distances: dict | None = None, anchor: str | None = None,
                     label: str = "teacher", names=None, title: str | None = None, static: bool = True):
    """Pick among 2-D embeddings (t-SNE) computed beforehand and draw one: the picker only draws, it computes nothing.

    ``embeddings``: (model label, perplexity) -> (n, 2) array, every model with the same perplexities;
    ``modality_index``: (n,) modality of each point (indices into ``names``, default the course's four);
    ``distances``: model label -> (M, M) matrix of the modalities' centroid distances measured in the latent
    space (e.g. in units of the spread within a modality), drawn as bars of the distance to the picked anchor;
    ``anchor``: the modality highlighted at first (default the first name). Controls: the model (a menu named
    ``label``, first: the one the browser test moves), the anchor (a menu of modalities) and the perplexity (a
    slider over those computed). Drawn by :func:`mmkd_helpers.visualisation.embedding_figure`."""
    import ipywidgets as widgets
    import numpy as np

    from .visualisation import MODALITY_NAMES, embedding_figure

    names = list(names or MODALITY_NAMES)
    if not embeddings:
        raise ValueError("embedding_picker needs at least one embedding: {(model, perplexity): (n, 2) array}")
    models = list(dict.fromkeys(model for model, _ in embeddings))
    perplexities = sorted({perplexity for _, perplexity in embeddings})
    missing = [(m, p) for m in models for p in perplexities if (m, p) not in embeddings]
    if missing:
        raise ValueError(f"embedding_picker: no embedding for {missing}; every model needs every perplexity")
    if distances is not None and set(distances) != set(models):
        raise ValueError(f"distances cover {sorted(distances)}, the embeddings {sorted(models)}")
    anchor = anchor or names[0]
    if anchor not in names:
        raise ValueError(f"anchor must be one of {names}, got {anchor!r}")
    limit = (1.1 * max(float(np.nanmax(np.asarray(d))) for d in distances.values()) or 1.0) if distances else None
    controls = {label: widgets.Dropdown(options=models, value=models[0], description=label),
                "anchor": widgets.Dropdown(options=names, value=anchor, description="anchor"),
                "perplexity": widgets.SelectionSlider(options=perplexities,
                                                      value=perplexities[len(perplexities) // 2],
                                                      description="perplexity")}

    def render(**values):
        model, highlight, perplexity = values[label], values["anchor"], values["perplexity"]
        bars = None
        if distances is not None:
            row = np.asarray(distances[model])[names.index(highlight)]
            bars = {name: float(row[j]) for j, name in enumerate(names) if name != highlight}
        return embedding_figure(embeddings[model, perplexity], modality_index,
                                f"{model}, t-SNE perplexity {perplexity:g}", highlight=highlight, distances=bars,
                                distance_limit=limit, names=names)

    return interactive_figure(render, controls, title=title, static=static)
