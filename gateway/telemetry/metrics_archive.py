"""Fold a dead worker's counter and histogram files into one archive per type.

prometheus_client never deletes a dead process's counter or histogram file, so a long-lived host
collects one per worker it ever ran and every scrape reads them all. gunicorn's master calls
``archive_dead_worker`` in ``child_exit``: totals are kept (counters never go backwards) and the
number of files stays bounded by the number of live workers. Scrapes hold a shared lock and the
swap an exclusive one, so a scrape never sees a worker's values both archived and in its file.
"""

from __future__ import annotations

import contextlib
import fcntl
import os
from collections.abc import Iterator

from prometheus_client.mmap_dict import MmapedDict

# Types whose values add up across processes; live gauges are removed by mark_process_dead.
_SUMMED_TYPES = ("counter", "histogram", "summary")
_LOCK_NAME = ".archive.lock"


@contextlib.contextmanager
def scrape_lock(directory: str, exclusive: bool = False) -> Iterator[None]:
    with open(os.path.join(directory, _LOCK_NAME), "a") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH)
        try:
            yield
        finally:
            fcntl.flock(lock, fcntl.LOCK_UN)


def archive_dead_worker(directory: str, pid: int) -> None:
    for typ in _SUMMED_TYPES:
        dead = os.path.join(directory, f"{typ}_{pid}.db")
        if not os.path.exists(dead):
            continue
        archive = os.path.join(directory, f"{typ}_archive.db")
        totals: dict[str, float] = {}
        for path in (archive, dead):
            if os.path.exists(path):
                for key, value, _timestamp, _pos in MmapedDict.read_all_values_from_file(path):
                    totals[key] = totals.get(key, 0.0) + value
        staging = archive + ".staging"  # not *.db: scrapes ignore it until the swap
        with contextlib.suppress(FileNotFoundError):
            os.unlink(staging)
        merged = MmapedDict(staging)
        try:
            for key, value in totals.items():
                merged.write_value(key, value, 0.0)
        finally:
            merged.close()
        with scrape_lock(directory, exclusive=True):
            os.replace(staging, archive)
            os.unlink(dead)
