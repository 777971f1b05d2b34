"""What /proc says about a browser's processes: which pids make up each
process group (a browser and everything it started), and each one's
proportional set size and CPU time. Read by the metrics collector at each
scrape and by the memory budget watch between scrapes; plain reads, no
state, safe to call from a thread."""

from __future__ import annotations

import os

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


def process_groups(leaders: set[int]) -> dict[int, list[int]]:
    """The live pids of each process group in `leaders` (one /proc scan)."""
    groups: dict[int, list[int]] = {leader: [] for leader in leaders}
    if not leaders:
        return groups
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat", "rb") as f:
                fields = f.read().rsplit(b")", 1)[1].split()
        except OSError:
            continue
        pgid = int(fields[2])
        if pgid in groups:
            groups[pgid].append(int(entry.name))
    return groups


def pss_bytes(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup", "rb") as f:
            for line in f:
                if line.startswith(b"Pss:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return 0


def cpu_seconds(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat", "rb") as f:
            fields = f.read().rsplit(b")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def private_bytes(pid: int) -> int:
    """Anonymous and shared-memory resident bytes (RssAnon + RssShmem):
    what a page's allocations grow (heaps, array buffers, decoded images,
    the shared memory renderers draw into), without the code and font pages
    every browser shares. Counters the kernel keeps: a read costs ~50 us,
    where PSS walks every mapping (~2 ms per Chromium process here)."""
    total = 0
    try:
        with open(f"/proc/{pid}/status", "rb") as f:
            for line in f:
                if line.startswith((b"RssAnon:", b"RssShmem:")):
                    total += int(line.split()[1]) * 1024
    except (OSError, IndexError, ValueError):
        return 0
    return total
