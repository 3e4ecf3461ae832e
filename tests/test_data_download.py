"""data_download, offline: every download comes from an HTTP server on 127.0.0.1 that the tests start and stop.

The server can cut a transfer after N bytes, answer given status codes, or ignore Range requests,
so each failure the downloader must survive is reproduced exactly. Real data from ../shared/data is
used when present (BraTS sample, AV-MNIST ingredients) and the tests that need it skip otherwise.
"""

import errno
import gzip
import hashlib
import io
import json
import os
import re
import subprocess
import sys
import tarfile
import threading
import time
import wave
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import numpy as np
import pytest
from conftest import skip_or_fail_in_ci
from test_concurrency import race

from data_download import DownloadError, avmnist, main, msd
from data_download.archive import ArchiveError, safe_extract
from data_download.brats import verify
from data_download.fetch import download

REPO = Path(__file__).resolve().parents[1]
SHARED = REPO.parent / "shared" / "data"
BRATS_SAMPLE = SHARED / "brats2018_sample"
AVMNIST_SAMPLE = SHARED / "avmnist"


# --------------------------------------------------------------------------- the loopback server

class Served:
    """What the test server serves, and how it misbehaves; tests set these fields."""

    def __init__(self):
        self.files = {}  # url path -> bytes
        self.statuses = {}  # url path -> one status code per request (None: serve the file), used up in order
        self.cuts = {}  # url path -> byte counts: the next responses stop after that many body bytes
        self.ignore_range = False
        self.pace = 0.0  # seconds to wait before each 64 KiB piece of a body: a slow server
        self.log = []  # (url path, Range header or None), one per request
        self.url = ""


class Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, *args):  # keep pytest output clean
        pass

    def _empty(self, code, headers=()):
        self.send_response(code)
        for name, value in headers:
            self.send_header(name, value)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def do_GET(self):
        served = self.server.served
        served.log.append((self.path, self.headers.get("Range")))
        queue = served.statuses.get(self.path)
        status = queue.pop(0) if queue else None
        if status is not None:
            return self._empty(status)
        if self.path not in served.files:
            return self._empty(404)
        body = served.files[self.path]
        start = 0
        match = re.fullmatch(r"bytes=(\d+)-", self.headers.get("Range") or "")
        if match and not served.ignore_range:
            start = int(match[1])
            if start >= len(body):
                return self._empty(416, [("Content-Range", f"bytes */{len(body)}")])
            self.send_response(206)
            self.send_header("Content-Range", f"bytes {start}-{len(body) - 1}/{len(body)}")
        else:
            self.send_response(200)
        self.send_header("Content-Length", str(len(body) - start))
        self.end_headers()
        cuts = served.cuts.get(self.path)
        stop = start + cuts.pop(0) if cuts else len(body)
        for piece in range(start, stop, 1 << 16):
            time.sleep(served.pace)
            self.wfile.write(body[piece:min(piece + (1 << 16), stop)])
        if stop < len(body):
            self.close_connection = True  # the client sees a connection closed mid-transfer


@pytest.fixture
def server(monkeypatch):
    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    monkeypatch.setenv("no_proxy", "127.0.0.1")
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    httpd.daemon_threads = True
    httpd.served = Served()
    httpd.served.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    yield httpd.served
    httpd.shutdown()
    httpd.server_close()
    thread.join(timeout=5)


# --------------------------------------------------------------------------- archives made in memory

def make_tar(members, compress=False) -> bytes:
    """``members``: (name, bytes) for files, or a ready TarInfo for anything else."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz" if compress else "w") as tar:
        for member in members:
            if isinstance(member, tarfile.TarInfo):
                tar.addfile(member)
            else:
                name, data = member
                info = tarfile.TarInfo(name)
                info.size = len(data)
                tar.addfile(info, io.BytesIO(data))
    return buffer.getvalue()


def special(name, kind, linkname=""):
    info = tarfile.TarInfo(name)
    info.type, info.linkname = kind, linkname
    return info


def nifti_gz(array) -> bytes:
    import nibabel as nib

    return gzip.compress(nib.Nifti1Image(array, np.eye(4)).to_bytes(), compresslevel=1)


def fake_msd_tar(cases=2) -> bytes:
    """A miniature Task01_BrainTumour tar: real (tiny) NIfTI files, dataset.json, and macOS junk."""
    rng = np.random.default_rng(0)
    members, training = [("._Task01_BrainTumour", b"junk")], []
    for i in range(1, cases + 1):
        name = f"BRATS_{i:03d}.nii.gz"
        label = rng.integers(0, 4, (6, 6, 5)).astype(np.uint8)
        members += [(f"Task01_BrainTumour/imagesTr/{name}", nifti_gz(rng.random((6, 6, 5, 4)).astype(np.float32))),
                    (f"Task01_BrainTumour/labelsTr/{name}", nifti_gz(label)),
                    (f"Task01_BrainTumour/imagesTr/._{name}", b"AppleDouble junk")]
        training.append({"image": f"./imagesTr/{name}", "label": f"./labelsTr/{name}"})
    meta = {"name": "BRATS", "modality": {"0": "FLAIR", "1": "T1w", "2": "t1gd", "3": "T2w"},
            "labels": {"0": "background", "1": "edema", "2": "non-enhancing tumor", "3": "enhancing tumour"},
            "numTraining": cases, "training": training, "test": []}
    members.append(("Task01_BrainTumour/dataset.json", json.dumps(meta).encode()))
    return make_tar(members)


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def payload(n=300_000) -> bytes:
    return np.random.default_rng(1).integers(0, 256, n, dtype=np.uint8).tobytes()


def listing(folder: Path) -> list:
    return sorted(p.name for p in folder.iterdir())


# --------------------------------------------------------------------------- downloads

def test_good_archive_is_downloaded_verified_and_extracted(server, tmp_path):
    tar = fake_msd_tar()
    server.files["/Task01_BrainTumour.tar"] = tar
    folder = msd.fetch(tmp_path / "msd", url=server.url + "/Task01_BrainTumour.tar", size=len(tar), md5=md5(tar),
                       progress=False)
    assert folder == tmp_path / "msd" / "Task01_BrainTumour"
    assert listing(tmp_path / "msd") == ["Task01_BrainTumour"]  # the verified tar is deleted, no temp or .part left
    assert [image.name for image, _ in msd.training_files(folder)] == ["BRATS_001.nii.gz", "BRATS_002.nii.gz"]
    assert not [p for p in folder.rglob("._*")], "AppleDouble junk must be skipped"
    assert verify(folder, out=io.StringIO()) == 0  # the course's reader accepts the layout as it is
    assert msd.fetch(tmp_path / "msd", url=server.url + "/Task01_BrainTumour.tar", progress=False) == folder
    assert len(server.log) == 1  # already there: no second download


def test_transfer_cut_midway_is_resumed_with_range(server, tmp_path):
    data = payload()
    server.files["/f.bin"] = data
    server.cuts["/f.bin"] = [100_000]
    target = download(server.url + "/f.bin", tmp_path / "f.bin", size=len(data), md5=md5(data), backoff=0,
                      progress=False)
    assert target.read_bytes() == data
    assert server.log == [("/f.bin", None), ("/f.bin", "bytes=100000-")]


def test_interrupted_download_resumes_on_the_next_run(server, tmp_path):
    data = payload()
    server.files["/f.bin"] = data
    server.cuts["/f.bin"] = [123_456]
    server.statuses["/f.bin"] = [None, 503]  # cut, then the retry fails too: the run gives up
    with pytest.raises(DownloadError, match="Run the same command again to resume"):
        download(server.url + "/f.bin", tmp_path / "f.bin", md5=md5(data), retries=0, backoff=0, progress=False)
    part = tmp_path / "f.bin.part"
    assert part.stat().st_size == 123_456 and not (tmp_path / "f.bin").exists()
    download(server.url + "/f.bin", tmp_path / "f.bin", md5=md5(data), retries=0, progress=False)
    assert (tmp_path / "f.bin").read_bytes() == data and not part.exists()
    assert server.log[1:] == [("/f.bin", "bytes=123456-")] * 2


def test_server_ignoring_range_restarts_cleanly(server, tmp_path):
    data = payload()
    server.files["/f.bin"] = data
    server.ignore_range = True
    (tmp_path / "f.bin.part").write_bytes(b"x" * 5000)  # would corrupt the file if appended to
    download(server.url + "/f.bin", tmp_path / "f.bin", size=len(data), md5=md5(data), progress=False)
    assert (tmp_path / "f.bin").read_bytes() == data
    assert server.log == [("/f.bin", "bytes=5000-")]


def test_complete_part_answered_416_is_verified_not_refetched(server, tmp_path):
    data = payload()
    server.files["/f.bin"] = data
    (tmp_path / "f.bin.part").write_bytes(data)
    download(server.url + "/f.bin", tmp_path / "f.bin", md5=md5(data), progress=False)  # size unknown: asks
    assert (tmp_path / "f.bin").read_bytes() == data
    assert server.log == [("/f.bin", f"bytes={len(data)}-")]


def test_corrupt_part_is_caught_by_the_check_of_the_file_on_disk(server, tmp_path):
    data = payload()
    server.files["/f.bin"] = data
    (tmp_path / "f.bin.part").write_bytes(b"x" * 5000)
    with pytest.raises(DownloadError, match="md5 checksum"):
        download(server.url + "/f.bin", tmp_path / "f.bin", md5=md5(data), progress=False)
    assert listing(tmp_path) == []  # the bad part is deleted: the next run starts afresh


def test_wrong_checksum_is_refused_and_old_data_untouched(server, tmp_path):
    tar = fake_msd_tar()
    server.files["/Task01_BrainTumour.tar"] = tar
    old = tmp_path / "msd" / "Task01_BrainTumour"
    old.mkdir(parents=True)
    (old / "dataset.json").write_text("old data")
    url = server.url + "/Task01_BrainTumour.tar"
    with pytest.raises(DownloadError, match="md5 checksum") as error:
        msd.fetch(tmp_path / "msd", url=url, size=len(tar), md5="0" * 32, force=True, progress=False)
    assert url in str(error.value)
    assert (old / "dataset.json").read_text() == "old data"
    assert listing(tmp_path / "msd") == ["Task01_BrainTumour"]


def test_unexpected_size_is_refused_before_downloading(server, tmp_path):
    data = payload()
    server.files["/f.bin"] = data
    with pytest.raises(DownloadError, match=f"server reports {len(data)} bytes, expected {len(data) + 1}"):
        download(server.url + "/f.bin", tmp_path / "f.bin", size=len(data) + 1, progress=False)


def test_404_fails_at_once_naming_the_url(server, tmp_path):
    with pytest.raises(DownloadError, match=re.escape(server.url + "/missing.tar") + ": HTTP 404"):
        download(server.url + "/missing.tar", tmp_path / "missing.tar", backoff=0, progress=False)
    assert len(server.log) == 1  # permanent: no retries
    assert listing(tmp_path) == []


def test_500_is_retried_then_reported(server, tmp_path):
    server.files["/f.bin"] = b"data"
    server.statuses["/f.bin"] = [500] * 10
    with pytest.raises(DownloadError, match="giving up after 3 failed attempts in a row .HTTP 500.*again later"):
        download(server.url + "/f.bin", tmp_path / "f.bin", retries=2, backoff=0, progress=False)
    assert len(server.log) == 3


def test_transient_errors_then_success(server, tmp_path):
    server.files["/f.bin"] = b"data"
    server.statuses["/f.bin"] = [500, 503]
    download(server.url + "/f.bin", tmp_path / "f.bin", md5=md5(b"data"), backoff=0, progress=False)
    assert (tmp_path / "f.bin").read_bytes() == b"data" and len(server.log) == 3


def test_main_reports_errors_with_a_nonzero_exit_code(server, tmp_path, capsys):
    code = main(["--quiet", "msd", "--dest", str(tmp_path), "--url", server.url + "/nowhere.tar"])
    err = capsys.readouterr().err
    assert code == 1
    assert err == f"python -m data_download: error: {server.url}/nowhere.tar: HTTP 404 Not Found\n"


def test_bytes_on_disk_are_verified_not_the_bytes_received(server, tmp_path, monkeypatch):
    data = payload()
    server.files["/f.bin"] = data
    fsync = os.fsync

    def bad_disk(fd):  # the disk stores something other than what was written to it
        os.pwrite(fd, b"\0" * 16, 1000)
        fsync(fd)

    monkeypatch.setattr(os, "fsync", bad_disk)
    with pytest.raises(DownloadError, match=f"sha256 checksum [0-9a-f]{{64}}, expected {hashlib.sha256(data).hexdigest()}"):
        download(server.url + "/f.bin", tmp_path / "f.bin", size=len(data), sha256=hashlib.sha256(data).hexdigest(),
                 progress=False)
    assert listing(tmp_path) == []  # nothing under the final name, and the bad part is gone


DOWNLOAD = """
from data_download.fetch import download
url, target, sha256 = sys.argv[4:]
barrier()
download(url, target, sha256=sha256, backoff=0, progress=False)
"""


def test_two_downloads_of_the_same_file_take_turns(server, tmp_path):
    data = payload()
    server.files["/f.bin"] = data
    server.pace = 0.25  # 5 pieces: the first download takes over a second, the second one starts meanwhile
    results = race(tmp_path, DOWNLOAD, args=(server.url + "/f.bin", tmp_path / "dl" / "f.bin",
                                             hashlib.sha256(data).hexdigest()))
    assert (tmp_path / "dl" / "f.bin").read_bytes() == data
    assert listing(tmp_path / "dl") == ["f.bin"]  # no .part, no lock file
    assert server.log == [("/f.bin", None)]  # the second found the verified file: one download
    assert sum("another process is downloading it; waiting" in err for _, _, err in results) == 1


MSD = """
from data_download import msd
msd.fetch.__kwdefaults__.update(url=sys.argv[5], size=int(sys.argv[6]), md5=sys.argv[7])
barrier()
print(msd.fetch(sys.argv[4], progress=False))
"""


def test_two_msd_fetches_at_once_extract_once(server, tmp_path):
    tar = fake_msd_tar()
    server.files["/Task01_BrainTumour.tar"] = tar
    server.pace = 0.1
    results = race(tmp_path, MSD, args=(tmp_path / "msd", server.url + "/Task01_BrainTumour.tar", len(tar), md5(tar)))
    folder = tmp_path / "msd" / "Task01_BrainTumour"
    assert [out.splitlines()[-1] for _, out, _ in results] == [str(folder)] * 2
    assert sum(f"{folder} already exists (2 training cases)" in out for _, out, _ in results) == 1
    assert sum("another process is fetching it; waiting" in err for _, _, err in results) == 1
    assert listing(tmp_path / "msd") == ["Task01_BrainTumour"]  # archive deleted once, no lock files
    assert len(server.log) == 1


def test_unusable_destination_is_one_line_and_exit_code_2(tmp_path, capsys):
    (tmp_path / "a-file").write_text("not a folder")
    code = main(["--quiet", "msd", "--dest", str(tmp_path / "a-file" / "msd")])
    assert code == 2
    assert capsys.readouterr().err == f"python -m data_download: error: {tmp_path / 'a-file' / 'msd'}: Not a directory\n"


@pytest.mark.skipif(os.name != "posix" or os.geteuid() == 0, reason="needs POSIX permissions, which root ignores")
def test_read_only_destination_is_one_line_and_exit_code_2(tmp_path, capsys):
    (tmp_path / "locked").mkdir(mode=0o500)
    code = main(["--quiet", "avmnist", "--dest", str(tmp_path / "locked" / "avmnist")])
    assert code == 2
    assert capsys.readouterr().err == (f"python -m data_download: error: {tmp_path / 'locked' / 'avmnist'}: "
                                       "Permission denied\n")


def test_disk_full_while_downloading_keeps_the_part_and_exits_with_2(server, tmp_path, monkeypatch, capsys):
    tar = fake_msd_tar()
    server.files["/t.tar"] = tar
    monkeypatch.setitem(msd.fetch.__kwdefaults__, "size", len(tar))
    monkeypatch.setitem(msd.fetch.__kwdefaults__, "md5", md5(tar))

    def disk_full(fd):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    code = main(["--quiet", "msd", "--dest", str(tmp_path), "--url", server.url + "/t.tar"])
    err = capsys.readouterr().err
    assert code == 2
    assert err == (f"python -m data_download: error: {tmp_path / 'Task01_BrainTumour.tar.part'}: could not write "
                   "(No space left on device); the bytes written so far are kept: run the same command again to "
                   "resume once that is fixed\n")
    assert listing(tmp_path) == ["Task01_BrainTumour.tar.part"]
    monkeypatch.undo()
    monkeypatch.setitem(msd.fetch.__kwdefaults__, "size", len(tar))
    monkeypatch.setitem(msd.fetch.__kwdefaults__, "md5", md5(tar))
    assert main(["--quiet", "msd", "--dest", str(tmp_path), "--url", server.url + "/t.tar"]) == 0
    assert len(server.log) == 1  # the bytes kept were all there: verified, not fetched again
    assert listing(tmp_path) == ["Task01_BrainTumour"]


def test_disk_full_while_extracting_keeps_the_previous_folder_and_exits_with_2(server, tmp_path, monkeypatch,
                                                                               capsys):
    tar = fake_msd_tar()
    server.files["/t.tar"] = tar
    monkeypatch.setitem(msd.fetch.__kwdefaults__, "size", len(tar))
    monkeypatch.setitem(msd.fetch.__kwdefaults__, "md5", md5(tar))
    old = tmp_path / "Task01_BrainTumour"
    old.mkdir()
    (old / "dataset.json").write_text("old data")

    def disk_full(*args, **kwargs):
        raise OSError(errno.ENOSPC, "No space left on device")

    monkeypatch.setattr(tarfile, "copyfileobj", disk_full)
    code = main(["--quiet", "msd", "--force", "--dest", str(tmp_path), "--url", server.url + "/t.tar"])
    assert code == 2
    assert capsys.readouterr().err == (f"python -m data_download: error: {old}: could not write (No space left on "
                                       "device); the previous folder is unchanged\n")
    assert listing(tmp_path) == ["Task01_BrainTumour", "Task01_BrainTumour.tar"]  # the verified tar is kept
    assert listing(old) == ["dataset.json"] and (old / "dataset.json").read_text() == "old data"


# --------------------------------------------------------------------------- extraction

UNSAFE = {
    "parent": [("../escaped.txt", b"x")],
    "nested parent": [("a/../../escaped.txt", b"x")],
    "absolute": [("/tmp/escaped.txt", b"x")],
    "symlink": [special("link", tarfile.SYMTYPE, "/etc/passwd")],
    "hardlink": [special("link", tarfile.LNKTYPE, "/etc/passwd")],
    "device": [special("dev", tarfile.CHRTYPE)],
    "fifo": [special("fifo", tarfile.FIFOTYPE)],
}


@pytest.mark.parametrize("kind", UNSAFE)
def test_unsafe_members_are_refused_and_nothing_is_written(tmp_path, kind):
    (tmp_path / "archive.tar").write_bytes(make_tar([("good.txt", b"fine")] + UNSAFE[kind]))
    dest = tmp_path / "work" / "dest"
    dest.mkdir(parents=True)
    (dest / "old.txt").write_text("old")
    with pytest.raises(ArchiveError, match="refused: member"):
        safe_extract(tmp_path / "archive.tar", dest, progress=False)
    assert sorted(p.name for p in dest.iterdir()) == ["old.txt"]
    assert listing(tmp_path / "work") == ["dest"]  # no temporary folder left behind
    assert not (tmp_path / "escaped.txt").exists() and not (tmp_path / "work" / "escaped.txt").exists()


def test_escaping_archive_from_the_server_is_refused(server, tmp_path):
    tar = make_tar([("Task01_BrainTumour/dataset.json", b"{}"), ("Task01_BrainTumour/../../../escaped", b"x")])
    server.files["/Task01_BrainTumour.tar"] = tar
    with pytest.raises(ArchiveError, match="escapes the target folder"):
        msd.fetch(tmp_path / "msd", url=server.url + "/Task01_BrainTumour.tar", size=len(tar), md5=md5(tar),
                  progress=False)
    assert listing(tmp_path / "msd") == ["Task01_BrainTumour.tar"]  # verified tar kept, nothing extracted
    assert not (tmp_path / "escaped").exists()


def test_truncated_gzip_is_a_clean_error(tmp_path):
    data = make_tar([("a.bin", payload(200_000)), ("b.bin", payload(200_000))], compress=True)
    (tmp_path / "cut.tar.gz").write_bytes(data[: len(data) // 2])
    with pytest.raises(ArchiveError, match="truncated or corrupt"):
        safe_extract(tmp_path / "cut.tar.gz", tmp_path / "dest", progress=False)
    assert listing(tmp_path) == ["cut.tar.gz"]


def test_archive_missing_files_listed_in_dataset_json_is_refused(server, tmp_path):
    tar = make_tar([(name, data) for name, data in tarfile_members(fake_msd_tar()) if "labelsTr/BRATS_002" not in name])
    server.files["/t.tar"] = tar
    with pytest.raises(DownloadError, match="1 listed files are missing, e.g. labelsTr/BRATS_002.nii.gz"):
        msd.fetch(tmp_path, url=server.url + "/t.tar", size=len(tar), md5=md5(tar), progress=False)
    assert not (tmp_path / "Task01_BrainTumour").exists()


def tarfile_members(data: bytes):
    with tarfile.open(fileobj=io.BytesIO(data)) as tar:
        return [(m.name, tar.extractfile(m).read()) for m in tar.getmembers()]


# --------------------------------------------------------------------------- CLI basics

def test_importing_the_package_is_light():
    code = "import sys, data_download; print(sorted({'torch', 'numpy', 'scipy', 'nibabel'} & set(sys.modules)))"
    result = subprocess.run([sys.executable, "-c", code], cwd=REPO, capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_default_destinations_follow_the_data_folder_rule(monkeypatch, tmp_path, capsys):
    from data_download.cli import _parser

    monkeypatch.setenv("MMKD_DATA_DIR", str(tmp_path))
    assert _parser("python -m data_download").parse_args(["msd"]).dest == tmp_path / "msd"
    assert _parser("python -m data_download").parse_args(["avmnist"]).dest == tmp_path / "avmnist"
    assert main(["brats-instructions"]) == 0
    out = capsys.readouterr().out
    assert f"python -m data_download verify {tmp_path}/brats2018" in out and "<case>_seg.nii.gz" in out


# --------------------------------------------------------------------------- BraTS verify

@pytest.fixture
def brats_sample() -> Path:
    if not BRATS_SAMPLE.is_dir():
        skip_or_fail_in_ci(f"{BRATS_SAMPLE} absent (real BraTS sample)")
    return BRATS_SAMPLE


needs_brats = pytest.mark.usefixtures("brats_sample")
SOURCE_CASE = "Brats18_TCIA03_265_1"


def brats_case(root: Path, name: str) -> Path:
    """A copy of a real case under a new name, its files symlinked (cheap) so each can be broken alone."""
    folder = root / name
    folder.mkdir(parents=True)
    for kind in ("flair", "t1", "t1ce", "t2", "seg"):
        os.symlink(BRATS_SAMPLE / SOURCE_CASE / f"{SOURCE_CASE}_{kind}.nii.gz", folder / f"{name}_{kind}.nii.gz")
    return folder


def replace_with_nii(folder: Path, kind: str, change) -> None:
    """Swap a file for an uncompressed .nii whose array is ``change(array)`` (fast to write)."""
    import nibabel as nib

    path = folder / f"{folder.name}_{kind}.nii.gz"
    image = nib.load(path)
    nib.save(nib.Nifti1Image(change(np.asanyarray(image.dataobj)), image.affine, image.header),
             folder / f"{folder.name}_{kind}.nii")
    path.unlink()


@needs_brats
def test_verify_accepts_a_good_brats_folder(tmp_path, capsys):
    brats_case(tmp_path / "HGG", "Brats18_good_1")
    assert main(["verify", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "ok    Brats18_good_1  240x240x155  labels [0, 1, 2, 4]" in out
    assert "1 cases checked: 1 ok, 0 with problems" in out


@needs_brats
def test_verify_reports_every_problem_of_a_broken_brats_folder(tmp_path, capsys):
    brats_case(tmp_path, "good")
    (brats_case(tmp_path, "no_t1ce") / "no_t1ce_t1ce.nii.gz").unlink()
    (brats_case(tmp_path, "no_seg") / "no_seg_seg.nii.gz").unlink()
    replace_with_nii(brats_case(tmp_path, "short_t1"), "t1", lambda a: a[:, :, :-1])
    replace_with_nii(brats_case(tmp_path, "bad_label"), "seg", lambda a: np.where(a == 4, 3, a).astype(a.dtype))
    cut = brats_case(tmp_path, "cut") / "cut_flair.nii.gz"
    data = cut.read_bytes()
    cut.unlink()
    cut.write_bytes(data[: len(data) // 2])

    assert main(["verify", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "ok    good" in out
    assert "6 cases checked: 1 ok, 5 with problems" in out
    expected = {"no_t1ce": "no_t1ce_t1ce.nii.gz: file missing",
                "no_seg": "no_seg_seg.nii.gz: file missing",
                "short_t1": "short_t1_t1.nii: shape (240, 240, 154) differs",
                "bad_label": "unknown label values [3]",
                "cut": "cut_flair.nii.gz: cannot be read"}
    for case, message in expected.items():
        assert re.search(rf"FAIL  {case}: .*{re.escape(message)}", out), (case, out)


def test_verify_an_empty_folder_fails_clearly(tmp_path, capsys):
    assert main(["verify", str(tmp_path)]) == 1
    assert "no cases found" in capsys.readouterr().out


# --------------------------------------------------------------------------- AV-MNIST

def idx_gz(array: np.ndarray) -> bytes:
    header = b"\x00\x00\x08" + bytes([array.ndim]) + b"".join(n.to_bytes(4, "big") for n in array.shape)
    return gzip.compress(header + array.astype(np.uint8).tobytes())


def wav_bytes(seed: int, samples=3000) -> bytes:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as w:
        w.setnchannels(1), w.setsampwidth(2), w.setframerate(8000)
        w.writeframes(np.random.default_rng(seed).integers(-3000, 3000, samples, dtype=np.int16).tobytes())
    return buffer.getvalue()


def fake_recordings(takes=range(7)) -> dict:
    return {f"{d}_{s}_{t}.wav": wav_bytes(100 * d + 10 * t + i) for d in range(10)
            for i, s in enumerate(("ann", "bob")) for t in takes}


def write_manifest(path: Path, recordings: dict) -> Path:
    path.write_text("".join(f"{hashlib.sha256(b).hexdigest()}  {n}\n" for n, b in sorted(recordings.items())))
    return path


def fake_mnist(monkeypatch, n_train=None, n_test=60) -> dict:
    """MNIST-like files with labels 0..9 cycling; MNIST_FILES patched to their sizes and md5s."""
    rng = np.random.default_rng(3)
    files = {}
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        if n:
            files[f"{prefix}-images-idx3-ubyte.gz"] = idx_gz(rng.integers(0, 256, (n, 28, 28)))
            files[f"{prefix}-labels-idx1-ubyte.gz"] = idx_gz(np.arange(n) % 10)
    monkeypatch.setattr(avmnist, "MNIST_FILES", {name: (len(b), md5(b)) for name, b in files.items()})
    return files


def test_mnist_mirrors_and_fsdd_manifest(server, tmp_path, monkeypatch):
    for name, data in fake_mnist(monkeypatch, n_train=20).items():
        server.files[f"/good/{name}"] = data
    folder = avmnist.fetch_mnist(tmp_path, mirrors=(server.url + "/dead/", server.url + "/good/"), progress=False)
    assert sorted(p.name for p in folder.iterdir()) == sorted(avmnist.MNIST_FILES)
    assert server.log[:2] == [("/dead/train-images-idx3-ubyte.gz", None), ("/good/train-images-idx3-ubyte.gz", None)]

    recordings = fake_recordings()
    manifest = write_manifest(tmp_path / "sha256.txt", recordings)
    members = [(f"fsdd-1.0/recordings/{n}", b) for n, b in recordings.items()] + [("fsdd-1.0/README.md", b"hi")]
    tampered = dict(members)
    tampered["fsdd-1.0/recordings/3_bob_2.wav"] = wav_bytes(999)
    server.files["/bad.tar.gz"] = make_tar(tampered.items(), compress=True)
    with pytest.raises(DownloadError, match="1 with a wrong sha256, e.g. 3_bob_2.wav"):
        avmnist.fetch_fsdd(tmp_path, server.url + "/bad.tar.gz", "fsdd-1.0/recordings", manifest, progress=False)
    assert listing(tmp_path / "fsdd") == []  # nothing kept of the bad archive

    server.files["/fsdd.tar.gz"] = make_tar(members, compress=True)
    folder = avmnist.fetch_fsdd(tmp_path, server.url + "/fsdd.tar.gz", "fsdd-1.0/recordings", manifest,
                                progress=False)
    assert sorted(p.name for p in folder.iterdir()) == sorted(recordings)
    assert sorted(p.name for p in folder.parent.iterdir()) == ["recordings"]


def check_pairs(out: Path, manifest: dict) -> dict:
    """Every split: shapes, dtypes, and each image paired with a recording of its digit, split by take."""
    counts = {}
    for split in ("train", "test"):
        images, audio = np.load(out / f"{split}_image.npy"), np.load(out / f"{split}_audio.npy")
        labels, chosen = np.load(out / f"{split}_label.npy"), np.load(out / f"{split}_recording.npy")
        assert images.shape[1:] == (28, 28) and images.dtype == np.uint8
        assert audio.shape[1:] == (20, 20) and audio.dtype == np.float32 and np.isfinite(audio).all()
        names = [manifest["recordings"][i] for i in chosen]
        assert [int(n[0]) for n in names] == labels.tolist()
        assert all((int(n.rsplit("_", 1)[1][:-4]) < 5) == (split == "test") for n in names)
        counts[split] = len(labels)
    return counts


def test_avmnist_recipe_on_synthetic_ingredients(tmp_path, monkeypatch, capsys):
    recordings = fake_recordings()
    manifest = write_manifest(tmp_path / "sha256.txt", recordings)
    for with_train in (False, True):
        source = tmp_path / f"source{with_train}"
        (source / "fsdd" / "recordings").mkdir(parents=True)
        (source / "mnist").mkdir()
        for name, data in recordings.items():
            (source / "fsdd" / "recordings" / name).write_bytes(data)
        for name, data in fake_mnist(monkeypatch, n_train=40 if with_train else None).items():
            (source / "mnist" / name).write_bytes(data)
        out = avmnist.build(source, tmp_path / f"out{with_train}", manifest=manifest)
        info = json.loads((out / "manifest.json").read_text())
        counts = check_pairs(out, info)
        assert counts == ({"train": 40, "test": 60} if with_train else {"train": 48, "test": 12})
    assert "building from the 10k test images" in capsys.readouterr().out


def test_avmnist_recipe_on_the_real_files(tmp_path):
    if not AVMNIST_SAMPLE.is_dir():
        skip_or_fail_in_ci(f"{AVMNIST_SAMPLE} absent (real MNIST t10k + FSDD)")
    assert main(["avmnist", "--source", str(AVMNIST_SAMPLE), "--dest", str(tmp_path)]) == 0
    out = tmp_path / "paired"
    info = json.loads((out / "manifest.json").read_text())
    assert len(info["recordings"]) == 3000
    expected = {"train": 8000, "test": 2000}
    if (AVMNIST_SAMPLE / "mnist" / "train-images-idx3-ubyte.gz").exists():
        expected = {"train": 60000, "test": 10000}
    assert check_pairs(out, info) == expected
    assert info["splits"]["test"]["recordings_used"] == 300  # all of FSDD's test takes, none of the others
