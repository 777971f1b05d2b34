"""Every benchmark still imports: they run outside the suite (minutes each),
so a moved or renamed helper would otherwise first show when someone runs
one. Importing runs nothing: each starts work only under __main__."""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path

import pytest

from helpers.workers import ROOT

BENCH = ROOT / "bench"
SCRIPTS = sorted(p for p in BENCH.glob("*.py") if p.name != "common.py")


@pytest.mark.parametrize("script", SCRIPTS, ids=lambda p: p.name)
def test_the_benchmark_imports(script: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(BENCH))  # as `python bench/NAME.py` has it
    spec = importlib.util.spec_from_file_location(f"bench_{script.stem}", script)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    assert callable(getattr(module, "main", None)), f"{script.name} has no main()"
    sys.modules.pop("common", None)
