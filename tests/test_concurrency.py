"""Concurrency and disk: two processes building the same thing at once, and a disk that fills up mid-write.

The races use real processes started together behind a barrier, each slowed down where the race would
happen, so that without the locks they would overlap (and lose an update, or build twice) every time.
"""

import errno
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from mmkd_helpers import course
from mmkd_helpers.course import CourseConfig, ensure_phantom, phantom_dir
from mmkd_helpers.fileio import WriteError, atomic_path, atomic_write_text

REPO = Path(__file__).resolve().parents[1]

BARRIER = """
import pathlib, sys, time
def barrier():
    ready = pathlib.Path(sys.argv[1])
    (ready / sys.argv[2]).touch()
    while len(list(ready.iterdir())) < int(sys.argv[3]):
        time.sleep(0.005)
"""


def race(tmp_path, code: str, n=2, args=(), timeout=60) -> list:
    """Run ``code`` in ``n`` processes at once; it calls ``barrier()`` where they should start together.

    ``sys.argv[4:]`` holds ``args``; returns (returncode, stdout, stderr) per process.
    """
    ready = tmp_path / "barrier"
    ready.mkdir()
    processes = [subprocess.Popen([sys.executable, "-c", BARRIER + code, str(ready), str(i), str(n), *map(str, args)],
                                  cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
                 for i in range(n)]
    results = []
    for process in processes:
        out, err = process.communicate(timeout=timeout)
        results.append((process.returncode, out, err))
    for code_, _, err in results:
        if code_ != 0:
            pytest.fail(f"a racing process failed:\n{err}")
    return results


def no_leftovers(folder: Path) -> list:
    """Temporary folders, backups and lock files that should be gone once everyone has finished."""
    return [p for p in folder.rglob("*") if p.name.startswith(".") or p.name.endswith((".tmp", ".lock"))]


# --------------------------------------------------------------------------- file_lock

COUNTER = """
from mmkd_helpers.fileio import file_lock
counter, lock = pathlib.Path(sys.argv[4]), pathlib.Path(sys.argv[5])
barrier()
for _ in range(15):
    with file_lock(lock):
        n = int(counter.read_text())
        time.sleep(0.002)  # the window in which an unlocked read-modify-write loses the other's update
        counter.write_text(str(n + 1))
"""


def test_file_lock_serialises_read_modify_write_across_processes(tmp_path):
    counter = tmp_path / "counter"
    counter.write_text("0")
    # Three processes: the one that leaves removes the lock file while another waits on it and a third may be
    # creating a new one, the case the lock's re-check of the file exists for.
    race(tmp_path, COUNTER, n=3, args=(counter, tmp_path / "locks" / "counter.lock"))
    assert counter.read_text() == "45"
    assert list((tmp_path / "locks").iterdir()) == []  # the lock file is removed by whoever leaves last


# --------------------------------------------------------------------------- a full disk during an atomic write

def _fill_disk(tmp):
    with open(tmp, "wb") as f:
        f.write(b"half of the new ")
        raise OSError(errno.ENOSPC, "No space left on device")


def test_disk_full_during_an_atomic_write_keeps_the_previous_file(tmp_path):
    path = tmp_path / "model.pt"
    path.write_bytes(b"the previous checkpoint")
    with pytest.raises(WriteError) as error:
        with atomic_path(path) as tmp:
            _fill_disk(tmp)
    assert str(error.value) == (f"{path}: could not write (No space left on device); "
                                "the previous file is unchanged")
    assert error.value.errno == errno.ENOSPC and error.value.filename == str(path)
    assert path.read_bytes() == b"the previous checkpoint"
    assert [p.name for p in tmp_path.iterdir()] == ["model.pt"]  # the temporary is gone


def test_disk_full_during_a_first_write_leaves_nothing(tmp_path):
    with pytest.raises(WriteError, match=r"new\.json: could not write \(No space left on device\); nothing was "
                                         r"written$"):
        with atomic_path(tmp_path / "new.json") as tmp:
            _fill_disk(tmp)
    assert list(tmp_path.iterdir()) == []


def test_disk_full_while_writing_a_folder_keeps_the_previous_folder(tmp_path):
    folder = tmp_path / "cases"
    folder.mkdir()
    (folder / "a.nii.gz").write_bytes(b"old")
    with pytest.raises(WriteError, match="the previous folder is unchanged"):
        with atomic_path(folder) as tmp:
            tmp.mkdir()
            (tmp / "a.nii.gz").write_bytes(b"new")
            _fill_disk(tmp / "b.nii.gz")
    assert [p.name for p in tmp_path.iterdir()] == ["cases"]
    assert [(p.name, p.read_bytes()) for p in folder.iterdir()] == [("a.nii.gz", b"old")]


def test_other_errors_inside_an_atomic_write_pass_through_unchanged(tmp_path):
    """A missing input or a network error is not the destination's fault and must not be reported as one."""
    with pytest.raises(FileNotFoundError) as error:
        with atomic_path(tmp_path / "out.bin") as tmp:
            tmp.write_bytes((tmp_path / "missing-input").read_bytes())
    assert not isinstance(error.value, WriteError)
    assert list(tmp_path.iterdir()) == []


def test_disk_full_in_atomic_write_text_is_a_write_error(tmp_path, monkeypatch):
    path = tmp_path / "manifest.json"
    atomic_write_text(path, "{}")

    def full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr("os.fsync", full)
    with pytest.raises(WriteError, match="manifest.json: could not write .No space left on device.; the previous"):
        atomic_write_text(path, '{"new": 1}')
    assert path.read_text() == "{}" and [p.name for p in tmp_path.iterdir()] == ["manifest.json"]


# --------------------------------------------------------------------------- the preprocessing cache

CACHE = """
from mmkd_helpers import preprocess
from mmkd_helpers.data import find_cases
source, cache, first = sys.argv[4], sys.argv[5], 2 * int(sys.argv[2])  # process i caches cases 2i and 2i+1
read_case = preprocess.read_case
def slow_read_case(ref):  # long enough for the two processes to overlap however they are scheduled
    time.sleep(0.3)
    return read_case(ref)
preprocess.read_case = slow_read_case
refs = find_cases(source)[first:first + 2]
barrier()
entries = preprocess.cache_cases(refs, cache, progress=False)
print(" ".join(e["case_id"] for e in entries))
"""


def test_two_processes_filling_the_same_cache_keep_each_others_entries(tmp_path, monkeypatch):
    from mmkd_helpers import preprocess
    from mmkd_helpers.data import find_cases
    from mmkd_helpers.phantom import generate_dataset

    generate_dataset(tmp_path / "src", 4, size=16, seed=0)
    cache = tmp_path / "cache"
    # Different cases in each process (two notebooks on different subsets): whoever writes the manifest last
    # must keep the other's cases in it.
    results = race(tmp_path, CACHE, args=(tmp_path / "src", cache))
    assert sorted(out.split() for _, out, _ in results) == [["Phantom_000", "Phantom_001"],
                                                           ["Phantom_002", "Phantom_003"]]
    root = cache / preprocess.PreprocessConfig().key()
    manifest = json.loads((root / "manifest.json").read_text())
    assert sorted(manifest["cases"]) == ["Phantom_000", "Phantom_001", "Phantom_002", "Phantom_003"]
    assert sum("another process is preprocessing" in err for _, _, err in results) == 1  # they did overlap
    assert no_leftovers(cache) == []
    monkeypatch.setattr(preprocess, "read_case", lambda ref: pytest.fail(f"{ref.case_id} was preprocessed again"))
    for entry in preprocess.cache_cases(find_cases(tmp_path / "src"), cache, progress=False):
        images, label = preprocess.load_cached(entry, mmap=False)
        assert images.shape[1:] == label.shape == entry["shape"] and np.isfinite(images).all()


# --------------------------------------------------------------------------- the course's phantom data set

PHANTOM = """
from mmkd_helpers import course
generate = course.generate_dataset
def slow_generate(*args, **kwargs):
    print("generating")
    time.sleep(0.5)  # the other process asks meanwhile
    return generate(*args, **kwargs)
course.generate_dataset = slow_generate
config = course.CourseConfig.fast(phantom_cases=3, phantom_size=16)
barrier()
print(course.ensure_phantom(config, sys.argv[4]))
"""


def test_two_processes_asking_for_the_phantom_set_generate_it_once(tmp_path):
    root = tmp_path / "data"
    results = race(tmp_path, PHANTOM, args=(root,))
    folder = phantom_dir(CourseConfig.fast(phantom_cases=3, phantom_size=16), root)
    assert [out.split("\n")[-2] for _, out, _ in results] == [str(folder)] * 2
    assert sum("generating" in out for _, out, _ in results) == 1
    assert sorted(p.name for p in folder.iterdir()) == ["Phantom_000", "Phantom_001", "Phantom_002", "phantom.json"]
    assert sum("another process is generating it" in err for _, _, err in results) == 1
    assert [p.name for p in root.iterdir()] == [folder.name]  # no lock, temporary or backup left


def test_interrupted_phantom_generation_leaves_no_folder(tmp_path, monkeypatch):
    config = CourseConfig.fast(phantom_cases=3, phantom_size=16)
    generate = course.generate_dataset

    def interrupted(out_dir, n, **kwargs):
        generate(out_dir, 1, **kwargs)
        raise KeyboardInterrupt

    monkeypatch.setattr(course, "generate_dataset", interrupted)
    with pytest.raises(KeyboardInterrupt):
        ensure_phantom(config, tmp_path)
    assert list(tmp_path.iterdir()) == []  # not a folder of one case that a later call would take as complete
    monkeypatch.setattr(course, "generate_dataset", generate)
    folder = ensure_phantom(config, tmp_path)
    assert len(list(folder.glob("Phantom_*/*_seg.nii.gz"))) == 3 and (folder / "phantom.json").exists()
