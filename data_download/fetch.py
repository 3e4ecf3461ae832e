"""Resumable, verified HTTP downloads with nothing but the standard library.

Why it works the way it does:

* The bytes go to ``<target>.part``; the file gets its final name only after its size and checksum
  are verified. A file under the final name is therefore always a good one, and a failed download
  never touches it.
* The checksum is computed from the complete ``.part`` read back from disk, not from the bytes as they
  streamed past: it vouches for what was stored (a bad disk, a failed write, another writer), and for
  the bytes of earlier, interrupted runs too. It costs one more read of the file.
* Two downloads of the same file (two terminals, two notebooks) take turns: each holds a lock on
  ``<target>.lock`` from its first look at ``target`` to the rename, so the second one waits and then
  finds the finished, verified file.
* An interrupted transfer resumes with an HTTP ``Range: bytes=N-`` request.
* A server may ignore ``Range`` (it answers 200 with the whole file: we start again from byte 0) or
  answer 416 (the part is already complete, or it is longer than the file: we check which).
* Transient failures (connection reset or cut, timeouts, HTTP 408/429/5xx) are retried with
  exponential backoff; permanent ones (404, 403, a wrong checksum) stop at once with one
  :class:`DownloadError` naming the URL and what is wrong. A problem with the local disk or folder
  (full, read-only, not writable) is an ``OSError`` naming the file.
"""

import hashlib
import http.client
import os
import re
import shutil
import sys
import time
import urllib.error
import urllib.request
from pathlib import Path

from mmkd_helpers.fileio import WriteError, file_lock

CHUNK = 1 << 20
USER_AGENT = "mmkd-data-download/0.1 (Python urllib)"
TRANSIENT_HTTP = {408, 429, 500, 502, 503, 504}


class DownloadError(RuntimeError):
    """Getting or unpacking data failed. The message names the URL or file and says what is wrong."""


class _Transient(Exception):
    """A failure worth another try (network hiccup, busy server); never leaves this module."""


def progress_bar(total=None, initial=0, desc=None, enabled=True):
    """A byte-counting tqdm bar (imported here so that ``import data_download`` stays light)."""
    from tqdm.auto import tqdm

    return tqdm(total=total, initial=initial, desc=desc, unit="B", unit_scale=True, unit_divisor=1024,
                disable=not enabled, leave=False)


def _digests(path: Path, algorithms, progress=False) -> dict:
    """{algorithm: hex digest} of a file, every algorithm in one pass of 1 MiB chunks."""
    hashers = {name: hashlib.new(name) for name in algorithms}
    with open(path, "rb") as f, progress_bar(path.stat().st_size, desc=f"checking {path.name}",
                                             enabled=progress) as bar:
        while chunk := f.read(CHUNK):
            for h in hashers.values():
                h.update(chunk)
            bar.update(len(chunk))
    return {name: h.hexdigest() for name, h in hashers.items()}


def hash_file(path, algorithm="md5", progress=False) -> str:
    """Hex digest of a file, read in 1 MiB chunks."""
    return _digests(Path(path), [algorithm], progress)[algorithm]


def ensure_free_space(folder: Path, needed: int, what: str) -> None:
    free = shutil.disk_usage(folder).free
    if needed > free:
        raise DownloadError(f"not enough disk space in {folder} for {what}: need {needed / 1e9:.2f} GB, "
                            f"{free / 1e9:.2f} GB free (set MMKD_DATA_DIR or --dest to another disk)")


def download(url, target, *, size=None, md5=None, sha256=None, retries=5, backoff=2.0, timeout=60,
             progress=True) -> Path:
    """Download ``url`` to ``target`` (resuming ``target.part``), verify it, and return ``target``.

    ``size``, ``md5`` and ``sha256`` are checked when given. An existing ``target`` that passes the
    checks is kept as it is (no network access). ``retries`` counts consecutive failed attempts that
    made no progress; the wait doubles after each one, starting at ``backoff`` seconds.
    """
    target = Path(target)
    expected = {name: value.lower() for name, value in (("md5", md5), ("sha256", sha256)) if value}
    with file_lock(target.with_name(target.name + ".lock"),
                   waiting=f"{target}: another process is downloading it; waiting for it to finish"):
        if target.exists():
            if _problem(target, size, expected, progress) is None:
                return target
            print(f"{target} does not match the expected size/checksum: downloading it again "
                  "(it is replaced only once the new copy is verified)", file=sys.stderr)
        part = target.with_name(target.name + ".part")

        failures = 0
        while True:
            before = part.stat().st_size if part.exists() else 0
            try:
                _attempt(url, part, size, timeout, progress)
                break
            except _Transient as exc:
                grew = part.exists() and part.stat().st_size > before
                failures = 0 if grew else failures + 1
                if failures > retries:
                    kept = (f"; the {part.stat().st_size} bytes received are kept in {part}. Run the same command "
                            "again to resume." if part.exists() else ". Run the same command again later.")
                    raise DownloadError(f"{url}: giving up after {retries + 1} failed attempts in a row ({exc})"
                                        f"{kept}") from None
                wait = backoff * 2 ** max(failures - 1, 0)
                print(f"{url}: {exc}; retrying in {wait:g} s", file=sys.stderr)
                time.sleep(wait)

        problem = _problem(part, size, expected, progress)
        if problem:
            part.unlink()  # resuming cannot fix it
            raise DownloadError(f"{url}: the downloaded file has {problem}. It was deleted and nothing else was "
                                "changed. Run the command again to download it afresh; if that fails the same way, "
                                "the file on the server is not the one this course expects.")
        os.replace(part, target)
    return target


def _problem(path: Path, size, expected: dict, progress: bool):
    """What is wrong with the size or checksums of the file on disk, or None when they are as expected."""
    actual = path.stat().st_size
    if size is not None and actual != size:
        return f"size {actual} bytes, expected {size}"
    if not expected:
        return None
    digests = _digests(path, expected, progress)
    for name, value in expected.items():
        if digests[name] != value:
            return f"{name} checksum {digests[name]}, expected {value}"
    return None


def _content_range(header):
    """``'bytes 100-199/200'`` -> (100, 200); ``'bytes */200'`` -> (None, 200); missing -> (None, None)."""
    match = re.fullmatch(r"bytes (?:(\d+)-\d+|\*)/(\d+|\*)", (header or "").strip())
    if not match:
        return None, None
    start, total = match.groups()
    return (int(start) if start else None), (int(total) if total != "*" else None)


def _attempt(url, part: Path, size, timeout, progress) -> None:
    """One request, appending to ``part``; returns once ``part`` holds the whole file (unverified)."""
    offset = part.stat().st_size if part.exists() else 0
    if size is not None and offset > size:  # a stale part from some other file
        part.unlink()
        offset = 0
    if size is not None and offset == size:
        return

    request = urllib.request.Request(url, headers={"User-Agent": USER_AGENT})
    if offset:
        request.add_header("Range", f"bytes={offset}-")
    try:
        response = urllib.request.urlopen(request, timeout=timeout)
    except urllib.error.HTTPError as exc:
        exc.close()
        if exc.code == 416 and offset:
            _, total = _content_range(exc.headers.get("Content-Range"))
            if total == offset:  # nothing left to fetch: the part is the whole file
                return
            part.unlink()
            raise _Transient(f"the server cannot resume at byte {offset} (HTTP 416); starting from scratch")
        if exc.code in TRANSIENT_HTTP:
            raise _Transient(f"HTTP {exc.code} {exc.reason}") from None
        raise DownloadError(f"{url}: HTTP {exc.code} {exc.reason}") from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        raise _Transient(f"cannot connect: {getattr(exc, 'reason', exc)}") from None

    with response:
        if offset and response.status == 206:
            start, _ = _content_range(response.headers.get("Content-Range"))
            if start != offset:
                part.unlink()
                raise _Transient(f"the server resumed at byte {start} instead of {offset}; starting from scratch")
        elif offset:  # 200: the server ignored Range and sends the whole file
            offset = 0
        length = response.headers.get("Content-Length")
        remaining = int(length) if length is not None else None
        if remaining is not None:
            if size is not None and offset + remaining != size:
                raise DownloadError(f"{url}: the server reports {offset + remaining} bytes, expected {size}")
            ensure_free_space(part.parent, remaining, url)
        received = _receive(response, part, offset, size or (offset + remaining if remaining is not None else None),
                            progress)
    if remaining is not None and received < remaining:
        raise _Transient(f"connection closed after {offset + received} of {offset + remaining} bytes")


def _receive(response, part: Path, offset: int, total, progress) -> int:
    """Write the body of ``response`` to ``part`` from byte ``offset`` (durably); returns the bytes received."""
    received = 0
    try:
        with open(part, "ab" if offset else "wb") as f, \
                progress_bar(total, offset, desc=part.name[:-len(".part")], enabled=progress) as bar:
            while True:
                try:
                    chunk = response.read(CHUNK)
                except (OSError, http.client.HTTPException) as exc:  # the part so far is kept for resuming
                    raise _Transient(f"transfer cut after {offset + received} bytes ({exc})") from None
                if not chunk:
                    break
                f.write(chunk)
                received += len(chunk)
                bar.update(len(chunk))
            f.flush()
            os.fsync(f.fileno())
    except OSError as exc:  # the local disk: full, read-only, gone
        raise WriteError(exc.errno, f"could not write ({exc.strerror}); the bytes written so far are kept: run the "
                         "same command again to resume once that is fixed", str(part)) from None
    return received
