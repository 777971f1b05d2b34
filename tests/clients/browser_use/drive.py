"""Drive sessions with browser-use, one per line of standard input.

Runs in browser-use's own venv (see requirements.txt), so it imports nothing
of the project. Each input line is a JSON object {"endpoint", "token", "url"};
for each, browser-use connects to the automation endpoint the way an agent
does (its own session start: attach, initialise every target it is shown,
open a tab), navigates to `url`, reads the URL of the page it shows and the types of
the targets it attached to, and disconnects. One JSON line answers each
input line: {"ok": true, "url", "target_types", "seconds"} or
{"ok": false, "error"}.
"""

from __future__ import annotations

import asyncio
import json
import sys
import time


async def drive(endpoint: str, token: str, url: str) -> dict[str, object]:
    from browser_use import BrowserSession

    began = time.monotonic()
    session = BrowserSession(
        cdp_url=endpoint, headers={"Authorization": f"Bearer {token}"}, is_local=False
    )
    try:
        await asyncio.wait_for(session.start(), 30)
        await asyncio.wait_for(session.navigate_to(url), 30)
        shown = await session.get_current_page_url()
        targets = session.session_manager.get_all_targets().values()
        return {
            "ok": True,
            "url": shown,
            "target_types": sorted({t.target_type for t in targets}),
            "seconds": round(time.monotonic() - began, 3),
        }
    except Exception as exc:  # every failure is an answer, not a crash
        return {"ok": False, "error": f"{type(exc).__name__}: {exc}"}
    finally:
        try:
            await asyncio.wait_for(session.stop(), 15)
        except Exception as exc:
            print(f"stop: {type(exc).__name__}: {exc}", file=sys.stderr)


async def main() -> None:
    loop = asyncio.get_running_loop()
    while line := await loop.run_in_executor(None, sys.stdin.readline):
        request = json.loads(line)
        answer = await drive(request["endpoint"], request["token"], request["url"])
        print(json.dumps(answer), flush=True)


if __name__ == "__main__":
    asyncio.run(main())
