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


# --- MetaKD's importance weights (notebook 05) ---------------------------------------------------------------

def iwv_kd_terms(features, present, raw_weights, p: int = 1, normalisation: str = "softmax"):
    """MetaKD's weighted distillation term (Eqs. 4-6) split into its ordered pairs of modalities.

    ``features`` (N, M, C, *spatial) per-modality bottleneck features, ``present`` (N, M) bool, ``raw_weights``
    (M,) the raw IWV. Returns ``(terms, weights, total)``: ``terms`` (M, M) numpy, ``[i, j]`` the batch mean of
    (w̄_i / w̄_j)·d_ij, how strongly teacher i pulls student j (:func:`~mmkd_helpers.losses.metakd.pair_distances`,
    Eq. 5, zero where i = j or a modality is missing); ``weights`` the normalised IWV w̄ (Eq. 6); ``total`` the
    package's :func:`~mmkd_helpers.losses.weighted_kd_loss`, which the terms add up to."""
    import torch

    from .losses.metakd import normalise_iwv, pair_distances, weighted_kd_loss

    features = torch.as_tensor(features).detach().float().cpu()
    present = torch.as_tensor(present).bool().cpu()
    weights = normalise_iwv(torch.as_tensor(raw_weights, dtype=torch.float32).flatten(), normalisation)
    eye = torch.eye(present.shape[1], dtype=torch.bool)
    pairs = present[:, :, None] & present[:, None, :] & ~eye
    ratio = weights[:, None] / weights[None, :]
    terms = (ratio * pair_distances(features, p) * pairs).mean(dim=0)
    total = float(weighted_kd_loss(features, present, weights, p))
    if abs(float(terms.sum()) - total) > 1e-4 * max(1.0, abs(total)):
        raise AssertionError(f"the pair terms add up to {float(terms.sum())}, weighted_kd_loss gives {total}")
    return terms.numpy(), weights.numpy(), total


def iwv_terms_figure(features, present, raw_weights, names=None, p: int = 1, reference=None):
    """Two panels on a bare Figure: the normalised IWV (Eq. 6) and, per student modality j, the weighted KD terms
    (w̄_i / w̄_j)·d_ij stacked by teacher i in the course's modality colours; the title gives their sum, MetaKD's
    ℓ_kd (and, with ``reference`` = (label, raw weights), its value at those weights)."""
    import numpy as np
    from matplotlib.figure import Figure

    from .constants import MODALITY_NAMES
    from .visualisation import MODALITY_COLOURS

    names = list(names or MODALITY_NAMES)
    terms, weights, total = iwv_kd_terms(features, present, raw_weights, p)
    colours = [MODALITY_COLOURS.get(n, (0.4, 0.4, 0.4)) for n in names]
    fig = Figure(figsize=(10, 3.4), layout="constrained")
    left, right = fig.subplots(1, 2, gridspec_kw={"width_ratios": [1, 1.6]})
    left.bar(names, weights, color=colours)
    left.axhline(1 / len(names), color="grey", lw=0.8, ls="--", label="uniform")
    left.set_ylim(0, 1)
    left.set_xlabel("modality")
    left.set_ylabel("normalised weight w̄ (softmax, no unit)")
    left.set_title("importance weights (Eq. 6)")
    left.legend(loc="upper right")
    bottom = np.zeros(len(names))
    for i, name in enumerate(names):
        right.bar(names, terms[i], bottom=bottom, color=colours[i], label=f"teacher {name}")
        bottom += terms[i]
    right.set_xlabel("student modality j (the one pulled)")
    right.set_ylabel(f"(w̄_i / w̄_j)·d_ij, L{p} feature distance")
    text = f"ℓ_kd = {total:.3g} (sum of the bars)"
    if reference is not None:
        label, reference_raw = reference
        text += f"; at {label}: {iwv_kd_terms(features, present, reference_raw, p)[2]:.3g}"
    right.set_title(text)
    right.legend(title="pulled by", loc="upper left", bbox_to_anchor=(1.01, 1.0))
    return fig


def iwv_explorer(features, present, raw_weights, names=None, p: int = 1, reference=None, title=None,
                 static: bool = True, limits=(-3.0, 3.0)):
    """The IWV explorer: one slider per raw importance weight (the first modality's first), redrawing
    :func:`iwv_terms_figure`; the caption gives the normalised weights and ℓ_kd."""
    import numpy as np
    import ipywidgets as widgets

    from .constants import MODALITY_NAMES

    names = list(names or MODALITY_NAMES)
    raw = np.asarray(raw_weights, dtype=float).flatten()
    if len(raw) != len(names):
        raise ValueError(f"{len(raw)} raw weights for {len(names)} modalities {names}")
    controls = {name: widgets.FloatSlider(value=float(np.clip(np.round(value, 1), *limits)), min=limits[0],
                                          max=limits[1], step=0.1, description=f"raw w {name}", continuous_update=False,
                                          style={"description_width": "70px"}, layout=widgets.Layout(width="230px"))
                for name, value in zip(names, raw)}

    def render(**values):
        return iwv_terms_figure(features, present, [values[n] for n in names], names, p, reference)

    def caption(values):
        _, weights, total = iwv_kd_terms(features, present, [values[n] for n in names], p)
        return ("raw IWV " + ", ".join(f"{n} {values[n]:+.1f}" for n in names) + " → softmax "
                + ", ".join(f"{w:.3f}" for w in weights) + f" · ℓ_kd = {total:.4g}")

    return interactive_figure(render, controls, title=title, caption=caption, static=static)


# --- ProtoKD's temperature (notebook 06) ---------------------------------------------------------------------

CLASS_NAMES = ("background", "NCR/NET", "edema", "ET")
CLASS_LINE_COLOURS = ((0.45, 0.45, 0.45), (0.85, 0.0, 0.0), (0.0, 0.6, 0.0), (0.8, 0.65, 0.0))
"""Line colours of the four classes (background, NCR/NET, edema, ET): the label colours of the overlays, the
yellow darkened to be read on white."""


def softened_kl_map(student_logits, teacher_logits, temperature: float):
    """Per-pixel ProtoKD Eq. 1 in the code's form for one slice: ``(kl (H, W), p_s (C, H, W), p_t (C, H, W),
    loss)``. ``kl`` = Σ_c p_t (log p_t − log p_s) / C with p = softmax(z / T); ``loss`` is the package's
    :func:`~mmkd_helpers.losses.pixel_kd_loss` on the slice, the mean of ``kl``. Logits are (C, H, W)."""
    import torch

    from .losses.protokd import pixel_kd_loss

    student = torch.as_tensor(student_logits).detach().float().cpu()
    teacher = torch.as_tensor(teacher_logits).detach().float().cpu()
    log_p_s = torch.log_softmax(student / temperature, dim=0)
    log_p_t = torch.log_softmax(teacher / temperature, dim=0)
    kl = (log_p_t.exp() * (log_p_t - log_p_s)).mean(dim=0)
    loss = float(pixel_kd_loss(student[None], teacher[None], temperature))
    return kl.numpy(), log_p_s.exp().numpy(), log_p_t.exp().numpy(), loss


def softened_line_figure(student_logits, teacher_logits, temperature: float, truth=None, row=None,
                         student_name: str = "student", class_names=CLASS_NAMES, margin: int = 6):
    """ProtoKD's softened distributions on one slice at temperature T, on a bare Figure: the per-pixel KL map
    (colour bar) cropped to the tumour with a line through it, the teacher's (solid) and the student's (dashed)
    class probabilities along that line, and the KL along it. Arrays are indexed (x, y) like the volumes and drawn
    x to the right, y up; ``row``: the y of the line (default: the one with the most tumour in ``truth``)."""
    import numpy as np
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D

    from .visualisation import LABEL_COLOURS, tumour_box

    kl, p_s, p_t, loss = softened_kl_map(student_logits, teacher_logits, temperature)
    truth = None if truth is None else np.asarray(truth)
    box = tumour_box(truth, margin=margin) if truth is not None else (slice(0, kl.shape[0]), slice(0, kl.shape[1]))
    if row is None and truth is not None and (truth > 0).any():  # the row with the most classes, then most tumour
        classes = np.stack([(truth == value).any(axis=0) for value in np.unique(truth[truth > 0])]).sum(axis=0)
        row = int(np.argmax(1000 * classes + (truth > 0).sum(axis=0)))
    elif row is None:
        row = kl.shape[1] // 2
    xs = np.arange(box[0].start, box[0].stop)
    fig = Figure(figsize=(13, 3.6), layout="constrained")
    ax_map, ax_p, ax_kl = fig.subplots(1, 3, gridspec_kw={"width_ratios": [1, 1.5, 1.2]})
    extent = (box[0].start - 0.5, box[0].stop - 0.5, box[1].start - 0.5, box[1].stop - 0.5)
    image = ax_map.imshow(kl[box].T, origin="lower", cmap="magma", extent=extent)
    fig.colorbar(image, ax=ax_map, label="KL(p_t ‖ p_s) per pixel (nats)", shrink=0.9)
    ax_map.axhline(row, color="cyan", lw=1.2, ls="--")
    ax_map.set(xlabel="x (voxels)", ylabel="y (voxels)", title=f"per-pixel Eq. 1 ({student_name})")
    ax_map.grid(False)
    handles = []
    for k, name in enumerate(class_names):
        colour = CLASS_LINE_COLOURS[k % len(CLASS_LINE_COLOURS)]
        handles += ax_p.plot(xs, p_t[k, xs, row], color=colour, lw=2, label=name)
        ax_p.plot(xs, p_s[k, xs, row], color=colour, lw=1.5, ls="--")
    handles += [Line2D([], [], color="k", lw=2, label="teacher"),
                Line2D([], [], color="k", lw=1.5, ls="--", label=student_name)]
    if truth is not None:
        line = truth[xs, row]
        for value, colour in LABEL_COLOURS.items():
            hits = xs[line == value]
            ax_p.scatter(hits, np.full(len(hits), 1.04), marker="s", s=12, color=colour, clip_on=False)
    ax_p.set_ylim(0, 1.08)
    ax_p.set(xlabel="x along the dashed line (voxels)", ylabel="softened probability softmax(z / T)",
             title="teacher (solid) and student (dashed); squares: true label")
    fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), frameon=False)
    ax_kl.plot(xs, kl[xs, row], color="k")
    ax_kl.set(xlabel="x along the dashed line (voxels)", ylabel="KL(p_t ‖ p_s) (nats)",
              title=f"T = {temperature:g}: Eq. 1 on the slice = {loss:.3g}")
    ax_kl.set_ylim(bottom=0)
    return fig


def temperature_explorer(teacher_logits, students: dict, truth=None, row=None, temperature: float = 10.0,
                         title=None, static: bool = True, limits=(0.5, 20.0)):
    """ProtoKD's temperature slider (and a menu of students): :func:`softened_line_figure` of the teacher's and
    the chosen student's logits of one slice (each (C, H, W)); the caption gives T, the student and Eq. 1."""
    import ipywidgets as widgets

    if not students:
        raise ValueError("temperature_explorer needs at least one student's logits")
    names = list(students)
    controls = {"T": widgets.FloatSlider(value=float(temperature), min=limits[0], max=limits[1], step=0.5,
                                         description="T", continuous_update=False),
                "student": widgets.Dropdown(options=names, value=names[-1], description="student")}

    def render(T, student):
        return softened_line_figure(students[student], teacher_logits, T, truth, row, student)

    def caption(values):
        loss = softened_kl_map(students[values["student"]], teacher_logits, values["T"])[3]
        return f"T = {values['T']:g} · student: {values['student']} · Eq. 1 on the slice = {loss:.4g}"

    return interactive_figure(render, controls, title=title, caption=caption, static=static)


# --- Mind the Gap's latents (notebook 07) ---------------------------------------------------------------------

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
