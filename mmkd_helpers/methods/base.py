"""What a method is: extra loss terms and periodic hooks plugged into the one training engine.

A method never copies the training loop. The engine computes the segmentation loss; a method adds named,
already weighted terms from the model's output (per-modality features, present mask, logits) and may run
hooks every N steps (teacher election, meta steps) that update its state, and may own parameters that
the engine's optimiser trains with the model's. Its state is saved in every
checkpoint, so a resumed run continues exactly.

What a method may use of the engine (the :class:`~mmkd_helpers.training.Trainer` its hooks receive):
``model``, ``device``, ``dataset`` (the training patches, with its ``roi_size``, or another sample stream),
``val_volumes`` (held-out cases for elections and meta steps), ``val_dataset`` (held-out samples as a stream, for
models that are not segmentation networks), ``seg_loss`` (the task loss: segmentation, or the model's own),
``config.batch_size``, ``lr``, ``first_unseen_sample`` and ``rank`` / ``world`` (this process and the number of
processes of a ``torchrun`` run). Anything else of the trainer is the engine's own and may change.
"""

from dataclasses import dataclass
from typing import Callable


@dataclass
class Hook:
    every: int  # run after every `every` optimiser steps
    fn: Callable  # fn(trainer, step) -> dict of values to log (or None)
    name: str = "hook"


class Method:
    """The baseline: the task loss only (segmentation, or the model's own), no distillation."""

    name = "baseline"

    def __init__(self, **options):
        if options:
            raise TypeError(f"{self.name} takes no options, got {sorted(options)}")
        self.options = {}

    def setup(self, trainer) -> None:
        """Called when the trainer is built (model on its device), before a resumed run loads its state."""

    def start(self, trainer) -> dict | None:
        """Called once at step 0 of a new run (not on resume); what it returns is logged as step 0."""

    def loss_terms(self, model, batch: dict, output) -> dict:
        """Extra loss terms {name: weighted scalar tensor}, added to the task loss."""
        return {}

    def hooks(self) -> list:
        return []

    def parameters(self) -> list:
        """Learnable tensors the method owns (Mind the Gap's P*_mix weights), trained jointly with the model
        by the engine's optimiser. Created in ``__init__`` or ``setup``; ``load_state_dict`` must restore
        them in place, because the optimiser holds these very tensors."""
        return []

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass
