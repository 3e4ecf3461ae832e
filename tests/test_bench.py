"""The benchmark helpers measure what they say (figures are printed by ``mmkd bench``, never asserted)."""

import subprocess
import sys

import numpy as np
import pandas as pd

from mmkd_helpers.bench import peak_rss_mib


def test_peak_memory_grows_with_an_allocation():
    before = peak_rss_mib()
    block = bytearray(200 * 2**20)
    block[::4096] = b"x" * len(block[::4096])  # touch every page so that it is resident
    assert peak_rss_mib() >= before + 150


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
