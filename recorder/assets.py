"""The third-party JavaScript the recorder and the viewer use.

rrweb's bundles come from npm at set-up time (`recorder/js/package-lock.json`
pins them); nothing of theirs is committed. Each UMD file ends in a
`//# sourceMappingURL` comment, so files are joined with a newline and a
semicolon on a line of their own.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path

NODE_MODULES = Path(
    os.environ.get("SANDBOX_RECORDER_ASSETS", Path(__file__).parent / "js" / "node_modules")
)
RECORD = "@rrweb/record/umd/record.min.js"
CONSOLE_PLUGIN = "@rrweb/rrweb-plugin-console-record/umd/rrweb-plugin-console-record.min.js"
PLAYER = "rrweb-player/dist/rrweb-player.umd.min.cjs"
PLAYER_CSS = "rrweb-player/dist/style.min.css"


class AssetsMissing(RuntimeError):
    """rrweb is not installed: run `bash deploy/run.sh install`."""


@functools.cache
def read(name: str) -> str:
    path = NODE_MODULES / name
    try:
        return path.read_text(encoding="utf-8")
    except OSError:
        raise AssetsMissing(
            f"{path} is missing: install the recorder's npm packages "
            "(bash deploy/run.sh install, or npm ci in recorder/js)"
        ) from None


def joined(*names: str) -> str:
    return "\n;\n".join(read(name) for name in names)
