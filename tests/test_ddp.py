"""Multi-process training (DistributedDataParallel, as ``torchrun`` runs it), on CPU with the gloo backend.

Two processes train the teaching UNet through the one Trainer: with P*_mix (its mixture weights are the method's
own parameters, in the engine's optimiser) and with MetaKD (its IWV has its own meta optimiser). The test checks
that the ranks train on different samples, that the gradients they step with are the same in both processes and
equal to the mean of the two processes' own gradients (the model's and the method's), that MetaKD's IWV stays
the same everywhere, that only rank 0 writes the checkpoint, and that a run paused and resumed with 2 processes
ends where the uninterrupted one does. About 30-60 s on a 2-core CPU (process start-up, torch import, 3 runs).
"""

import os
import socket

import numpy as np
import torch
import torch.multiprocessing as mp

from mmkd_helpers.dataset import PatchDataset
from mmkd_helpers.methods import Hook, build_method
from mmkd_helpers.models import ModelConfig, build_model
from mmkd_helpers.training import TrainConfig, Trainer

CONFIG = ModelConfig(base_channels=4, depth=3, skip_dropout=0.0)  # no random masks: gradients can be replayed
STEPS, BATCH = 4, 2
WATCHED = ("encoder.0.conv1.conv.weight", "head.weight")


def volumes(n=4, size=24, seed=0):
    rng = np.random.default_rng(seed)
    result = []
    for _ in range(n):
        label = np.zeros((size,) * 3, np.uint8)
        a = int(rng.integers(2, size // 2))
        label[a:a + 8, a:a + 8, a:a + 8] = 2
        label[a + 2:a + 6, a + 2:a + 6, a + 2:a + 6] = 4
        images = rng.normal(0, 0.3, (4, size, size, size)).astype(np.float32) + (label[None] > 0) * 2.0
        result.append((images, label))
    return result


def dataset():
    return PatchDataset(volumes(), (16, 16, 16), seed=0, drop_policy="none")  # P*_mix aligns present pairs


def trainer(method, out_dir, **train):
    torch.manual_seed(0)
    config = TrainConfig(steps=STEPS, batch_size=BATCH, lr=1e-2, **train)
    val = [(f"v{i}", images, label) for i, (images, label) in enumerate(volumes(2, seed=1))]
    return Trainer(build_model(CONFIG), dataset(), config, method, out_dir=out_dir, device="cpu", progress=False,
                   val_volumes=val)


def recording(method):
    """``method`` with a hook that records, after every step, what this process stepped with."""
    record = {"images": [], "grads": [], "method_grads": []}
    loss_terms = method.loss_terms

    def terms(model, batch, output):
        record["images"].append(batch["image"].sum(dim=(1, 2, 3, 4)).tolist())
        return loss_terms(model, batch, output)

    def hook(trainer, step):
        named = dict(trainer.model.named_parameters())
        record["grads"].append({name: named[name].grad.clone() for name in WATCHED})
        record["method_grads"].append([p.grad.clone() for p in method.parameters()])

    method.loss_terms = terms
    method.hooks = lambda hooks=method.hooks: hooks() + [Hook(1, hook, "record")]
    return method, record


def worker(rank, world, port, tmp):
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port), WORLD_SIZE=str(world), RANK=str(rank),
                      LOCAL_RANK=str(rank))
    torch.set_num_threads(1)
    result = {}
    # 1. P*_mix, uninterrupted, each rank with its own output folder: only rank 0's may receive a checkpoint
    method, record = recording(build_method("pmix", anchor="mixture", lam=1.0))
    run = trainer(method, f"{tmp}/own{rank}")
    run.fit()
    result["pmix"] = {**record, "state": run.model.state_dict(), "raw": method.raw.detach().clone()}
    # 2. the same run paused after 2 steps and resumed in a new Trainer, in one shared folder
    paused = trainer(build_method("pmix", anchor="mixture", lam=1.0), f"{tmp}/shared")
    paused.fit(stop_at=2)
    resumed_method = build_method("pmix", anchor="mixture", lam=1.0)
    resumed = trainer(resumed_method, f"{tmp}/shared")
    resumed.fit(resume=True)
    result["resumed"] = {"state": resumed.model.state_dict(), "raw": resumed_method.raw.detach().clone()}
    # 3. MetaKD: alternating meta phases every 2 steps on each rank's own meta patches
    metakd = build_method("metakd", meta_every=2, meta_steps=2)
    trainer(metakd, None).fit()
    result["metakd"] = {"iwv": metakd.iwv().detach().clone(), "log": metakd.log}
    torch.save(result, f"{tmp}/rank{rank}.pt")
    torch.distributed.destroy_process_group()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def local_gradients(rank, world=2):
    """The gradients one process computes at step 1, alone: the model at its initial weights, the batch of
    ``rank`` (StepSampler: step 0's samples for rank r are (0 * world + r) * batch + k)."""
    method = build_method("pmix", anchor="mixture", lam=1.0)
    torch.manual_seed(0)
    model = build_model(CONFIG)
    data = dataset()
    batch = torch.utils.data.default_collate([data[rank * BATCH + k] for k in range(BATCH)])
    run = Trainer(model, data, TrainConfig(steps=STEPS, batch_size=BATCH), method, device="cpu", progress=False)
    output = model(batch["image"], batch["present"])
    loss = run.seg_loss(output.logits.float(), batch["label"]) + sum(method.loss_terms(model, batch, output).values())
    loss.backward()
    named = dict(model.named_parameters())
    return {name: named[name].grad for name in WATCHED}, method.raw.grad


def test_two_processes_average_gradients_and_resume_exactly(tmp_path):
    mp.spawn(worker, args=(2, free_port(), str(tmp_path)), nprocs=2, join=True)
    ranks = [torch.load(tmp_path / f"rank{r}.pt", weights_only=False) for r in range(2)]
    first, second = ranks[0]["pmix"], ranks[1]["pmix"]

    # different samples on the two ranks, at every step
    assert len(first["images"]) == STEPS
    for a, b in zip(first["images"], second["images"]):
        assert not np.allclose(a, b)

    # the same gradients in both processes (model and method), equal to the mean of the two processes' own
    for step in range(STEPS):
        for name in WATCHED:
            assert torch.equal(first["grads"][step][name], second["grads"][step][name]), (step, name)
        assert torch.equal(first["method_grads"][step][0], second["method_grads"][step][0])
    local = [local_gradients(rank) for rank in range(2)]
    for name in WATCHED:
        mean = (local[0][0][name] + local[1][0][name]) / 2
        torch.testing.assert_close(first["grads"][0][name], mean, rtol=1e-4, atol=1e-7)
        assert not torch.allclose(local[0][0][name], local[1][0][name])  # so the mean is not either one's
    torch.testing.assert_close(first["method_grads"][0][0], (local[0][1] + local[1][1]) / 2, rtol=1e-4, atol=1e-8)
    for key, value in first["state"].items():
        assert torch.equal(value, second["state"][key]), key

    # only rank 0 writes
    assert (tmp_path / "own0" / "last.pt").exists() and not (tmp_path / "own1").exists()

    # paused after 2 steps and resumed by 2 processes == uninterrupted
    for rank in ranks:
        for key, value in first["state"].items():
            torch.testing.assert_close(rank["resumed"]["state"][key], value, rtol=0, atol=0)
        assert torch.equal(rank["resumed"]["raw"], first["raw"])

    # MetaKD: the IWV moved, and is the same in every process
    iwv = [rank["metakd"]["iwv"] for rank in ranks]
    assert torch.equal(iwv[0], iwv[1])
    assert len(ranks[0]["metakd"]["log"]) == 1 + STEPS // 2
    assert ranks[0]["metakd"]["log"][-1] != ranks[0]["metakd"]["log"][0]
