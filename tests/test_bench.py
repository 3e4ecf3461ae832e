"""The benchmark helpers measure what they say (figures are printed by ``mmkd bench``, never asserted)."""

import subprocess
import sys

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
