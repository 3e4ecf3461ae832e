"""Notebook 02's widget: the overlay browser of one test slice under the 15 combinations, for two models, built as
the notebook builds it (predict_combinations -> logits_to_label -> overlay_browser)."""

import matplotlib

matplotlib.use("Agg")

import numpy as np  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

ipywidgets = pytest.importorskip("ipywidgets")

from mmkd_helpers.constants import COMBINATIONS, combination_name  # noqa: E402
from mmkd_helpers.evaluation import logits_to_label, predict_combinations  # noqa: E402
from mmkd_helpers.models import ModelConfig, build_model  # noqa: E402
from mmkd_helpers.widgets import WIDGET_CLASS, overlay_browser  # noqa: E402


def test_the_browser_of_two_budgets_has_the_15_combinations_and_redraws_on_each():
    rng = np.random.default_rng(0)
    images = rng.standard_normal((4, 16, 16, 16)).astype(np.float32)
    label = np.zeros((16, 16, 16), dtype=np.uint8)
    label[4:12, 4:12, 6:10] = 2
    label[6:9, 6:9, 7:9] = 4
    z = 8
    browsed = {}
    for name, seed in (("baseline, 4 steps", 0), ("live run, 3 steps", 1)):
        torch.manual_seed(seed)
        model = build_model(ModelConfig(base_channels=4, depth=3)).eval()
        logits = predict_combinations(model, images, COMBINATIONS, (16, 16, 16), 0.25)
        browsed[name] = {combination_name(p): logits_to_label(l)[..., z] for p, l in zip(COMBINATIONS, logits)}
    box = overlay_browser(images[2][..., z], label[..., z], browsed, title="toy", static=False)
    menu = box.controls["modalities"]
    assert WIDGET_CLASS in box._dom_classes
    assert list(menu.options) == [combination_name(p) for p in COMBINATIONS] and len(menu.options) == 15
    assert menu.value == "FLAIR+T1+T1ce+T2" and box.caption.value.endswith("FLAIR+T1+T1ce+T2")
    seen = {box.output.outputs[0]["data"]["image/png"]}
    for combination in ("T1", "T1ce+T2"):
        menu.value = combination
        assert box.caption.value == f"available modalities: {combination}"
        seen.add(box.output.outputs[0]["data"]["image/png"])
    assert len(seen) == 3, "each combination draws its own picture"
