"""An interactive slice viewer for one multi-modal case: ipywidgets controls over a matplotlib image.

``slice_viewer(case.images, case.label)`` in a notebook cell shows a slider through the slices, a
modality menu (one modality, or ``all`` side by side), a ``labels`` check box that overlays the tumour
labels (1 NCR/NET red, 2 ED green, 4 ET yellow, semi-transparent), the image, and a caption
``slice k / n · modality`` (``k`` is the slider's value, the numpy index of the slice, ``n`` the number
of slices along ``axis``).

How it is built, and why:

* The image is rendered to PNG by a bare :class:`matplotlib.figure.Figure` (not ``pyplot``), so no
  figure is ever registered with pyplot: nothing piles up, nothing is shown twice by the inline
  backend, and it works the same with any matplotlib backend, in a kernel or not.
* The PNG is written into the :class:`ipywidgets.Output` widget by setting its ``outputs``, which
  replaces the picture in one message (no flicker, no ``clear_output`` race) and works outside a kernel
  too (unit tests). The caption is updated *after* the image, so a test (or a person) who sees the
  new caption also has the new image.
* With ``static=True`` the initial view is also displayed as a plain PNG, so a notebook executed
  headless (papermill, nbval, CI) or read on GitHub, where widgets are not live, still shows a picture.

ipywidgets, IPython and matplotlib are imported inside the function: ``import mmkd_helpers.viewer``
stays cheap.
"""

import base64
import io

import numpy as np

from .constants import MODALITY_NAMES
from .visualisation import LABEL_COLOURS, label_overlay, tumour_slice

LABEL_NAMES = {1: "NCR/NET", 2: "ED", 4: "ET"}
ALL = "all"
"""The modality-menu entry that shows every modality side by side."""


def caption_text(k: int, n: int, modality: str) -> str:
    """The caption under the image: ``slice {k} / {n} · {modality}`` (the browser test waits for it)."""
    return f"slice {k} / {n} · {modality}"


def default_slice(label, axis: int, n: int) -> int:
    """The slice along ``axis`` with the most tumour voxels (label > 0), else the middle one of ``n``."""
    return n // 2 if label is None else tumour_slice(label, axis)


def _windows(images: np.ndarray) -> list:
    """Per-modality display range: 1st-99th percentile of the nonzero (brain) voxels of the whole volume,
    so the contrast does not jump from slice to slice."""
    windows = []
    for volume in images:
        values = volume[volume != 0]
        if values.size == 0:
            values = volume.ravel()
        lo, hi = np.percentile(values, [1.0, 99.0]) if values.size else (0.0, 1.0)
        if not hi > lo:
            hi = lo + 1.0
        windows.append((float(lo), float(hi)))
    return windows


def render_png(images, label, k: int, modality: str, modality_names, axis: int, show_labels: bool,
               windows=None, title=None, dpi: int = 110) -> bytes:
    """PNG bytes of slice ``k`` along ``axis`` of one modality (or ``"all"``), labels overlaid or not.

    Slices are shown with the first remaining axis horizontal and the second vertical, origin at the
    bottom (for the axial axis of a RAS volume: right-left horizontal, anterior up).
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    names = list(modality_names)
    channels = range(len(names)) if modality == ALL else [names.index(modality)]
    windows = windows if windows is not None else _windows(images)
    fig = Figure(figsize=(2.6 * len(channels), 2.9), dpi=dpi)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(channels), squeeze=False)[0]
    label_slice = np.take(label, k, axis=axis) if (label is not None and show_labels) else None
    for ax, c in zip(axes, channels):
        lo, hi = windows[c]
        ax.imshow(np.take(images[c], k, axis=axis).T, cmap="gray", vmin=lo, vmax=hi, origin="lower",
                  interpolation="nearest")
        if label_slice is not None:
            ax.imshow(label_overlay(label_slice).transpose(1, 0, 2), origin="lower", interpolation="nearest")
        ax.set_title(names[c], fontsize=10)
        ax.set_axis_off()
    if label_slice is not None:
        fig.legend(handles=[Patch(color=LABEL_COLOURS[v], alpha=0.8, label=LABEL_NAMES[v]) for v in LABEL_COLOURS],
                   loc="lower center", ncol=3, fontsize=8, frameon=False)
    if title:
        fig.suptitle(title, fontsize=11)
    fig.subplots_adjust(left=0.02, right=0.98, bottom=0.1, top=0.85 if title else 0.9, wspace=0.05)
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    fig.clear()
    return buffer.getvalue()


def _png_output(png: bytes, text: str) -> dict:
    """One output of an Output widget (nbformat ``display_data``) showing a PNG."""
    return {"output_type": "display_data", "metadata": {},
            "data": {"image/png": base64.b64encode(png).decode("ascii"), "text/plain": text}}


def slice_viewer(images, label=None, modality_names=MODALITY_NAMES, axis: int = 2, title=None, static: bool = True,
                 modality=None):
    """An interactive viewer of a (M, X, Y, Z) multi-modal volume, with the BraTS labels overlaid.

    ``images``: (M, X, Y, Z) array, channels in the order of ``modality_names``; ``label``: (X, Y, Z)
    BraTS labels {0, 1, 2, 4}, or None; ``axis``: the spatial axis to slice (0, 1, 2; 2 = axial for
    BraTS). The slider starts on the slice with the most tumour (the middle slice without labels);
    the menu on ``modality`` (a name, or ``"all"``; default: the first modality).

    Returns the ``ipywidgets.VBox``; its widgets are also attributes of it: ``.slider``,
    ``.modality``, ``.labels``, ``.output``, ``.caption``. With ``static=True`` the initial view is
    also displayed as a plain image, for notebooks read where widgets are not live.
    """
    import ipywidgets as widgets
    from IPython.display import Image, display

    images = np.asarray(images)
    names = [str(name) for name in modality_names]
    if images.ndim != 4:
        raise ValueError(f"images must be (M, X, Y, Z), got shape {images.shape}")
    if len(names) != images.shape[0]:
        raise ValueError(f"{images.shape[0]} modalities in images but {len(names)} modality_names {names}")
    if axis not in (0, 1, 2):
        raise ValueError(f"axis must be 0, 1 or 2 (a spatial axis), got {axis!r}")
    if label is not None:
        label = np.asarray(label)
        if label.shape != images.shape[1:]:
            raise ValueError(f"label shape {label.shape} differs from the image shape {images.shape[1:]}")
    n = images.shape[1 + axis]
    windows = _windows(images)
    start = default_slice(label, axis, n)
    options = [*names, ALL] if len(names) > 1 else names
    if modality is not None and modality not in options:
        raise ValueError(f"modality must be one of {options}, got {modality!r}")

    slider = widgets.IntSlider(value=start, min=0, max=n - 1, step=1, description="slice",
                               continuous_update=False, layout=widgets.Layout(width="320px"))
    menu = widgets.Dropdown(options=options, value=modality or names[0], description="modality",
                            layout=widgets.Layout(width="200px"))
    labels = widgets.Checkbox(value=label is not None, description="labels", disabled=label is None,
                              indent=False, layout=widgets.Layout(width="90px"))
    output = widgets.Output(layout=widgets.Layout(min_height="220px"))
    caption = widgets.HTML(value="")

    def redraw(_change=None):
        k, shown = slider.value, menu.value
        png = render_png(images, label, k, shown, names, axis, labels.value, windows, title)
        output.outputs = (_png_output(png, f"<slice {k} of {n}, {shown}>"),)
        caption.value = caption_text(k, n, shown)  # after the image: whoever sees the caption sees the image

    redraw()
    for control in (slider, menu, labels):
        control.observe(redraw, names="value")

    children = [widgets.HBox([slider, menu, labels]), output, caption]
    if title:
        children.insert(0, widgets.HTML(value=f"<b>{title}</b>"))
    box = widgets.VBox(children)
    box.slider, box.modality, box.labels, box.output, box.caption = slider, menu, labels, output, caption
    if static:
        png = base64.b64decode(output.outputs[0]["data"]["image/png"])
        display(Image(data=png, format="png"))
    return box
