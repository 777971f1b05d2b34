"""CA install cost: session start (StartBrowserSession -> first CDP answer)
with 0, 1 and 10 custom CAs, in one worker, runs interleaved.

Two cases, because the worker builds each distinct set of CAs into an NSS
store once and copies it afterwards:
- `repeated`: the same CAs every run (a browser's tool-level CAs, the usual
  case): every start after the first copies a built store;
- `new`: never-seen CAs every run: every start runs certutil.

The CAs come from mounted-file secrets, so the figures are the install, not
a Secrets Manager round trip. Prints one JSON object on its last line and
writes it to bench/results/ca_install.json.

    python bench/ca_install.py [--runs 20]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
from pathlib import Path
from typing import Any

import grpc
import trustme

from common import daemon, start_to_first_answer, summary, write_results
from worker.pb import sandbox_pb2 as pb
from worker.pb import sandbox_pb2_grpc as pb_grpc

COUNTS = (0, 1, 10)


def ca_refs(secrets: Path, label: str, count: int) -> list[str]:
    refs = []
    for i in range(count):
        name = f"{label}-{i}"
        (secrets / name).write_bytes(trustme.CA().cert_pem.bytes())
        refs.append(f"file:{name}")
    return refs


def request(browser_id: str, refs: list[str]) -> Any:
    return pb.StartBrowserSessionRequest(
        browser_identifier=browser_id,
        certificates=[
            pb.Certificate(
                location=pb.CertificateLocation(
                    secrets_manager=pb.SecretsManagerLocation(secret_arn=ref)
                )
            )
            for ref in refs
        ],
    )


def measure(
    sessions: Any, browser_id: str, secrets: Path, runs: int, fresh: bool
) -> dict[int, list[float]]:
    times: dict[int, list[float]] = {count: [] for count in COUNTS}
    fixed = {count: ca_refs(secrets, f"fixed{count}", count) for count in COUNTS}

    def start(refs: list[str]) -> float:
        elapsed, session_id = start_to_first_answer(sessions, request(browser_id, refs))
        sessions.StopBrowserSession(
            pb.StopBrowserSessionRequest(browser_identifier=browser_id, session_id=session_id)
        )
        return elapsed

    for count in COUNTS:  # warm up; builds the fixed sets' stores
        start(fixed[count])
    for run in range(runs):
        order = COUNTS[run % 3 :] + COUNTS[: run % 3]  # rotate who goes first
        for count in order:
            refs = ca_refs(secrets, f"r{run}n{count}", count) if fresh else fixed[count]
            times[count].append(start(refs))
    return times


def report(times: dict[int, list[float]]) -> dict[str, Any]:
    base = statistics.median(times[0])
    return {
        **{f"{count}_cas": summary(values) for count, values in times.items()},
        "added_median_ms_1_ca": round(statistics.median(times[1]) - base, 1),
        "added_median_ms_10_cas": round(statistics.median(times[10]) - base, 1),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    results: dict[str, Any] = {
        "benchmark": "ca_install",
        "runs": args.runs,
        "machine": {"cpus": os.cpu_count(), "python": platform.python_version()},
    }
    with tempfile.TemporaryDirectory(prefix="sbxc-") as tmp:
        scratch = Path(tmp)
        secrets = scratch / "secrets"
        secrets.mkdir()
        env = {"SANDBOX_SECRETS_DIR": str(secrets)}
        with daemon(scratch, env=env) as info, grpc.insecure_channel(info["grpc"]) as channel:
            sessions = pb_grpc.BrowserSessionsStub(channel)
            browsers = pb_grpc.BrowsersStub(channel)
            shell = browsers.CreateBrowser(
                pb.CreateBrowserRequest(name="bench_shell", flavour=pb.HEADLESS_SHELL)
            ).browser_id
            for flavour, browser_id in (("chromium", "aws.browser.v1"), ("headless-shell", shell)):
                results[flavour] = {
                    case: report(measure(sessions, browser_id, secrets, args.runs, fresh))
                    for case, fresh in (("repeated", False), ("new", True))
                }
    write_results("ca_install", results)


if __name__ == "__main__":
    main()
