"""Checkers of notebook 05 (MetaKD: meta-learned importance weights).

Each checker works its expected answer out from the context the notebook passes (the learned IWV, the package's
loss, a model and its test cases, a frozen network and its meta stream); nothing measured is written here.
"""

import numpy as np
import torch

from . import checker, is_close
from ..losses.metakd import IWV_NORMALISATIONS, normalise_iwv, weighted_kd_loss


def _weights(weights) -> torch.Tensor:
    """A weight vector (tensor, Series, list) as a float64 tensor of its own."""
    if isinstance(weights, torch.Tensor):
        return weights.detach().cpu().double().flatten()
    return torch.tensor(np.array(getattr(weights, "to_numpy", lambda: weights)(), dtype=np.float64)).flatten()


@checker("05.1", hint="teacher i pulls student j with the weight w_i / w_j; divide the pull of the top-weighted "
                      "modality on the bottom one by the pull the other way")
def _(answer, weights):
    w = _weights(weights)
    return is_close(answer, float((w.max() / w.min()) ** 2), rel=1e-2)


def _random_cases(seed: int = 0):
    """Feature batches, present-masks and weights on which a from-scratch Eq. 5 must match the package's."""
    generator = torch.Generator().manual_seed(seed)
    features = torch.randn(3, 4, 5, 2, 2, 2, generator=generator)
    masks = [torch.ones(3, 4, dtype=torch.bool),
             torch.tensor([[1, 1, 0, 0], [1, 0, 1, 1], [0, 0, 0, 1]], dtype=torch.bool)]
    weights = normalise_iwv(torch.randn(4, generator=generator))
    return [(features, present, weights, p) for present in masks for p in (1, 2)]


@checker("05.2", hint="sum over the ordered pairs i ≠ j that are both present, each the ratio w_i / w_j times the "
                      "mean over channels and voxels of |f_i − f_j|^p, then average over the batch")
def _(answer):
    if not callable(answer):
        return False, "the answer is a function: my_weighted_kd(features, present, weights, p)"
    for features, present, weights, p in _random_cases():
        try:
            mine = torch.as_tensor(answer(features.clone(), present.clone(), weights.clone(), p), dtype=torch.float64)
        except Exception as error:  # the learner's code: say what went wrong, never stop the notebook
            return False, f"your function raised {type(error).__name__}: {error}"
        expected = weighted_kd_loss(features, present, weights, p).double()
        if mine.numel() != 1 or not torch.allclose(mine.flatten()[0], expected, rtol=1e-4, atol=1e-6):
            missing = "with a modality missing" if not present.all() else "with all four modalities present"
            return False, f"your function differs from the package's for p = {p}, {missing}"
    return True


@checker("05.3", hint="normalise the raw vector each way (normalise_iwv) and sum |w̄ − 1/4| over the modalities")
def _(answer, raw):
    raw = torch.as_tensor(raw, dtype=torch.float32)
    distance = {kind: float((normalise_iwv(raw, kind) - 1 / raw.numel()).abs().sum()) for kind in IWV_NORMALISATIONS}
    return str(answer).strip().lower() == max(distance, key=distance.get)


def scaled_dice_change(model, weights, volumes, roi_size, overlap) -> float:
    """Mean Dice (%, over ET, TC, WT and the cases, all modalities present) of ``model`` with its bottleneck scaled
    by ``weights`` minus without."""
    from ..evaluation import evaluate
    from ..models import FeatureScaled

    full = [(True,) * model.config.num_modalities]
    scale = torch.as_tensor(_weights(weights), dtype=torch.float32)
    plain = evaluate(model, volumes, roi_size, full, overlap, progress=False)
    scaled = evaluate(FeatureScaled(model, scale, level=-1), volumes, roi_size, full, overlap, progress=False)
    return 100 * float(scaled.groupby("region").dice.mean().mean() - plain.groupby("region").dice.mean().mean())


@checker("05.4", hint="think about what the instance normalisation after the bottleneck's upsampling does to a "
                      "factor shared by every modality's feature, then measure (FeatureScaled)")
def _(answer, model, weights, volumes, roi_size, overlap):
    answer = str(answer).strip().lower()
    if answer not in ("yes", "no"):
        return False, "answer 'yes' or 'no'"
    change = scaled_dice_change(model, weights, volumes, roi_size, overlap)
    return answer == ("yes" if abs(change) > 1.0 else "no")


def meta_phase_change(model, dataset, train_config, val_volumes, seed: int, meta_steps: int, weight_decay: float,
                      device="cpu") -> float:
    """Largest change of a normalised weight over one alternating meta phase of ``meta_steps`` Adam steps on w,
    ``model`` frozen, from MetaKD's initial w for ``seed``, with the meta optimiser's ``weight_decay``."""
    from ..methods.metakd import MetaKD
    from ..training import Trainer

    torch.manual_seed(seed)  # the network runs in training mode (skip dropout): the same draws for every call
    method = MetaKD(meta_batch_size=2, meta_steps=meta_steps, meta_weight_decay=weight_decay, seed=seed)
    trainer = Trainer(model, dataset, train_config, method, device=device, progress=False, val_volumes=val_volumes)
    before = method.iwv().detach().cpu()
    method.alternating_phase(trainer)
    return float((method.iwv().detach().cpu() - before).abs().max())


@checker("05.5", hint="compare the decay term with the size of the meta gradient, and remember that Adam divides "
                      "their sum by its running size; then run both phases")
def _(answer, model, dataset, train_config, val_volumes, seed, meta_steps, device="cpu"):
    answer = str(answer).strip().lower()
    if answer not in ("yes", "no"):
        return False, "answer 'yes' or 'no'"
    moved = {decay: meta_phase_change(model, dataset, train_config, val_volumes, seed, meta_steps, decay, device)
             for decay in (0.0, 5e-4)}
    return answer == ("yes" if moved[5e-4] < moved[0.0] else "no")
