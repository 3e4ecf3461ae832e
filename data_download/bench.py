"""How fast are download, verification and extraction? ``python -m data_download.bench [--size-mb 256]``

Generates a tar of random (incompressible, like .nii.gz) members in a temporary folder, serves it
from a loopback HTTP server, and times each step several times; prints medians. Over loopback the
network is not the limit, so the download figure is the ceiling of the client itself (urllib, writing
to disk, reading the file back for its md5). Verification and extraction are given in seconds per GB, so they
can be scaled to the 7.6 GB of MSD Task01. The files are read right after being written, so they
come from the page cache: these are CPU and write costs, not cold-disk reads.
"""

import argparse
import functools
import io
import os
import shutil
import statistics
import tarfile
import tempfile
import threading
import time
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

from .archive import safe_extract
from .fetch import download, hash_file

MEMBER_MB = 8


def make_tar(path: Path, size_mb: int) -> str:
    """A plain tar of ``size_mb`` MB of random members; returns its md5."""
    with tarfile.open(path, "w") as tar:
        for i in range(max(size_mb // MEMBER_MB, 1)):
            data = os.urandom(MEMBER_MB << 20)
            info = tarfile.TarInfo(f"bench/case_{i:04d}.bin")
            info.size = len(data)
            tar.addfile(info, io.BytesIO(data))
    return hash_file(path, "md5")


class QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


def timed(step, repeats, cleanup) -> list:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
        cleanup()
    return times


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m data_download.bench", description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=int, default=256, help="size of the test archive (default: %(default)s)")
    parser.add_argument("--repeats", type=int, default=3, help="runs per measurement (default: %(default)s)")
    args = parser.parse_args(argv)

    with tempfile.TemporaryDirectory(prefix="mmkd-bench-") as tmp:
        tmp = Path(tmp)
        (tmp / "served").mkdir()
        archive = tmp / "served" / "bench.tar"
        md5 = make_tar(archive, args.size_mb)
        size = archive.stat().st_size
        gb = size / 1e9

        httpd = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(QuietHandler, directory=tmp / "served"))
        thread = threading.Thread(target=httpd.serve_forever, args=(0.05,), daemon=True)
        thread.start()
        url = f"http://127.0.0.1:{httpd.server_address[1]}/bench.tar"
        copy, dest = tmp / "copy.tar", tmp / "extracted"

        def remove_copy():
            copy.unlink(missing_ok=True)

        results = {
            "download + md5 of the file on disk (MB/s)": (timed(lambda: download(url, copy, size=size, md5=md5, progress=False),
                                                      args.repeats, remove_copy), "rate"),
            "download, no checksum (MB/s)": (timed(lambda: download(url, copy, progress=False),
                                                   args.repeats, remove_copy), "rate"),
            "md5 of a file (s/GB)": (timed(lambda: hash_file(archive, "md5"), args.repeats, lambda: None), "per_gb"),
            "sha256 of a file (s/GB)": (timed(lambda: hash_file(archive, "sha256"), args.repeats, lambda: None),
                                        "per_gb"),
            "safe extraction (s/GB)": (timed(lambda: safe_extract(archive, dest, progress=False), args.repeats,
                                             lambda: shutil.rmtree(dest)), "per_gb"),
            "plain file copy, for scale (s/GB)": (timed(lambda: shutil.copyfile(archive, copy), args.repeats,
                                                        remove_copy), "per_gb"),
        }
        httpd.shutdown()
        httpd.server_close()

    print(f"archive: {size / 1e6:.0f} MB ({size // (MEMBER_MB << 20)} members), {args.repeats} runs each, "
          f"{os.cpu_count()} CPUs")
    for name, (times, kind) in results.items():
        values = [size / 1e6 / t for t in times] if kind == "rate" else [t / gb for t in times]
        print(f"  {name:42s} median {statistics.median(values):8.2f}   runs {', '.join(f'{v:.2f}' for v in values)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
