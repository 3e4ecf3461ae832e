"""Benchmarks (``mmkd bench``): figures printed, never asserted. Medians over repeats; machines are noisy.

Besides the course's own figures, ``mmkd bench`` measures what a paper-sized run costs on the machine at hand,
beside what the LCKD paper reports (:data:`PAPER`): a training step and its peak memory for the teaching UNet and
the papers' networks (:mod:`mmkd_helpers.backbones`), the segmentation of one BraTS-sized case, and how fast
cases come out of the preprocessed cache."""

import ctypes
import ctypes.util
import gc
import json
import resource
import statistics
import subprocess
import sys
import time
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from .constants import COMBINATIONS
from .checkpoints import RUNS, run_config
from .course import CourseConfig, course_trainer, ensure_phantom, load_data
from .data import find_cases
from .evaluation import predict_combinations
from .losses import segmentation_loss
from .methods import build_method
from .models import ModelConfig, build_model, count_parameters
from .paths import default_data_dir
from .phantom import generate_case
from .preprocess import PreprocessConfig, cache_cases, load_cached
from .training import TrainConfig, configure_optimizer


def _median_seconds(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def peak_rss_mib() -> float:
    """Peak resident memory of this process in MiB.

    On Linux this reads ``VmHWM`` from ``/proc/self/status``: ``getrusage``'s ``ru_maxrss`` survives
    ``fork`` + ``exec``, so a fresh process started from a big one (a Jupyter kernel) would report its
    parent's peak. Elsewhere it falls back to ``ru_maxrss`` (KiB on Linux, bytes on macOS).
    """

    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024


def bench_phantom(repeats: int = 5, size: int = 64) -> float:

    generate_case(0, size=size)  # load and cache the templates first
    seeds = iter(range(1, repeats + 1))
    return _median_seconds(lambda: generate_case(next(seeds), size=size), repeats)


def bench_train_step(repeats: int = 5, roi: int = 32, batch_size: int = 2, base_channels: int = 8) -> dict:
    """Median seconds of one training step of the teaching model, and its parameter count."""

    model = build_model(ModelConfig(base_channels=base_channels))
    optimizer = configure_optimizer(model, TrainConfig(lr=1e-3))
    loss_fn = segmentation_loss("regions")
    image = torch.randn(batch_size, 4, roi, roi, roi)
    label = torch.randint(0, 3, (batch_size, roi, roi, roi))
    present = torch.ones(batch_size, 4, dtype=torch.bool)

    def step():
        optimizer.zero_grad()
        loss_fn(model(image, present).logits, label).backward()
        optimizer.step()

    step()  # warm-up
    return {"seconds": _median_seconds(step, repeats), "parameters": count_parameters(model)}


def bench_evaluation(repeats: int = 3, size: int = 64, roi: int = 32, overlap: float = 1 / 3) -> dict:
    """Median seconds to score one phantom-sized case under all 15 combinations: one forward pass per
    combination (as before 2026-12) against one encoder pass per window shared by all of them
    (``forward_combinations``, what :func:`mmkd_helpers.evaluation.evaluate` does)."""

    model = build_model(ModelConfig()).eval()
    image = torch.randn(4, size, size, size).numpy()

    class OnePassEach(torch.nn.Module):  # hides forward_combinations: the evaluation falls back to a loop
        def __init__(self):
            super().__init__()
            self.model, self.config = model, model.config

        def forward(self, x, present):
            return self.model(x, present)

    looped, batched = OnePassEach(), model
    predict_combinations(batched, image, COMBINATIONS, (roi,) * 3, overlap)  # warm-up
    result = {}
    for name, m in (("one pass per combination", looped), ("shared encoder pass", batched)):
        result[name] = _median_seconds(lambda: predict_combinations(m, image, COMBINATIONS, (roi,) * 3, overlap), repeats)
    return result


def run_benchmarks(repeats: int = 5) -> None:

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    for size in (64, 96):
        print(f"phantom case {size}^3: {bench_phantom(repeats, size):.3f} s (median of {repeats})")
    for roi in (32, 48, 64):
        result = bench_train_step(repeats, roi=roi)
        print(f"train step, teaching model ({result['parameters'] / 1e6:.2f} M params), crop {roi}^3, batch 2: "
              f"{result['seconds']:.3f} s (median of {repeats}); peak RSS so far {peak_rss_mib():.0f} MiB")
    evaluation = bench_evaluation(max(1, repeats // 2))
    (loop, loop_s), (shared, shared_s) = evaluation.items()
    print(f"evaluation of one 64^3 case, 15 combinations, 32^3 windows: {loop} {loop_s:.2f} s, {shared} "
          f"{shared_s:.2f} s ({loop_s / shared_s:.1f}x)")


def _method_cost(method: str, options: dict, steps: int) -> dict:
    """Train ``steps`` steps of the teaching model with a method on a few phantoms; time and peak memory."""

    config = _cost_config(steps)
    # The phantoms were generated and cached by the parent (method_cost): the peak memory of this process
    # is the training's, not the phantom generator's (which loads the MNI152 templates, about 1 GiB).
    data = load_data(ensure_phantom(config), config, progress=False)
    trainer = course_trainer(config, data, build_method(method, **options), device="cpu", progress=False)
    started = time.perf_counter()
    history = trainer.fit()
    wall = time.perf_counter() - started
    return {"method": method, "options": options, "steps": steps, "seconds_per_step": wall / steps,
            "median_step_seconds": float(history["seconds"].median()), "peak_rss_mib": peak_rss_mib()}


def _cost_config(steps: int):
    config = CourseConfig(phantom_cases=8)
    return replace(config, train=replace(config.train, steps=steps))


def method_cost(method: str, options: dict | None = None, steps: int = 40) -> dict:
    """Wall time per step (hooks included) and peak resident memory of a method, measured in a fresh
    process so that one measurement's memory does not leak into the next."""

    config = _cost_config(steps)
    load_data(ensure_phantom(config), config, progress=False)  # generate and cache the data here, not in the child
    code = (f"import json; from mmkd_helpers.bench import _method_cost; "
            f"print(json.dumps(_method_cost({method!r}, {options or {}!r}, {steps})))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def _status_mib(field: str) -> float | None:
    status = Path("/proc/self/status")
    if status.exists():
        for line in status.read_text().splitlines():
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    return None


def current_rss_mib() -> float:
    """Resident memory of this process now, in MiB (Linux; elsewhere the peak, :func:`peak_rss_mib`)."""
    value = _status_mib("VmRSS")
    return peak_rss_mib() if value is None else value


def reset_peak_rss() -> bool:
    """Set this process's peak resident memory back to its current size, so that the next :func:`peak_rss_mib`
    covers only what follows (Linux 4.0 and later: ``/proc/self/clear_refs``). Freed memory is first handed back
    to the system (``malloc_trim``), so that one measurement does not hide in the next one's reused heap. Returns
    False where the peak cannot be reset (macOS, Windows): the peak then covers the process's whole life."""

    gc.collect()
    libc = ctypes.util.find_library("c")
    if libc and sys.platform.startswith("linux"):
        try:
            ctypes.CDLL(libc).malloc_trim(0)
        except (OSError, AttributeError):
            pass
    try:
        Path("/proc/self/clear_refs").write_text("5")
    except OSError:
        return False
    return True


def _hooked_trainer(name: str, config, data: dict, device: str):
    """A course trainer for the run ``name`` of :data:`~mmkd_helpers.checkpoints.RUNS`, its teacher (if any) a
    fresh network of the teacher run's architecture: what a step costs does not depend on the teacher's weights."""
    run = RUNS[name]
    options = dict(run["options"])
    if "teacher" in run:
        torch.manual_seed(0)
        options["teacher"] = build_model(run_config(run["teacher"], config).model)
    return course_trainer(run_config(name, config), data, build_method(run["method"], **options), device=device,
                          progress=False)


def run_costs(names, config, data: dict, rounds: int = 3, election_cases: int = 2, meta_steps: int = 2,
              device: str = "cpu"):
    """What training the runs ``names`` of :data:`~mmkd_helpers.checkpoints.RUNS` costs, measured in this process
    on ``data`` with ``config`` (the course configuration; each run applies its own changes).

    After one throwaway step, per run, one after the other: a trainer is built, one step taken (warm-up), each of the method's hooks called
    once and timed (LCKD's teacher election on ``election_cases`` validation cases, scaled to all of them; MetaKD's
    alternating phase with ``meta_steps`` of its meta steps, scaled to all of them; its look-ahead), and the peak resident memory above what the process held before is read
    (:func:`reset_peak_rss`; NaN where it cannot be reset). Then ``rounds`` rounds take one more step of every run,
    in an order that rotates from round to round, so that a machine whose load drifts favours no run: the median
    of the engine's step time (forward, backward, optimiser; the ``seconds`` column of the training history) is
    the step time. A DataFrame, one row per run: ``step_s``, ``steps`` (the run's budget), ``hook``, ``hook_s``
    (one call), ``hook_every``, ``hook_s_per_step`` (amortised over its schedule), ``seconds_per_step``
    (``step_s`` + ``hook_s_per_step``), ``train_s`` (the budget at that rate), ``peak_mib``, ``parameters``.
    Figures of a shared machine: read the ratios between runs, not the absolute values.
    """

    names = list(names)
    if names:  # a throwaway step first: the libraries' one-off allocations (thread pools, buffers) then count in no run
        _hooked_trainer(names[0], config, data, device).fit(stop_at=1)
    trainers, rows = {}, {}
    for name in names:
        resettable = reset_peak_rss()
        resting = current_rss_mib()
        trainer = _hooked_trainer(name, config, data, device)
        trainer.fit(stop_at=1)
        hook_names, hook_s, every = [], 0.0, 0
        for hook in trainer.method.hooks():
            volumes, method = trainer.val_volumes, trainer.method
            scale, all_meta_steps = 1.0, getattr(method, "meta_steps", None)
            if hook.name == "teacher election":  # one sliding-window inference per case: proportional to the cases
                trainer.val_volumes = volumes[:election_cases]
                scale = len(volumes) / max(1, len(trainer.val_volumes))
            elif getattr(method, "meta", None) == "alternating":  # a phase is meta_steps equal Adam steps on w
                method.meta_steps = min(all_meta_steps, meta_steps)
                scale = all_meta_steps / method.meta_steps
            started = time.perf_counter()
            hook.fn(trainer, trainer.step)
            hook_s += (time.perf_counter() - started) * scale
            trainer.val_volumes = volumes
            if all_meta_steps is not None:
                method.meta_steps = all_meta_steps
            trainer.model.train()
            hook_names.append(hook.name)
            every = hook.every if not every else min(every, hook.every)
        peak = peak_rss_mib() - resting if resettable else float("nan")
        trainers[name] = trainer
        rows[name] = {"run": name, "steps": trainer.config.steps, "hook": ", ".join(hook_names) or None,
                      "hook_s": hook_s, "hook_every": every, "peak_mib": peak,
                      "parameters": count_parameters(trainer.model), "step_times": []}
    order = list(names)
    for r in range(rounds):
        for name in order[r % len(order):] + order[:r % len(order)]:
            trainer = trainers[name]
            trainer.fit(stop_at=trainer.step + 1)
            rows[name]["step_times"].append(float(trainer.history[-1]["seconds"]))
    table = pd.DataFrame(rows.values()).set_index("run")
    table["step_s"] = [statistics.median(times) if times else float("nan") for times in table.pop("step_times")]
    table["hook_s_per_step"] = [h / e if e else 0.0 for h, e in zip(table.hook_s, table.hook_every)]
    table["seconds_per_step"] = table.step_s + table.hook_s_per_step
    table["train_s"] = table.seconds_per_step * table.steps
    return table[["step_s", "steps", "hook", "hook_s", "hook_every", "hook_s_per_step", "seconds_per_step", "train_s",
                  "peak_mib", "parameters"]]
# -- the papers' costs -------------------------------------------------------------------------------------------
PAPER = {"step_seconds": 70 * 3600 / 115_000, "case_seconds": 6.43, "memory_mib": 19_795}
"""What the LCKD paper reports (Wang et al., MICCAI 2023; one RTX 3090): about 70 h for 115 000 iterations at batch
2 (2.2 s per iteration), 6.43 s to segment one test case, 19 795 MiB of GPU memory in training at batch 2."""

PAPER_CROP = (160, 160, 80)
"""The LCKD code's 80×160×160 training crop and sliding window, in this package's (x, y, z) order."""

BRATS_SHAPE = (240, 240, 155)
BRATS_2MM = (120, 120, 78)


def paper_sizes(device: str, quick: bool = False) -> dict:
    """The sizes ``mmkd bench`` measures at: the paper's on a GPU (crop 160x160x80, batch 2, a 240x240x155 case in
    160x160x80 windows); on a CPU a 64x64x32 crop and one case at the course's 2 mm, 120x120x78, segmented by the
    teaching UNet in its 32^3 windows (a laptop does it in minutes); ``quick``: smoke-test sizes."""
    if device == "cuda" and not quick:
        return {"crop": PAPER_CROP, "batch": 2, "volume": BRATS_SHAPE, "window": PAPER_CROP, "volume_backbone": None}
    if quick:
        return {"crop": (32, 32, 32), "batch": 1, "volume": (96, 96, 64), "window": (32, 32, 32),
                "volume_backbone": "unet"}
    return {"crop": (64, 64, 32), "batch": 2, "volume": BRATS_2MM, "window": (32, 32, 32), "volume_backbone": "unet"}


def _device() -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu")


def _paper_step(backbone: str, crop, batch: int, repeats: int) -> dict:
    """Median seconds of one training step (segmentation loss, SGD as the LCKD code) of ``backbone`` at ``crop``
    and ``batch``, with one modality missing per sample, and the peak memory: CUDA's peak allocation on a GPU,
    the process's peak resident memory on a CPU (this runs in a fresh process: :func:`paper_step`)."""
    device = _device()
    model = build_model(ModelConfig(backbone=backbone, skip_dropout=0.0)).to(device)
    optimizer = configure_optimizer(model, TrainConfig(optimizer="sgd", lr=1e-2))
    loss_fn = segmentation_loss("regions")
    image = torch.randn(batch, 4, *crop, device=device)
    label = torch.randint(0, 3, (batch, *crop), device=device)
    present = torch.ones(batch, 4, dtype=torch.bool, device=device)
    present[:, 1] = False

    def step():
        optimizer.zero_grad()
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=device.type == "cuda"):
            logits = model(image, present).logits
        loss_fn(logits.float(), label).backward()
        optimizer.step()
        if device.type == "cuda":
            torch.cuda.synchronize()

    step()  # warm-up
    seconds = _median_seconds(step, repeats)
    memory = torch.cuda.max_memory_allocated() / 2**20 if device.type == "cuda" else peak_rss_mib()
    return {"backbone": backbone, "crop": list(crop), "batch": batch, "seconds": seconds, "memory_mib": memory,
            "memory_kind": "GPU peak allocated" if device.type == "cuda" else "CPU peak resident",
            "parameters": count_parameters(model), "device": str(device)}


def _child(code: str) -> dict:
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return json.loads(out.stdout.strip().splitlines()[-1])


def paper_step(backbone: str, crop, batch: int, repeats: int = 3) -> dict:
    """:func:`_paper_step` in a fresh process, so that its memory is its own."""
    return _child(f"import json; from mmkd_helpers.bench import _paper_step; "
                  f"print(json.dumps(_paper_step({backbone!r}, {tuple(crop)!r}, {batch}, {repeats})))")


def bench_case_inference(backbone: str, shape, window, repeats: int = 1) -> dict:
    """Median seconds to segment one ``shape`` volume with all four modalities: sliding windows of ``window``,
    overlap 1/3 (the LCKD code's), one combination."""
    device = _device()
    model = build_model(ModelConfig(backbone=backbone)).to(device).eval()
    image = torch.randn(4, *shape).numpy()
    every = [(True,) * 4]

    def run():
        predict_combinations(model, image, every, tuple(window), 1 / 3, device=device)
        if device.type == "cuda":
            torch.cuda.synchronize()

    return {"backbone": backbone, "shape": list(shape), "window": list(window),
            "seconds": _median_seconds(run, repeats), "device": str(device)}


class _CachedCases(torch.utils.data.Dataset):
    def __init__(self, entries):
        self.entries = entries

    def __len__(self):
        return len(self.entries)

    def __getitem__(self, index):
        images, label = load_cached(self.entries[index], mmap=False)  # read the whole case from disk
        return torch.from_numpy(np.ascontiguousarray(images)).sum()


def bench_data_loading(folder, workers=(0, 2), rounds: int = 3, cache_dir=None) -> dict:
    """Cases per second read from the preprocessed cache (``.npy`` arrays, as training reads them) through a
    DataLoader with each number of worker processes; the cache is built first if needed."""
    refs = find_cases(folder)
    if cache_dir is None:
        cache_dir = default_data_dir() / "cache" / f"bench-{Path(folder).name}"
    dataset = _CachedCases(cache_cases(refs, cache_dir, PreprocessConfig(), progress=False) * rounds)
    result = {}
    for n in workers:
        loader = torch.utils.data.DataLoader(dataset, batch_size=1, num_workers=n)
        started = time.perf_counter()
        for _ in loader:
            pass
        result[n] = len(dataset) / (time.perf_counter() - started)
    return result


def paper_table(steps: dict, inference: dict, device: str) -> str:
    """The measured figures beside the LCKD paper's, as text lines, with the ratio measured / paper."""
    lines = [f"-- against the LCKD paper's figures (one RTX 3090; theirs at crop 80x160x160, batch 2) on {device}"]
    for name, step in steps.items():
        crop = "x".join(map(str, step["crop"]))
        lines.append(f"train step, {name} ({step['parameters'] / 1e6:.2f} M), crop {crop}, batch {step['batch']}: "
                     f"{step['seconds']:.2f} s ({step['seconds'] / PAPER['step_seconds']:.2f}x the paper's "
                     f"{PAPER['step_seconds']:.2f} s); {step['memory_kind']} {step['memory_mib']:.0f} MiB "
                     f"({step['memory_mib'] / PAPER['memory_mib']:.2f}x the paper's {PAPER['memory_mib']} MiB)")
    shape = "x".join(map(str, inference["shape"]))
    lines.append(f"one case {shape}, {inference['backbone']}, windows {'x'.join(map(str, inference['window']))}: "
                 f"{inference['seconds']:.2f} s ({inference['seconds'] / PAPER['case_seconds']:.2f}x the paper's "
                 f"{PAPER['case_seconds']} s)")
    if device == "cpu":
        lines.append("(CPU: smaller crops than the paper's 160x160x80, and the case segmented by the teaching UNet, "
                     "at the course's 2 mm (120x120x78) unless --quick; the ratios compare unlike work and only say "
                     "how far this CPU is from a paper-sized run)")
    return "\n".join(lines)


def run_paper_benchmarks(backbones=("unet", "lckd_resnet50_aspp"), quick: bool = False, repeats: int = 3,
                         data_folder=None, cache_dir=None) -> dict:
    """``mmkd bench``'s comparison with the papers: training step time and peak memory of each backbone,
    sliding-window inference of one BraTS-sized case and data-loading throughput, printed and returned."""
    device = _device().type
    sizes = paper_sizes(device, quick)
    steps = {}
    for backbone in backbones:
        crop = sizes["crop"]
        if backbone == "unet" and any(c % 8 for c in crop):
            continue
        steps[backbone] = paper_step(backbone, crop, sizes["batch"], repeats)
    inference_backbone = sizes["volume_backbone"] or backbones[-1]
    window = sizes["window"] if inference_backbone == "unet" or device == "cuda" else PAPER_CROP
    inference = bench_case_inference(inference_backbone, sizes["volume"], window)
    print(paper_table(steps, inference, device))
    loading = None
    if data_folder is not None:
        loading = bench_data_loading(data_folder, cache_dir=cache_dir)
        print("data loading from the preprocessed cache: " + ", ".join(
            f"{n} workers {rate:.1f} cases/s" for n, rate in loading.items()))
    return {"steps": steps, "inference": inference, "loading": loading, "device": device, "sizes": sizes}
