"""AV-MNIST (MetaKD Sec. 4.3): the data layer, the two-encoder network, and MetaKD through the one engine on a
classifier. Tiny synthetic arrays with values worked by hand; the real data is the notebook tests' business."""

import json

import numpy as np
import pytest
import torch

from mmkd_helpers import avmnist as av
from mmkd_helpers.methods import Method
from mmkd_helpers.methods.metakd import MetaKD, initial_iwv
from mmkd_helpers.models import ModelConfig, build_model
from mmkd_helpers.paper_results import paper_results
from mmkd_helpers.training import TrainConfig, Trainer, task_loss

TINY = av.AVMNISTConfig(channels=2, feature_dim=4, hidden=4, dropout=0.0)


def synthetic(n: int = 12, seed: int = 0):
    """Packed samples whose class is written into both modalities (so a few steps can learn something)."""
    rng = np.random.default_rng(seed)
    y = torch.as_tensor(rng.integers(0, 10, n), dtype=torch.long)
    image = rng.normal(size=(n, 28, 28)).astype(np.float32) * 0.1
    audio = rng.normal(size=(n, 20, 20)).astype(np.float32) * 0.1
    image[np.arange(n), 2 * y.numpy(), 3] += 1.0
    audio[np.arange(n), 2 * y.numpy(), 5] += 1.0
    return av.pack(image, audio), y


def write_folder(folder, n_train=20, n_test=6, fmt=av.FORMAT):
    rng = np.random.default_rng(1)
    folder.mkdir(parents=True)
    for split, n in (("train", n_train), ("test", n_test)):
        np.save(folder / f"{split}_image.npy", rng.integers(0, 256, (n, 28, 28), dtype=np.uint8))
        np.save(folder / f"{split}_audio.npy", rng.normal(3.0, 2.0, (n, 20, 20)).astype(np.float32))
        np.save(folder / f"{split}_label.npy", rng.integers(0, 10, n).astype(np.int64))
    (folder / "manifest.json").write_text(json.dumps({"format": fmt, "mnist_source": "synthetic"}))
    return folder


# -- the data layer -------------------------------------------------------------------------------------------

def test_pack_puts_the_spectrogram_in_the_top_left_corner_and_unpack_inverts_it():
    image = torch.arange(2 * 28 * 28, dtype=torch.float32).view(2, 28, 28)
    audio = -torch.arange(2 * 20 * 20, dtype=torch.float32).view(2, 20, 20) - 1
    x = av.pack(image, audio)
    assert x.shape == (2, 2, 28, 28)
    assert x[1, 1, 19, 19] == audio[1, 19, 19] and x[1, 1, 20:].abs().sum() == 0 and x[1, 1, :, 20:].abs().sum() == 0
    back_image, back_audio = av.unpack(x)
    assert torch.equal(back_image, image) and torch.equal(back_audio, audio)
    with pytest.raises(ValueError, match="spectrograms"):
        av.pack(image, audio[:, :10])


def test_availability_keeps_exactly_the_rate_of_the_missing_modality():
    present = av.availability(20, 0.15, "audio", seed=3)
    assert present[:, 0].all() and int(present[:, 1].sum()) == 3  # round(0.15 * 20)
    assert torch.equal(present, av.availability(20, 0.15, "audio", seed=3))
    image = av.availability(10, 0.2, "image", seed=0)
    assert image[:, 1].all() and int(image[:, 0].sum()) == 2
    with pytest.raises(ValueError, match="missing must be one of"):
        av.availability(10, 0.2, "video")
    with pytest.raises(ValueError, match="rate must be in"):
        av.availability(10, 1.5)


def test_prepare_cuts_disjoint_sets_and_standardises_with_the_training_samples(tmp_path):
    data = av.read_avmnist(write_folder(tmp_path / "paired"))
    sets = av.prepare(data, n_train=12, n_val=5, seed=0)
    (x_train, y_train), (x_val, _), (x_test, y_test) = sets["train"], sets["val"], sets["test"]
    assert len(y_train) == 12 and len(x_val) == 5 and len(y_test) == 6
    order = np.random.default_rng(0).permutation(20)
    assert torch.equal(y_train, torch.as_tensor(data["train"]["label"][order[:12]]))
    _, audio = av.unpack(x_train)
    assert float(audio.mean()) == pytest.approx(0.0, abs=1e-5) and float(audio.std(unbiased=False)) == pytest.approx(1.0, abs=1e-4)
    image, _ = av.unpack(x_test)
    assert float(image.max()) <= 1.0 and torch.allclose(image[0], torch.as_tensor(data["test"]["image"][0]) / 255.0)
    with pytest.raises(ValueError, match="training split holds 20"):
        av.prepare(data, n_train=18, n_val=5)


def test_a_missing_folder_names_the_build_command_in_one_line(tmp_path):
    with pytest.raises(av.AVMNISTNotFound, match="python -m data_download avmnist --build") as error:
        av.read_avmnist(tmp_path / "nothing")
    assert isinstance(error.value, FileNotFoundError)
    assert len(error.value._render_traceback_()) == 1
    folder = write_folder(tmp_path / "old", fmt="something-else")
    with pytest.raises(ValueError, match="format"):
        av.read_avmnist(folder)


def test_the_stream_is_a_function_of_the_index():
    x, y = synthetic(5)
    present = av.availability(5, 0.4, "audio", seed=0)
    stream = av.AVMNISTStream(x, y, present, seed=7)
    first, again = stream[123], av.AVMNISTStream(x, y, present, seed=7)[123]
    assert first["index"] == again["index"] and torch.equal(first["image"], x[first["index"]])
    assert torch.equal(first["present"], present[first["index"]]) and first["label"] == y[first["index"]]
    assert av.AVMNISTStream(x, y)[0]["present"].all()
    with pytest.raises(ValueError, match="at least one present"):
        av.AVMNISTStream(x, y, torch.zeros(5, 2, dtype=torch.bool))


def test_noise_touches_one_modality_only():
    x, _ = synthetic(3)
    noisy = av.add_noise(x, "audio", 1.0, seed=0)
    assert torch.equal(noisy[:, 0], x[:, 0]) and torch.equal(noisy[:, 1, 20:], x[:, 1, 20:])
    assert not torch.equal(noisy[:, 1, :20, :20], x[:, 1, :20, :20])
    assert torch.equal(av.add_noise(x, "image", 0.0), x)


def test_the_papers_table3_is_stored_as_published():
    table = paper_results("metakd_table3").set_index(["missing", "rate", "method"]).accuracy
    assert table[("audio", 10, "MetaKD")] == 94.22 and table[("image", 10, "MetaKD")] == 85.56
    assert table[("audio", 20, "LowerB")] == 92.35 and table[("image", 5, "LowerB")] == 80.44
    assert sorted(table.index.get_level_values("rate").unique()) == [5, 10, 15, 20]


# -- the network -----------------------------------------------------------------------------------------------

def test_a_missing_modality_gets_the_present_ones_feature_eq2():
    torch.manual_seed(0)
    model = av.AVMNISTNet(TINY).eval()
    x, _ = synthetic(3)
    present = torch.tensor([[True, True], [True, False], [False, True]])
    out = model(x, present)
    features = out.bottleneck
    assert out.logits.shape == (3, 10) and features.shape == (3, 2, TINY.feature_dim)
    assert torch.equal(out.fused[0], features[0])
    assert torch.equal(out.fused[1, 1], features[1, 0]) and torch.equal(out.fused[2, 0], features[2, 1])
    # a missing input is zeroed before its encoder: its content cannot reach the prediction
    changed = x.clone()
    changed[1, 1] += 5.0
    assert torch.equal(model(changed, present).logits[1], out.logits[1])


def test_the_feature_scale_multiplies_each_modality_after_filling():
    torch.manual_seed(0)
    model = av.AVMNISTNet(TINY).eval()
    x, _ = synthetic(2)
    out = model(x, bottleneck_scale=torch.tensor([2.0, 0.0]))
    plain = model(x)
    assert torch.allclose(out.fused[:, 0], 2 * plain.fused[:, 0]) and out.fused[:, 1].abs().sum() == 0
    zeroed = model(x, bottleneck_scale=torch.zeros(2)).logits
    assert torch.allclose(zeroed[0], zeroed[1])  # nothing of the input is left: the head's biases only


def test_accuracy_by_hand():
    class Fixed(torch.nn.Module):  # predicts digit 3 for everything
        def __init__(self):
            super().__init__()
            self.w = torch.nn.Parameter(torch.zeros(1))

        def forward(self, x, present, bottleneck_scale=None):
            logits = torch.zeros(len(x), 10)
            logits[:, 3] = 1
            return av.ModelOutput(logits, [], None, present)

    x, _ = synthetic(4)
    assert av.accuracy(Fixed(), x, torch.tensor([3, 3, 1, 3]), ("image",), batch_size=3) == 75.0
    with pytest.raises(ValueError, match="non-empty subset"):
        av.present_mask(("smell",), 2)


def test_config_is_checked_with_value_errors():
    with pytest.raises(ValueError, match="dropout"):
        av.AVMNISTConfig(dropout=1.0)
    with pytest.raises(ValueError, match="2 modalities"):
        av.AVMNISTConfig(num_modalities=3)
    with pytest.raises(ValueError, match="packed samples"):
        av.AVMNISTNet(TINY)(torch.zeros(2, 2, 20, 20))


# -- the generalised engine and plug-in ---------------------------------------------------------------------------

def test_the_task_loss_is_the_models_own_or_the_segmentation_loss():
    model = av.AVMNISTNet(TINY)
    assert task_loss(model) is torch.nn.functional.cross_entropy
    logits, label = torch.tensor([[2.0, 0.0] + [0.0] * 8]), torch.tensor([0])
    expected = -np.log(np.exp(2) / (np.exp(2) + 9))
    assert task_loss(model)(logits, label).item() == pytest.approx(expected, rel=1e-6)
    unet = build_model(ModelConfig(spatial_dims=2, base_channels=2, depth=2))
    assert task_loss(unet) is not torch.nn.functional.cross_entropy  # the MRI networks keep Dice + BCE


def test_metakd_names_its_weights_after_the_models_modalities():
    method = MetaKD(modalities=av.MODALITIES, seed=4)
    assert method.raw.shape == (2,) and torch.equal(method.raw.data, initial_iwv("uniform", 4, 2))
    assert set(method.log[0]) == {"step", "w_image", "w_audio"}
    assert method.options["modalities"] == ["image", "audio"]
    assert "modalities" not in MetaKD().options  # the MRI runs' saved options are unchanged
    for bad in ("image", ("image",), ("a", "a")):
        with pytest.raises(ValueError, match="modalities"):
            MetaKD(modalities=bad)
    x, y = synthetic(4)
    with pytest.raises(ValueError, match="the model has 2 modalities, the IWV 4"):
        Trainer(av.AVMNISTNet(TINY), av.AVMNISTStream(x, y), TrainConfig(steps=1), MetaKD(), device="cpu",
                progress=False, val_dataset=av.AVMNISTStream(x, y))
    with pytest.raises(ValueError, match="val_dataset"):
        Trainer(av.AVMNISTNet(TINY), av.AVMNISTStream(x, y), TrainConfig(steps=1), MetaKD(modalities=av.MODALITIES),
                device="cpu", progress=False)


def avmnist_trainer(tmp_path, meta="alternating", steps=6, method=None):
    x, y = synthetic(16)
    vx, vy = synthetic(8, seed=1)
    torch.manual_seed(0)
    method = method or MetaKD(modalities=av.MODALITIES, meta=meta, meta_every=2, meta_steps=3, meta_batch_size=4,
                              meta_lr=0.1, seed=0)
    stream = av.AVMNISTStream(x, y, av.availability(16, 0.5, "audio", seed=0), seed=0)
    return Trainer(av.AVMNISTNet(TINY), stream, TrainConfig(steps=steps, batch_size=4, lr=1e-2), method,
                   out_dir=tmp_path, device="cpu", progress=False, val_dataset=av.AVMNISTStream(vx, vy, seed=5))


@pytest.mark.parametrize("meta", ["alternating", "bilevel"])
def test_metakd_trains_the_classifier_through_the_engine_and_the_weights_move(tmp_path, meta):
    trainer = avmnist_trainer(tmp_path, meta)
    start = trainer.method.iwv().detach().clone()
    history = trainer.fit()
    assert {"ce", "kd", "w_image", "w_audio", "meta_loss"} <= set(history.columns) and "seg" not in history
    assert history.dropna(subset=["meta_loss"]).step.tolist() == [2, 4, 6]
    assert not torch.allclose(trainer.method.iwv().detach(), start)
    assert (history.kd.dropna() > 0).any()  # samples with both modalities are distilled
    saved = torch.load(tmp_path / "last.pt", weights_only=True)
    assert torch.equal(saved["method"]["state"]["w"], trainer.method.raw.detach())
    assert saved["method"]["options"]["modalities"] == ["image", "audio"]


def test_an_interrupted_avmnist_run_resumes_exactly(tmp_path):
    whole = avmnist_trainer(tmp_path / "whole", steps=6)
    whole.fit()
    paused = avmnist_trainer(tmp_path / "paused", steps=6)
    paused.fit(stop_at=3)
    resumed = avmnist_trainer(tmp_path / "paused", steps=6)
    resumed.fit(resume=True)
    assert torch.equal(resumed.method.raw.detach(), whole.method.raw.detach())
    assert resumed.method.log == whole.method.log
    for name, tensor in whole.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[name], tensor), name


def test_the_baseline_trains_the_classifier_with_cross_entropy_only(tmp_path):
    history = avmnist_trainer(tmp_path, method=Method(), steps=2).fit()
    assert list(history.columns[:3]) == ["step", "loss", "ce"] and np.allclose(history.loss, history.ce)
