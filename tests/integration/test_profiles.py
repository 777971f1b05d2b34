"""Browser profiles through stock boto3: a session's cookies (HttpOnly
ones too) and local storage saved into a profile, and a later session,
cold or warm, that starts with them, so its first page is already logged
in; sealed at rest, listed, paged and deleted."""

from __future__ import annotations

import contextlib
import http.server
import sqlite3
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
import pytest_asyncio
from botocore.exceptions import ClientError

from helpers.daemon import cli, daemon
from helpers.hosted import client, first_page, keys_file
from helpers.waits import eventually
from helpers.workers import RunningWorker, make_config, running_worker
from worker.cli.loopback import serving

pytestmark = pytest.mark.integration

BUILT_IN = "aws.browser.v1"
SECRET_SID = "sid-8f14e45fceea167a"  # what must never be readable at rest


class Site(http.server.BaseHTTPRequestHandler):
    """/login sets an HttpOnly session cookie and a local storage item;
    /whoami shows the cookies the server got and the item the page has."""

    def do_GET(self) -> None:
        headers: list[tuple[str, str]] = []
        if self.path == "/login":
            headers.append(("Set-Cookie", f"sid={SECRET_SID}; HttpOnly; Path=/; SameSite=Lax"))
            headers.append(("Set-Cookie", "theme=dark; Path=/; Max-Age=3600"))
            body = "<script>localStorage.setItem('user', 'ada')</script><p>logged in"
        elif self.path == "/cart":
            body = "<script>localStorage.setItem('cart', '3 items')</script><p>a cart"
        else:
            cookies = self.headers.get("Cookie", "")
            body = (
                f"<p id=server>{cookies}</p><p id=storage></p><script>"
                "document.getElementById('storage').textContent ="
                " (localStorage.getItem('user') || '') + '|' + (localStorage.getItem('cart') || '')"
                "</script>"
            )
        self.send_response(200)
        self.send_header("Content-Type", "text/html")
        for name, value in headers:
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(body.encode())

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def site() -> Iterator[str]:
    with serving(Site) as url:
        yield url


@pytest.fixture
def shop() -> Iterator[str]:
    """Another origin, on another loopback address (cookies ignore ports)."""
    with serving(Site, "127.0.0.2") as url:
        yield url


@pytest_asyncio.fixture(params=["cold", "warm"])
async def api(request: pytest.FixtureRequest, tmp_path: Path) -> AsyncIterator[RunningWorker]:
    pool = ("chromium=2",) if request.param == "warm" else ()
    config = make_config(
        tmp_path, http_api_keys_file=keys_file(tmp_path), warm_pool=pool, max_sessions=4
    )
    async with running_worker(config) as running:
        if pool:
            manager = running.server.manager
            assert manager is not None
            await eventually(lambda: manager.pool.count == 2, timeout=30)
        yield running


async def whoami(data: Any, site: str, **start: Any) -> tuple[str, str]:
    """What a new session's first page shows: the server's cookies and the
    page's local storage item."""
    started = await data.start_browser_session(browserIdentifier=BUILT_IN, **start)
    try:
        async with first_page(started) as page:
            await page.goto(f"{site}/whoami")
            return await page.inner_text("#server"), await page.inner_text("#storage")
    finally:
        await data.stop_browser_session(browserIdentifier=BUILT_IN, sessionId=started["sessionId"])


async def test_a_saved_profile_logs_the_next_session_in_from_its_first_page(
    api: RunningWorker, site: str, shop: str
) -> None:
    control = client(api, "bedrock-agentcore-control")
    data = client(api, "bedrock-agentcore")
    created = await control.create_browser_profile(name="shop_login", description="a shopper")
    profile = created["profileId"]
    assert created["status"] == "READY" and profile.startswith("shop_login-")

    started = await data.start_browser_session(browserIdentifier=BUILT_IN)
    async with first_page(started) as page:
        await page.goto(f"{shop}/cart")  # visited, then left: its storage is saved too
        await page.goto(f"{site}/login")
        saved = await data.save_browser_session_profile(
            profileIdentifier=profile, browserIdentifier=BUILT_IN, sessionId=started["sessionId"]
        )
    await data.stop_browser_session(browserIdentifier=BUILT_IN, sessionId=started["sessionId"])
    assert (saved["profileIdentifier"], saved["sessionId"]) == (profile, started["sessionId"])
    got = await control.get_browser_profile(profileId=profile)
    assert got["lastSavedBrowserSessionId"] == started["sessionId"] and got["lastSavedAt"]

    server, storage = await whoami(data, site, profileConfiguration={"profileIdentifier": profile})
    assert f"sid={SECRET_SID}" in server and "theme=dark" in server  # HttpOnly too
    assert storage == "ada|"
    _, elsewhere = await whoami(data, shop, profileConfiguration={"profileIdentifier": profile})
    assert elsewhere == "|3 items"
    assert await whoami(data, site) == ("", "|")  # without the profile: neither

    # An ended session has nothing to save.
    with pytest.raises(ClientError) as ended:
        await data.save_browser_session_profile(
            profileIdentifier=profile, browserIdentifier=BUILT_IN, sessionId=started["sessionId"]
        )
    assert ended.value.response["Error"]["Code"] == "ConflictException"

    # Sealed at rest: the state file holds none of it in the clear.
    with contextlib.closing(sqlite3.connect(api.config.db_path)) as db:
        [(sealed,)] = db.execute("SELECT state FROM profiles").fetchall()
    assert SECRET_SID.encode() not in sealed and b"ada" not in sealed and len(sealed) > 100


async def test_profiles_are_listed_paged_and_deleted(api: RunningWorker, site: str) -> None:
    control = client(api, "bedrock-agentcore-control")
    data = client(api, "bedrock-agentcore")
    ids = [(await control.create_browser_profile(name=f"p{n}"))["profileId"] for n in range(3)]
    with pytest.raises(ClientError) as taken:
        await control.create_browser_profile(name="p0")
    assert taken.value.response["Error"]["Code"] == "ConflictException"
    seen, token = [], None
    for _ in range(5):
        page = await control.list_browser_profiles(
            maxResults=2, **({"nextToken": token} if token else {})
        )
        seen += [p["profileId"] for p in page["profileSummaries"]]
        token = page.get("nextToken")
        if not token:
            break
    assert sorted(seen) == sorted(ids)
    named = await control.list_browser_profiles(name="p1")
    assert [p["profileId"] for p in named["profileSummaries"]] == [ids[1]]
    with pytest.raises(ClientError) as garbage:
        await control.list_browser_profiles(nextToken="not-a-token")
    assert garbage.value.response["Error"]["Code"] == "ValidationException"

    deleted = await control.delete_browser_profile(profileId=ids[0])
    assert deleted["status"] == "DELETED"
    with pytest.raises(ClientError) as gone:
        await control.get_browser_profile(profileId=ids[0])
    assert gone.value.response["Error"]["Code"] == "ResourceNotFoundException"
    with pytest.raises(ClientError) as refused:
        await data.start_browser_session(
            browserIdentifier=BUILT_IN, profileConfiguration={"profileIdentifier": ids[0]}
        )
    error = refused.value.response
    assert error["Error"]["Code"] == "ResourceNotFoundException"
    assert "profileConfiguration.profileIdentifier" in error["Error"]["Message"]
    # A profile never saved starts a session with nothing in it.
    empty = await whoami(data, site, profileConfiguration={"profileIdentifier": ids[1]})
    assert empty == ("", "|")


async def test_the_cli_saves_and_starts_with_a_profile_and_no_log_line_holds_it(
    tmp_path: Path, site: str
) -> None:
    state = tmp_path / "state"
    with daemon(state, "--log-level", "debug") as (_, info):
        target = info["grpc"]
        profile = cli(target, "profile", "create", "from_cli")["profileId"]
        first = cli(target, "session", "start")
        async with first_page(first) as page:
            await page.goto(f"{site}/login")
            saved = cli(target, "profile", "save", profile, first["sessionId"])
            assert saved["profileIdentifier"] == profile
        listed = cli(target, "profile", "list", "--name", "from_cli")["profileSummaries"]
        assert [p["profileId"] for p in listed] == [profile] and listed[0]["lastSavedAt"]
        second = cli(target, "session", "start", "--profile", profile)
        async with first_page(second) as page:
            await page.goto(f"{site}/whoami")
            assert SECRET_SID in await page.inner_text("#server")
        cli(target, "profile", "delete", profile)
    logs = (tmp_path / "daemon.log").read_text()
    assert "session.profile_saved" in logs and "session.profile_restored" in logs
    assert SECRET_SID not in logs  # debug level, and still in no log line
