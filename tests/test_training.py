import numpy as np
import pytest
import torch

from mmkd_helpers.dataset import PatchDataset
from mmkd_helpers.methods import Hook, Method
from mmkd_helpers.models import ModelConfig, build_model
from mmkd_helpers.training import StepSampler, TrainConfig, Trainer, TrainingDiverged, configure_optimizer, lr_factor, \
    parameter_groups, resolve_device

SMALL = ModelConfig(base_channels=4, depth=3)


def toy_volumes(n=3, size=24, seed=0):
    """Cubes whose intensity shows the regions, so a few steps can learn something."""
    rng = np.random.default_rng(seed)
    volumes = []
    for _ in range(n):
        label = np.zeros((size,) * 3, np.uint8)
        a = rng.integers(2, size // 2)
        label[a:a + 8, a:a + 8, a:a + 8] = 2
        label[a + 2:a + 6, a + 2:a + 6, a + 2:a + 6] = 1
        label[a + 3:a + 5, a + 3:a + 5, a + 3:a + 5] = 4
        images = rng.normal(0, 0.3, (4, size, size, size)).astype(np.float32) + (label[None] > 0) * 2.0
        volumes.append((images, label))
    return volumes


def make_trainer(tmp_path, steps=6, method=None, seed=0, **train):
    torch.manual_seed(seed)
    dataset = PatchDataset(toy_volumes(), (16, 16, 16), seed=0)
    config = TrainConfig(steps=steps, batch_size=2, **train)
    return Trainer(build_model(SMALL), dataset, config, method, out_dir=tmp_path, device="cpu", progress=False)


def test_interrupted_run_resumes_exactly(tmp_path):
    straight = make_trainer(tmp_path / "a")
    straight.fit()
    paused = make_trainer(tmp_path / "b")
    paused.fit(stop_at=3)
    assert paused.step == 3 and (tmp_path / "b" / "last.pt").exists()
    resumed = make_trainer(tmp_path / "b", seed=123)  # a different init: the checkpoint must overwrite it
    history = resumed.fit(resume=True)
    assert list(history["step"]) == [1, 2, 3, 4, 5, 6]
    for a, b in zip(straight.model.state_dict().values(), resumed.model.state_dict().values()):
        assert torch.equal(a, b)
    assert history["loss"].tolist() == straight.history_frame()["loss"].tolist()


def test_checkpoint_loads_with_weights_only(tmp_path):
    trainer = make_trainer(tmp_path, steps=2)
    trainer.fit()
    state = torch.load(tmp_path / "last.pt", weights_only=True)
    assert state["step"] == 2 and state["config"]["model"]["base_channels"] == 4
    assert not list(tmp_path.glob("*.tmp"))


def test_resume_without_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(FileNotFoundError, match="last.pt"):
        make_trainer(tmp_path).fit(resume=True)


def test_training_reduces_the_loss(tmp_path):
    history = make_trainer(tmp_path, steps=40, lr=1e-2, schedule="constant").fit()
    assert history["loss"].iloc[-5:].mean() < 0.8 * history["loss"].iloc[:5].mean()


class CountingMethod(Method):
    """A method plug-in that adds a constant term and counts its hook calls."""

    name = "counting"

    def __init__(self):
        super().__init__()
        self.calls = []

    def loss_terms(self, model, batch, output):
        assert output.bottleneck.shape[:2] == batch["present"].shape
        return {"extra": output.logits.sum() * 0 + 0.5}

    def hooks(self):
        return [Hook(every=2, fn=lambda trainer, step: self.calls.append(step) or {"hook_value": step})]

    def state_dict(self):
        return {"calls": list(self.calls)}

    def load_state_dict(self, state):
        self.calls = list(state["calls"])


def test_method_terms_and_hooks_plug_into_the_loop(tmp_path):
    method = CountingMethod()
    history = make_trainer(tmp_path, steps=5, method=method).fit()
    assert method.calls == [2, 4]
    assert np.allclose(history["loss"], history["seg"] + 0.5)
    assert history["hook_value"].dropna().tolist() == [2, 4]
    state = torch.load(tmp_path / "last.pt", weights_only=True)
    assert state["method"] == {"name": "counting", "options": {}, "state": {"calls": [2, 4]}}


def test_a_run_cannot_resume_as_another_method(tmp_path):
    make_trainer(tmp_path, steps=2, method=CountingMethod()).fit()
    with pytest.raises(ValueError, match="counting run cannot resume as baseline"):
        make_trainer(tmp_path, steps=4).fit(resume=True)


class DivergingMethod(Method):
    """Adds a term that turns NaN at a given step."""

    name = "diverging"

    def __init__(self, at_step):
        super().__init__()
        self.at_step, self.calls = at_step, 0

    def loss_terms(self, model, batch, output):
        self.calls += 1
        return {"extra": output.logits.sum() * 0 + (float("nan") if self.calls == self.at_step else 0.0)}


def test_a_non_finite_loss_stops_the_run_and_keeps_the_last_checkpoint(tmp_path):
    trainer = make_trainer(tmp_path, steps=6, method=DivergingMethod(at_step=4), checkpoint_every=2)
    with pytest.raises(TrainingDiverged, match=r"not finite at step 4 \(seg [0-9.]+, extra nan\).*last.pt still holds"):
        trainer.fit()
    state = torch.load(tmp_path / "last.pt", weights_only=True)
    assert state["step"] == 2 and all(torch.isfinite(v).all() for v in state["model"].values())
    with pytest.raises(TrainingDiverged, match="no checkpoint was written"):
        make_trainer(tmp_path / "none", steps=3, method=DivergingMethod(at_step=1)).fit()
    assert not (tmp_path / "none" / "last.pt").exists()


def test_resume_takes_the_schedule_from_the_config_and_refuses_another_data_stream(tmp_path):
    make_trainer(tmp_path, steps=2, lr=1e-3).fit()
    extended = make_trainer(tmp_path, steps=4, lr=2e-3)
    history = extended.fit(resume=True)
    assert list(history.step) == [1, 2, 3, 4] and extended.step == 4
    assert history.lr.tolist()[2:] == pytest.approx([2e-3 * (1 - 3 / 4) ** 0.9, 0.0])
    with pytest.raises(ValueError, match=r"keeps its batch_size, seed \(batch_size=2, seed=0\)"):
        Trainer(build_model(SMALL), PatchDataset(toy_volumes(), (16, 16, 16)), TrainConfig(steps=8, batch_size=1, seed=1),
                out_dir=tmp_path, device="cpu", progress=False).fit(resume=True)
    with pytest.raises(ValueError, match="at step 4, beyond steps=3"):
        make_trainer(tmp_path, steps=3).fit(resume=True)


def test_train_config_refuses_bad_values():
    for bad, words in [({"steps": 0}, "steps must be at least 1, got 0"), ({"lr": float("nan")}, "lr must be a positive"),
                       ({"lr": -1.0}, "lr must be a positive"), ({"schedule": "step"}, "schedule must be one of"),
                       ({"num_workers": -1}, "num_workers must be 0 or more")]:
        with pytest.raises(ValueError, match=words):
            TrainConfig(**bad)


def test_step_sampler_splits_a_stream_between_processes():
    single = list(StepSampler(0, 3, 2, rank=0, world=1))
    assert single == [0, 1, 2, 3, 4, 5]
    ranks = [list(StepSampler(1, 3, 2, rank=r, world=2)) for r in range(2)]
    assert ranks == [[4, 5, 8, 9], [6, 7, 10, 11]]
    assert list(StepSampler(2, 3, 2)) == single[4:]


def test_learning_rate_schedules():
    assert lr_factor(0, 100, "poly") == 1.0 and lr_factor(100, 100, "poly") == 0.0
    assert lr_factor(50, 100, "poly") == pytest.approx(0.5 ** 0.9)
    assert lr_factor(50, 100, "cosine") == pytest.approx(0.5)
    assert lr_factor(70, 100, "constant") == 1.0
    with pytest.raises(ValueError, match="unknown schedule 'step'"):
        lr_factor(1, 10, "step")


def test_device_resolution():
    assert resolve_device("cpu").type == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(ValueError, match="device 'cuda:0': this PyTorch has no usable CUDA GPU"):
            resolve_device("cuda:0")
    with pytest.raises(ValueError, match="device 'tpu' is not a device name"):
        resolve_device("tpu")
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    if not torch.cuda.is_available() and getattr(torch.backends, "mps", None) and torch.backends.mps.is_available():
        expected = "mps"
    assert resolve_device("auto").type == expected


def test_adam_decays_a_weight_the_loss_ignores_by_lr_per_step_and_adamw_by_lr_times_decay():
    """One step on a weight with zero loss gradient, lr 0.1, weight decay 0.01, starting at w = 1.

    Adam puts 0.01·w into the gradient and normalises it: a step of lr, w = 0.9. AdamW multiplies w by
    1 − lr·decay = 0.999 and its normalised step of a zero gradient is 0. The bias (1-D) and a method's own
    parameter are never decayed: they stay at 1 under both.
    """
    after = {}
    for name in ("adam", "adamw"):
        layer = torch.nn.Linear(1, 1)
        own = torch.nn.Parameter(torch.ones(1))  # e.g. MetaKD's IWV
        with torch.no_grad():
            layer.weight.fill_(1.0)
            layer.bias.fill_(1.0)
        optimiser = configure_optimizer(layer, TrainConfig(optimizer=name, lr=0.1, weight_decay=0.01), [own])
        for p in (layer.weight, layer.bias, own):
            p.grad = torch.zeros_like(p)
        optimiser.step()
        after[name] = (layer.weight.item(), layer.bias.item(), own.item())
    assert after["adam"] == pytest.approx((0.9, 1.0, 1.0), abs=1e-6)
    assert after["adamw"] == pytest.approx((0.999, 1.0, 1.0), abs=1e-7)
    with pytest.raises(ValueError, match=r"optimizer must be one of \('adamw', 'adam', 'sgd'\), got 'lamb'"):
        TrainConfig(optimizer="lamb")


def test_weight_decay_goes_to_conv_weights_only():
    from mmkd_helpers.models import ModelConfig, build_model

    model = build_model(ModelConfig(base_channels=2, depth=2))
    decay, no_decay = parameter_groups(model, weight_decay=0.1)
    assert decay["weight_decay"] == 0.1 and no_decay["weight_decay"] == 0.0
    assert decay["params"] and all(p.dim() == 5 for p in decay["params"])  # conv and transposed-conv kernels
    norms = [m.weight for m in model.modules() if isinstance(m, torch.nn.InstanceNorm3d)]
    assert norms and all(any(p is n for p in no_decay["params"]) for n in norms)
    assert sum(p.numel() for g in (decay, no_decay) for p in g["params"]) == sum(p.numel() for p in model.parameters())
