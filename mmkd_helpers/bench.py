"""Benchmarks (``mmkd bench``): figures printed, never asserted. Medians over repeats; machines are noisy."""

import statistics
import time


def _median_seconds(fn, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def peak_rss_mib() -> float:
    import resource

    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def bench_phantom(repeats: int = 5, size: int = 64) -> float:
    from .phantom import generate_case

    generate_case(0, size=size)  # load and cache the templates first
    seeds = iter(range(1, repeats + 1))
    return _median_seconds(lambda: generate_case(next(seeds), size=size), repeats)


def bench_train_step(repeats: int = 5, roi: int = 32, batch_size: int = 2, base_channels: int = 8) -> dict:
    """Median seconds of one training step of the teaching model, and its parameter count."""
    import torch

    from .losses import segmentation_loss
    from .models import ModelConfig, build_model, count_parameters

    model = build_model(ModelConfig(base_channels=base_channels))
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-3)
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


def run_benchmarks(repeats: int = 5) -> None:
    import torch

    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads")
    for size in (64, 96):
        print(f"phantom case {size}^3: {bench_phantom(repeats, size):.3f} s (median of {repeats})")
    for roi in (32, 48, 64):
        result = bench_train_step(repeats, roi=roi)
        print(f"train step, teaching model ({result['parameters'] / 1e6:.2f} M params), crop {roi}^3, batch 2: "
              f"{result['seconds']:.3f} s (median of {repeats}); peak RSS so far {peak_rss_mib():.0f} MiB")
