"""AV-MNIST, MetaKD's classification benchmark (MetaKD Sec. 4.3, Table 3): the data and the two-encoder network.

**Data.** ``python -m data_download avmnist --build`` writes a folder of ``.npy`` files and a manifest: 28×28
MNIST digits, each paired with a spoken recording of the same digit (Free Spoken Digit Dataset) turned into a
20×20 log spectrogram. :func:`read_avmnist` reads that folder, :func:`prepare` cuts the course's
train/validation/test sets from it and standardises them, :func:`availability` draws which training samples
keep the modality that is "missing" (the paper's *audio rate* / *visual rate*: the fraction of the training
samples that still have it), and :class:`AVMNISTStream` hands the samples to the one training engine.

The two modalities travel as **one tensor (N, 2, 28, 28)**, as the four MRI modalities do, so that the engine,
the plug-ins and the present-masks need no special case: channel 0 is the digit image, channel 1 holds the
20×20 spectrogram in its top-left corner, zeros elsewhere (:func:`pack`). The network reads each from its place.

**Network** (:class:`AVMNISTNet`). The paper follows SMIL: per-modality encoders of convolutions and a fully
connected layer, the features concatenated and classified by two fully connected layers with dropout, and the
distillation of Eq. 5 applied to "the layer just before the FC layers" (MetaKD supplementary Sec. 8). Here:

* Eq. 1, f_i = f_θi(x_i): two small CNNs (LeNet-like), one per modality, each ending in a ``feature_dim``
  vector. Unlike the MRI network, the encoders cannot share weights: an image and a spectrogram differ in size
  and in what a filter should look for.
* Eq. 2: the feature of a missing modality is the mean of the available ones (:func:`mmkd_helpers.models.
  fill_missing`, the same function as the MRI network's); with two modalities, the other modality's feature.
* Eq. 3: the concatenation ⊕ f_i goes to the classifier head (two FC layers, dropout).

Its output is the same :class:`mmkd_helpers.models.ModelOutput` as the MRI networks' (``logits`` (N, 10),
``bottleneck`` the per-modality features (N, 2, C) before filling, ``fused`` after), and it brings its own task
loss (:meth:`AVMNISTNet.task_loss`, cross-entropy, the paper's ℓ_task and ℓ_meta for classification), so that
:class:`mmkd_helpers.training.Trainer` and :class:`mmkd_helpers.methods.metakd.MetaKD` train it unchanged.
"""

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from .models import ModelOutput, fill_missing
from .paths import default_data_dir

MODALITIES = ("image", "audio")
IMAGE_SHAPE = (28, 28)
AUDIO_SHAPE = (20, 20)
NUM_CLASSES = 10
BUILD_COMMAND = "python -m data_download avmnist --build"
FORMAT = "mmkd-avmnist-1"
SPLIT_SEED = 0


def default_avmnist_dir() -> Path:
    """Where ``python -m data_download avmnist --build`` puts the paired data: ``$MMKD_DATA_DIR/avmnist/paired``."""
    return default_data_dir() / "avmnist" / "paired"


class AVMNISTNotFound(FileNotFoundError):
    """The AV-MNIST folder is missing or incomplete. In a notebook it shows as one line, without a traceback."""

    def _render_traceback_(self):  # IPython shows this instead of the traceback
        return [f"{type(self).__name__}: {self}"]


# -- reading and preparing the data ---------------------------------------------------------------------------

def read_avmnist(folder) -> dict:
    """The folder written by ``data_download avmnist --build``: ``{"train": {...}, "test": {...}, "manifest": {...}}``,
    each split holding ``image`` uint8 (N, 28, 28), ``audio`` float32 (N, 20, 20) and ``label`` int64 (N,).

    A missing or incomplete folder raises :class:`AVMNISTNotFound` naming the command that builds it.
    """
    folder = Path(folder).expanduser()
    manifest_path = folder / "manifest.json"
    if not manifest_path.is_file():
        raise AVMNISTNotFound(f"no AV-MNIST data in {folder}. Fetch and build it (about 20 MB) with: {BUILD_COMMAND}")
    manifest = json.loads(manifest_path.read_text())
    if manifest.get("format") != FORMAT:
        raise ValueError(f"{manifest_path}: format {manifest.get('format')!r}, expected {FORMAT!r}; rebuild it "
                         f"with: {BUILD_COMMAND}")
    data = {"manifest": manifest}
    for split in ("train", "test"):
        arrays = {}
        for kind, shape in (("image", IMAGE_SHAPE), ("audio", AUDIO_SHAPE), ("label", ())):
            path = folder / f"{split}_{kind}.npy"
            if not path.is_file():
                raise AVMNISTNotFound(f"{path} is missing: the folder is incomplete. Rebuild it with: {BUILD_COMMAND}")
            arrays[kind] = np.load(path)
            if arrays[kind].shape[1:] != shape:
                raise ValueError(f"{path}: shape {arrays[kind].shape}, expected (N, {', '.join(map(str, shape))})")
        if not len(arrays["image"]) == len(arrays["audio"]) == len(arrays["label"]):
            raise ValueError(f"{folder}: the {split} arrays have different lengths")
        data[split] = arrays
    return data


def pack(image, audio) -> torch.Tensor:
    """Images (N, 28, 28) and spectrograms (N, 20, 20) as one float tensor (N, 2, 28, 28): the image in channel 0,
    the spectrogram in the top-left 20×20 corner of channel 1."""
    image, audio = torch.as_tensor(image, dtype=torch.float32), torch.as_tensor(audio, dtype=torch.float32)
    if image.shape[1:] != IMAGE_SHAPE or audio.shape[1:] != AUDIO_SHAPE or len(image) != len(audio):
        raise ValueError(f"expected images (N, 28, 28) and spectrograms (N, 20, 20), got {tuple(image.shape)} "
                         f"and {tuple(audio.shape)}")
    packed = torch.zeros(len(image), 2, *IMAGE_SHAPE)
    packed[:, 0] = image
    packed[:, 1, :AUDIO_SHAPE[0], :AUDIO_SHAPE[1]] = audio
    return packed


def unpack(packed: torch.Tensor) -> tuple:
    """(images (N, 28, 28), spectrograms (N, 20, 20)) of a packed tensor: the inverse of :func:`pack`."""
    return packed[:, 0], packed[:, 1, :AUDIO_SHAPE[0], :AUDIO_SHAPE[1]]


def prepare(data: dict, n_train: int = 900, n_val: int = 150, n_test: int | None = None,
            seed: int = SPLIT_SEED) -> dict:
    """The course's sets from :func:`read_avmnist`'s splits: ``{"train"|"val"|"test": (x (N, 2, 28, 28), y (N,))}``.

    Train and validation are disjoint samples of the folder's training split (a permutation seeded by ``seed``,
    fixed whatever the training seed): the first ``n_train`` and the next ``n_val``. Test is the folder's test
    split (its first ``n_test``; None: all of it), whose recordings are FSDD's official test takes, never heard in
    training. Images are scaled to [0, 1]; spectrograms are standardised with the mean and SD of the training
    samples' spectrograms (one number each).
    """
    for name, value in (("n_train", n_train), ("n_val", n_val)):
        if value < 1:
            raise ValueError(f"{name} must be at least 1, got {value}")
    available = len(data["train"]["label"])
    if n_train + n_val > available:
        raise ValueError(f"n_train + n_val = {n_train + n_val} samples, but the training split holds {available}")
    if n_test is not None and not 1 <= n_test <= len(data["test"]["label"]):
        raise ValueError(f"n_test must be between 1 and {len(data['test']['label'])}, got {n_test}")
    order = np.random.default_rng(seed).permutation(available)
    picks = {"train": ("train", order[:n_train]), "val": ("train", order[n_train:n_train + n_val]),
             "test": ("test", np.arange(len(data["test"]["label"]))[:n_test])}
    train_audio = data["train"]["audio"][picks["train"][1]]
    mean, sd = float(train_audio.mean()), float(train_audio.std())
    sets = {}
    for name, (split, index) in picks.items():
        arrays = data[split]
        image = arrays["image"][index].astype(np.float32) / 255.0
        audio = (arrays["audio"][index] - mean) / sd
        sets[name] = (pack(image, audio), torch.as_tensor(arrays["label"][index], dtype=torch.long))
    return sets


def availability(n: int, rate: float, missing: str = "audio", seed: int = 0) -> torch.Tensor:
    """The (n, 2) present-mask of MetaKD's missing-modality training (Table 3): ``missing`` is available in
    exactly ``round(rate · n)`` samples (the paper's "audio rate" or "visual rate"), chosen by a permutation seeded
    by ``seed``; the other modality is always available."""
    if missing not in MODALITIES:
        raise ValueError(f"missing must be one of {MODALITIES}, got {missing!r}")
    if not 0 <= rate <= 1:
        raise ValueError(f"rate must be in [0, 1], got {rate}")
    present = torch.ones(n, len(MODALITIES), dtype=torch.bool)
    keep = np.random.default_rng(seed).permutation(n)[:round(rate * n)]
    column = torch.zeros(n, dtype=torch.bool)
    column[torch.as_tensor(keep, dtype=torch.long)] = True
    present[:, MODALITIES.index(missing)] = column
    return present


def add_noise(x: torch.Tensor, modality: str, sd: float, seed: int = 0) -> torch.Tensor:
    """A copy of packed samples ``x`` with Gaussian noise of SD ``sd`` added to one modality (for the audio, only
    inside its 20×20 corner), from its own seeded generator."""
    if modality not in MODALITIES:
        raise ValueError(f"modality must be one of {MODALITIES}, got {modality!r}")
    if sd < 0:
        raise ValueError(f"sd must be 0 or more, got {sd}")
    noisy = x.clone()
    region = noisy[:, 0] if modality == "image" else noisy[:, 1, :AUDIO_SHAPE[0], :AUDIO_SHAPE[1]]
    generator = torch.Generator().manual_seed(seed)
    region += sd * torch.randn(region.shape, generator=generator)
    return noisy


class AVMNISTStream(torch.utils.data.Dataset):
    """An endless stream of samples for :class:`mmkd_helpers.training.Trainer` (or a MetaKD meta stream).

    Item ``i`` is sample ``j`` drawn by a generator seeded with ``(seed, i)`` -- a pure function of ``i``, as
    :class:`mmkd_helpers.dataset.PatchDataset`'s, so a resumed run sees the same batches -- as a dict: ``image``
    float32 (2, 28, 28) (:func:`pack`), ``label`` int64 (), ``present`` bool (2,) (``present[j]``; all True when
    ``present`` is None), ``index`` j.
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, present: torch.Tensor | None = None, seed: int = 0,
                 length: int = 10**9):
        if len(x) == 0 or len(x) != len(y):
            raise ValueError(f"need as many labels as samples (at least one), got {len(x)} and {len(y)}")
        if present is None:
            present = torch.ones(len(x), len(MODALITIES), dtype=torch.bool)
        present = torch.as_tensor(present, dtype=torch.bool)
        if present.shape != (len(x), len(MODALITIES)):
            raise ValueError(f"present must be ({len(x)}, {len(MODALITIES)}), got {tuple(present.shape)}")
        if not present.any(dim=1).all():
            raise ValueError("every sample needs at least one present modality")
        self.x, self.y, self.present, self.seed, self.length = x, y, present, seed, length

    def __len__(self) -> int:
        return self.length

    def __getitem__(self, index: int) -> dict:
        j = int(np.random.default_rng([self.seed, index]).integers(len(self.y)))
        return {"image": self.x[j], "label": self.y[j], "present": self.present[j], "index": j}


# -- the network ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class AVMNISTConfig:
    channels: int = 16  # first convolution's channels (the second has twice as many), both encoders
    feature_dim: int = 64  # the per-modality feature f_i that is filled (Eq. 2) and distilled (Eq. 5)
    hidden: int = 64  # the head's hidden layer
    dropout: float = 0.25  # before each of the head's two FC layers
    num_modalities: int = len(MODALITIES)
    head: str = "digits"  # ten classes, cross-entropy

    def __post_init__(self):
        if min(self.channels, self.feature_dim, self.hidden) < 1:
            raise ValueError(f"channels, feature_dim and hidden must be at least 1, got {self.channels}, "
                             f"{self.feature_dim} and {self.hidden}")
        if not 0 <= self.dropout < 1:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout}")
        if self.num_modalities != len(MODALITIES) or self.head != "digits":
            raise ValueError(f"AV-MNIST has {len(MODALITIES)} modalities {MODALITIES} and the head 'digits'")

    def to_dict(self) -> dict:
        return asdict(self)


def image_encoder(c: int, dim: int) -> nn.Sequential:
    """28×28 → ``dim``: two 5×5 convolutions with 2×2 max pooling (LeNet), then a fully connected layer."""
    return nn.Sequential(nn.Conv2d(1, c, 5), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(c, 2 * c, 5), nn.ReLU(),
                         nn.MaxPool2d(2), nn.Flatten(), nn.Linear(2 * c * 4 * 4, dim), nn.ReLU())


def audio_encoder(c: int, dim: int) -> nn.Sequential:
    """20×20 → ``dim``: two padded 3×3 convolutions with 2×2 max pooling, then a fully connected layer."""
    return nn.Sequential(nn.Conv2d(1, c, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(c, 2 * c, 3, padding=1),
                         nn.ReLU(), nn.MaxPool2d(2), nn.Flatten(), nn.Linear(2 * c * 5 * 5, dim), nn.ReLU())


class AVMNISTNet(nn.Module):
    """Two encoders (image, spectrogram), mean filling of a missing modality's feature (MetaKD Eq. 2), and a
    classifier head on the concatenated features (Eq. 3). Takes ``(x, present)`` like the MRI networks: ``x`` the
    packed (N, 2, 28, 28) samples, ``present`` (N, 2) bool. A missing input is zeroed before its encoder, so
    nothing of it can leak; its feature is then replaced by the mean of the present ones."""

    task_term = "ce"  # the name of the task loss in the training history

    def __init__(self, config: AVMNISTConfig = AVMNISTConfig()):
        super().__init__()
        self.config = config
        c, dim = config.channels, config.feature_dim
        self.encoders = nn.ModuleList([image_encoder(c, dim), audio_encoder(c, dim)])
        self.head = nn.Sequential(nn.Dropout(config.dropout), nn.Linear(len(MODALITIES) * dim, config.hidden),
                                  nn.ReLU(), nn.Dropout(config.dropout), nn.Linear(config.hidden, NUM_CLASSES))

    @staticmethod
    def task_loss():
        """ℓ_task = ℓ_meta of MetaKD Eq. 4 for classification: cross-entropy, ``loss(logits, label)``."""
        return nn.functional.cross_entropy

    def encode(self, x: torch.Tensor, present: torch.Tensor) -> torch.Tensor:
        """Per-modality features (N, 2, feature_dim), Eq. 1; a missing input is zeroed first."""
        if x.dim() != 4 or tuple(x.shape[1:]) != (len(MODALITIES), *IMAGE_SHAPE):
            raise ValueError(f"expected packed samples (N, 2, 28, 28) (avmnist.pack), got {tuple(x.shape)}")
        keep = present.to(x.dtype).view(len(x), len(MODALITIES), 1, 1)
        x = x * keep
        image, audio = x[:, :1], x[:, 1:, :AUDIO_SHAPE[0], :AUDIO_SHAPE[1]]
        return torch.stack([self.encoders[0](image), self.encoders[1](audio)], dim=1)

    def forward(self, x: torch.Tensor, present: torch.Tensor | None = None,
                bottleneck_scale: torch.Tensor | None = None) -> ModelOutput:
        """``bottleneck_scale`` (2,) or (N, 2) multiplies each modality's feature after filling: MetaKD's meta step
        scales features by the importance weights; zeros switch a modality's feature off."""
        if present is None:
            present = torch.ones(len(x), len(MODALITIES), dtype=torch.bool, device=x.device)
        present = present.to(x.device).bool()
        features = self.encode(x, present)
        fused = fill_missing(features, present)
        if bottleneck_scale is not None:
            fused = fused * bottleneck_scale.view(*bottleneck_scale.shape, 1)  # (M,) or (N, M) against (N, M, C)
        return ModelOutput(self.head(fused.flatten(1)), [features], fused, present)


def present_mask(available, n: int) -> torch.Tensor:
    """(n, 2) bool from the names of the available modalities (``("image",)``, ``("audio",)``, both)."""
    names = (available,) if isinstance(available, str) else tuple(available)
    unknown = set(names) - set(MODALITIES)
    if unknown or not names:
        raise ValueError(f"available modalities must be a non-empty subset of {MODALITIES}, got {names}")
    return torch.tensor([m in names for m in MODALITIES]).expand(n, len(MODALITIES))


@torch.no_grad()
def predict(model: nn.Module, x: torch.Tensor, available=MODALITIES, batch_size: int = 1000,
            bottleneck_scale=None) -> torch.Tensor:
    """Predicted digits (N,) of ``model`` in evaluation mode with only the ``available`` modalities present."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    scale = None if bottleneck_scale is None else torch.as_tensor(bottleneck_scale, dtype=torch.float32, device=device)
    try:
        out = [model(x[i:i + batch_size].to(device), present_mask(available, len(x[i:i + batch_size])).to(device),
                     bottleneck_scale=scale).logits.argmax(dim=1).cpu() for i in range(0, len(x), batch_size)]
    finally:
        model.train(was_training)
    return torch.cat(out)


def accuracy(model: nn.Module, x: torch.Tensor, y: torch.Tensor, available=MODALITIES, **options) -> float:
    """Classification accuracy in % (the paper's metric, Table 3) with only the ``available`` modalities present."""
    return 100.0 * float((predict(model, x, available, **options) == y).float().mean())
