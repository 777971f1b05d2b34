"""The faults table (tests/artifacts/faults.md): a fault test adds its row once
its assertions passed, saying what it injected and what it measured; the
table is written when the run ends."""

from __future__ import annotations

import os
from pathlib import Path

ARTIFACTS = Path(__file__).resolve().parent.parent / "artifacts"
_FAULTS: list[dict[str, str]] = []

# 32 MiB a tick, each touched: about 1.5 GiB a second, a page that will not stop.
EAT_MEMORY_STEADILY = """() => {
  window.hoard = [];
  const grow = () => {
    window.hoard.push(new Uint8Array(32 << 20).fill(7));
    setTimeout(grow, 20);
  };
  grow();
  return true;
}"""


def report_fault(fault: str, outcome: str, kept: str, lost: str) -> None:
    """A row for the test that is running now, named by its own node id."""
    test = os.environ.get("PYTEST_CURRENT_TEST", "?").rsplit(" ", 1)[0]
    _FAULTS.append({"test": test, "fault": fault, "outcome": outcome, "kept": kept, "lost": lost})


def write_table() -> None:
    if not _FAULTS:
        return
    ARTIFACTS.mkdir(exist_ok=True)
    lines = [
        "| fault injected | outcome measured | other sessions | data lost | test |",
        "|---|---|---|---|---|",
    ]
    for row in sorted(_FAULTS, key=lambda r: r["test"]):
        cells = (row["fault"], row["outcome"], row["kept"], row["lost"], f"`{row['test']}`")
        lines.append("| " + " | ".join(cells) + " |")
    (ARTIFACTS / "faults.md").write_text("\n".join(lines) + "\n")
