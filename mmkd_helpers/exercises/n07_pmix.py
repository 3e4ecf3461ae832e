"""Checkers of notebook 07 (Mind the Gap, part 1: the aligned teachers). Each works its expected answer out from
the context the notebook passes (the package's functions, the notebook's tables, the shipped teachers)."""

import numpy as np
import torch

from ..constants import MODALITY_NAMES
from . import checker, is_close


def _modality(answer) -> str:
    """A modality name as the course writes it ("t1ce" -> "T1ce"); unknown names are returned as given."""
    lookup = {name.lower(): name for name in MODALITY_NAMES}
    return lookup.get(str(answer).strip().lower(), str(answer))


@checker("07.1", hint="½ (μ² + σ² − log σ² − 1) element-wise, σ² = exp(logvar), then the mean over all elements")
def _(answer, seed=0):
    from ..losses.pmix import gaussian_kl_standard_normal

    if not callable(answer):
        return False, "set answer to your function itself (answer = my_kl), not to a value"
    generator = torch.Generator().manual_seed(seed)
    for shape in ((), (3,), (2, 4, 5)):
        mean, logvar = torch.randn(shape, generator=generator), torch.randn(shape, generator=generator)
        mine = answer(mean.clone(), logvar.clone())
        if mine is None:
            return False, "your function returns None: write its body"
        mine = torch.as_tensor(mine, dtype=torch.float32)
        if mine.numel() != 1:
            return False, f"your function returns {mine.numel()} values for a {tuple(shape)} input: reduce to the mean"
        if not torch.allclose(mine.reshape(()), gaussian_kl_standard_normal(mean, logvar), rtol=1e-4, atol=1e-6):
            return False, ("your KL differs from the package's on random inputs; check that logvar is log σ² "
                           "(σ² = exp(logvar)) and that you average rather than sum")
    return True


@checker("07.2", hint="in the paper's form the anchor's own distance is 0; ask where gradient descent on Σ_j w_j d_j "
                      "can put the weight to make the loss smallest")
def _(answer, latents, anchor, steps=300, lr=0.05):
    from ..losses.pmix import pmix_mixture_loss, pmix_weights

    raw = torch.zeros(latents.shape[1], requires_grad=True)
    optimiser = torch.optim.Adam([raw], lr=lr)
    for _ in range(steps):
        optimiser.zero_grad()
        pmix_mixture_loss(latents, pmix_weights(raw), "paper", anchor=anchor).backward()
        optimiser.step()
    expected = MODALITY_NAMES[int(pmix_weights(raw.detach()).argmax())]
    if _modality(answer) not in MODALITY_NAMES:
        return False, f"answer with a modality name: one of {', '.join(MODALITY_NAMES)}"
    return _modality(answer) == expected


@checker("07.3", hint="the logged 'align' is already λ·L_align; find the λ at which λ·L_align = L_seg at the first "
                      "step where both were logged")
def _(answer, history, lam):
    first = history.dropna(subset=["seg", "align"]).iloc[0]
    return is_close(answer, lam * first["seg"] / first["align"], rel=0.02)


@checker("07.4", hint="rank the unimodal networks by their validation ET Dice alone (the ranking table's ET column)")
def _(answer, ranking):
    if _modality(answer) not in MODALITY_NAMES:
        return False, f"answer with a modality name: one of {', '.join(MODALITY_NAMES)}"
    return _modality(answer) == str(ranking["ET"].astype(float).idxmax())


@checker("07.5", hint="modality_gap of latent_features(..., level=-1) (the bottleneck) for each teacher, with the "
                      "cases, max_positions and seed of the statement; the ratio P*_mix over without P_mix")
def _(answer, teachers, volumes, max_positions=500, seed=0):
    from ..analysis import latent_features, modality_gap

    gap = {anchor: modality_gap(latent_features(model, volumes, level=-1, max_positions=max_positions,
                                                seed=seed)[None]) for anchor, model in teachers.items()}
    expected = gap["mixture"] / gap["none"]
    if not np.isfinite(expected):
        return False, "the unaligned teacher's bottleneck gap is 0 here: the ratio is undefined"
    return is_close(answer, expected, abs_=0.006)
