"""A writer killed with SIGKILL loses at most about the last second of rows (its flush interval),
and the next writer compacts what it left."""

from __future__ import annotations

import mmap
import os
import signal
import struct
import subprocess
import sys
import time
from pathlib import Path

from personalization.searchlog import scan
from personalization.searchlog_writer import SearchLogWriter

ROOT = Path(__file__).resolve().parents[2]

APPENDER = """
import mmap, struct, sys, time
from personalization.searchlog_writer import SearchLogWriter

writer = SearchLogWriter(sys.argv[1], replica="victim", flush_s=1.0)
with open(sys.argv[2], "r+b") as fh:
    counter = mmap.mmap(fh.fileno(), 8)
    i = 0
    while True:
        writer.append({"event": "search", "search_id": str(i), "query": "drill", "results": ["a"]})
        i += 1
        counter[:8] = struct.pack("<q", i)  # appended so far, readable after the kill
        time.sleep(0.001)
"""


def test_kill_9_loses_at_most_about_one_second_of_rows(tmp_path):
    log = tmp_path / "log"
    count_file = tmp_path / "count"
    count_file.write_bytes(b"\0" * 8)
    env = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    proc = subprocess.Popen([sys.executable, "-c", APPENDER, str(log), str(count_file)], env=env)
    with open(count_file, "r+b") as fh:
        counter = mmap.mmap(fh.fileno(), 8)

        def appended() -> int:
            return struct.unpack("<q", counter[:8])[0]

        try:
            deadline = time.monotonic() + 60
            while appended() == 0 and time.monotonic() < deadline:  # started
                time.sleep(0.05)
            started, first = time.monotonic(), appended()
            time.sleep(3.3)  # a few flushes, and the kill falls between two of them
            proc.send_signal(signal.SIGKILL)
            proc.wait(10)
            elapsed = time.monotonic() - started
            total = appended()
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    rate = (total - first) / elapsed  # rows per second, as this machine ran it
    on_disk = scan(log).collect()
    ids = sorted(int(i) for i in on_disk["search_id"])
    assert ids == list(range(len(ids)))  # a prefix: nothing in the middle lost or torn
    lost = total - len(ids)
    print(
        f"kill -9: {total} rows appended at {rate:.0f} rows/s, {len(ids)} on disk, "
        f"{lost} lost ({lost / rate:.2f} s of appends)"
    )
    assert 0 <= lost <= rate * 1.5 + 50  # the flush interval (1 s), and a loaded machine's lag
    # the next writer in the folder compacts the dead one's live segment into Parquet
    assert list(log.glob("*-victim.jsonl"))
    SearchLogWriter(log, replica="next").close()
    assert not list(log.glob("*.jsonl"))
    assert scan(log).collect().height == len(ids)
