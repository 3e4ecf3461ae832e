"""The benchmark helpers measure what they say (figures are printed by ``mmkd bench``, never asserted)."""

import subprocess
import sys

import numpy as np
import pandas as pd

from mmkd_helpers.bench import peak_rss_mib


def test_peak_memory_grows_with_an_allocation():
    """In a fresh process: this one's peak may already be far above its current use (an earlier test's model),
    and a peak only grows past its old value."""
    code = ("from mmkd_helpers.bench import peak_rss_mib; before = peak_rss_mib(); block = bytearray(200 * 2**20); "
            "block[::4096] = b'x' * len(block[::4096]); print(before, peak_rss_mib())")  # touch every page
    before, after = map(float, subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                                              check=True).stdout.split())
    assert after >= before + 150


def test_a_fresh_process_does_not_report_its_parents_peak():
    """method_cost runs each method in a child process; ``ru_maxrss`` would carry the parent's peak over exec."""
    block = bytearray(300 * 2**20)
    block[::4096] = b"x" * len(block[::4096])
    parent = peak_rss_mib()
    child = float(subprocess.run([sys.executable, "-c", "from mmkd_helpers.bench import peak_rss_mib; "
                                  "print(peak_rss_mib())"], capture_output=True, text=True, check=True).stdout)
    assert child < parent - 250, (child, parent)


def test_the_peak_can_be_reset_between_measurements():
    """run_costs reads each network's peak memory above what the process held before it: the peak must be resettable."""
    import pytest

    from mmkd_helpers.bench import current_rss_mib, reset_peak_rss

    block = bytearray(200 * 2**20)
    block[::4096] = b"x" * len(block[::4096])
    del block
    if not reset_peak_rss():
        pytest.skip("the peak resident memory cannot be reset on this system")
    assert peak_rss_mib() < current_rss_mib() + 100


def test_run_costs_adds_up(tmp_path, monkeypatch):
    """The fast course configuration, two runs: the columns are what the docstring says, and they add up
    (hook time per step = one call / its schedule; the budget's time = (step + hook per step) x steps)."""
    import pytest

    from mmkd_helpers.bench import run_costs
    from mmkd_helpers.course import course_config, ensure_phantom, load_data

    monkeypatch.setenv("MMKD_DATA_DIR", str(tmp_path))
    config = course_config(fast=True)
    data = load_data(ensure_phantom(config), config, progress=False)
    table = run_costs(["baseline", "metakd"], config, data, rounds=2)
    assert list(table.index) == ["baseline", "metakd"]
    assert pd.isna(table.loc["baseline", "hook"]) and table.loc["baseline", "hook_s"] == 0
    assert table.loc["metakd", "hook"] == "metakd-alternating" and table.loc["metakd", "hook_every"] == 100
    assert table.loc["metakd", "hook_s_per_step"] == pytest.approx(table.loc["metakd", "hook_s"] / 100)
    assert np.allclose(table.train_s, (table.step_s + table.hook_s_per_step) * table.steps)
    assert (table.step_s > 0).all() and (table.steps == config.train.steps).all()

def test_paper_benchmarks_at_tiny_sizes(tmp_path, monkeypatch):
    """The comparison with the papers runs end to end (figures printed, not asserted), every backbone included."""
    import mmkd_helpers.bench as bench
    from mmkd_helpers.phantom import generate_dataset

    monkeypatch.setattr(bench, "paper_sizes", lambda device, quick: {
        "crop": (32, 32, 32), "batch": 1, "volume": (32, 32, 32), "window": (32, 32, 32), "volume_backbone": "unet"})
    generate_dataset(tmp_path / "cases", 2, size=16, seed=0)
    result = bench.run_paper_benchmarks(("unet", "protokd_vnet"), repeats=1, data_folder=tmp_path / "cases",
                                        cache_dir=tmp_path / "cache")
    assert set(result["steps"]) == {"unet", "protokd_vnet"}
    for step in result["steps"].values():
        assert step["seconds"] > 0 and step["memory_mib"] > 0 and step["crop"] == [32, 32, 32]
    assert result["inference"]["seconds"] > 0 and set(result["loading"]) == {0, 2}
    table = bench.paper_table(result["steps"], result["inference"], "cpu")
    assert "the paper's 2.19 s" in table and "19795 MiB" in table and "CPU: smaller crops" in table
