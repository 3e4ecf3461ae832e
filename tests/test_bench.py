"""The benchmark helpers measure what they say (figures are printed by ``mmkd bench``, never asserted)."""

import subprocess
import sys

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
