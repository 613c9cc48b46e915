"""The JavaScript client (clients/js) in real headless Chromium, against a real gateway with a
real Redis, and against a scripted close server for the close codes a gateway cannot be made to
send on demand. Each client in the page is a "probe" (PROBE_JS): it records the client's events,
the sockets it opened (URL, subprotocols, close code) and, with fake timers, the delays it asked
for, so every retry rule is checked without waiting it out."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import jwt
import pytest
from playwright.sync_api import Browser, Page

from gateway import close_codes
from gateway.close_codes import Retry
from gateway.publishing.publisher import Publisher
from harness.app_page import AppPage, serving_app_page
from harness.browser import new_page
from harness.close_server import CloseServer, running_close_server
from harness.gateway_process import Gateway, running_gateway
from harness.redis_server import RedisServer
from harness.waiting import wait_for

# Installed in the page once: startProbe(name, url, spec) creates a GatewayClient whose getToken
# fetches /token from the app page (spec.tokens: one {ttl, forged} per call, the last repeats).
PROBE_JS = """
window.probes = {};
window.startProbe = async (name, url, spec) => {
  const { GatewayClient } = await import('/gateway-client.js');
  const p = { events: [], timers: [], sockets: [], tokens: 0 };
  const tokens = spec.tokens ?? [{}];
  const options = { ...(spec.options ?? {}) };
  options.getToken = async () => {
    const t = tokens[Math.min(p.tokens, tokens.length - 1)];
    p.tokens += 1;
    const query = new URLSearchParams({ user: spec.user, ttl: String(t.ttl ?? 3600) });
    if (t.forged) query.set('forged', '1');
    if (spec.groups) query.set('groups', spec.groups.join(','));
    return (await fetch('/token?' + query)).text();
  };
  if (spec.fakeTimers) {
    options.setTimeout = (fn, ms) => { p.timers.push({ fn, ms, live: true }); return p.timers.length - 1; };
    options.clearTimeout = (id) => { if (p.timers[id]) p.timers[id].live = false; };
  }
  if (spec.random !== undefined) options.random = () => spec.random;
  // fakeClock: the client's clock runs ahead of the page's by p.clock ms (advanceClock).
  p.clock = 0;
  if (spec.fakeClock) options.now = () => Date.now() + p.clock;
  options.WebSocket = class extends WebSocket {
    constructor(url, protocols) {
      super(url, protocols);
      const record = { url, protocols, protocol: null, close: null, refreshed: 0 };
      p.sockets.push(record);
      this.addEventListener('message', (e) => { record.refreshed += e.data.includes('"refreshed"'); });
      this.addEventListener('open', () => { record.protocol = this.protocol; });
      this.addEventListener('close', (e) => { record.close = [e.code, e.reason]; });
    }
  };
  const client = new GatewayClient(url, options);
  client.on('message', (data, position, group) =>
    p.events.push(['message', data, position ?? null, ...(group === undefined ? [] : [group])]));
  client.on('state', (state, detail) =>
    p.events.push(['state', state, detail ? [detail.code, detail.reason] : null]));
  client.on('recovery', (recovery) => p.events.push(['recovery', recovery]));
  if (spec.closeOn) client.on('state', (state) => { if (state === spec.closeOn) client.close(); });
  p.client = client;
  window.probes[name] = p;
  client.connect();
};
// Retry delays only: a refresh timer (an hour-long token's, about 59 minutes) is not one.
window.probeView = (name) => {
  const p = window.probes[name];
  return {
    state: p.client.state, position: p.client.position, events: p.events, sockets: p.sockets,
    tokens: p.tokens, duplicates: p.client._duplicates,
    retries: p.timers.filter((t) => t.live && t.ms <= 60000).map((t) => t.ms),
  };
};
window.runRetry = (name) => {
  const timer = window.probes[name].timers.find((t) => t.live && t.ms <= 60000);
  timer.live = false;
  timer.fn();
};
window.stopProbe = (name) => window.probes[name].client.close();
// The refresh timer (the one live timer longer than any retry): its delay, and firing it.
window.refreshTimers = (name) =>
  window.probes[name].timers.filter((t) => t.live && t.ms > 60000).map((t) => t.ms);
window.runRefreshTimer = (name) => {
  const timer = window.probes[name].timers.find((t) => t.live && t.ms > 60000);
  timer.live = false;
  timer.fn();
};
window.advanceClock = (name, ms) => { window.probes[name].clock += ms; };
"""

View = dict[str, Any]


@pytest.fixture(scope="module")
def app_page() -> Iterator[AppPage]:
    with serving_app_page() as page:
        yield page


@pytest.fixture(scope="module")
def gateway(redis_server: RedisServer, app_page: AppPage) -> Iterator[Gateway]:
    """One worker; the app page's origin only; one place per user (4029); an instant drain; room
    to replay everything a restart makes a client miss."""
    with running_gateway(
        redis_server.url,
        workers=1,
        CORS_ORIGINS=json.dumps([app_page.origin]),
        WEBSOCKET_MAX_CONNECTIONS_PER_USER="1",
        WEBSOCKET_DRAIN_WINDOW="0",
        WEBSOCKET_HISTORY_REPLAY_CAP="1000",
        WEBSOCKET_SEND_QUEUE_SIZE="2000",
    ) as gateway:
        yield gateway


@pytest.fixture(scope="module")
def close_server() -> Iterator[CloseServer]:
    with running_close_server() as server:
        yield server


def _load_app(page: Page, url: str) -> Page:
    page.goto(url)
    page.add_script_tag(content=PROBE_JS)
    return page


@pytest.fixture(scope="module")
def app_tab(browser: Browser, app_page: AppPage) -> Iterator[Page]:
    """One page for the module: a page costs about half a second, a probe nothing."""
    with new_page(browser) as (page, _log):
        yield _load_app(page, app_page.url)


@pytest.fixture
def app(app_tab: Page) -> Iterator[Page]:
    """The app's page, with the probes installed; every probe a test started is closed after it."""
    yield app_tab
    app_tab.evaluate(
        "() => { Object.values(window.probes).forEach((p) => p.client.close()); window.probes = {}; }"
    )


@pytest.fixture
def publisher(redis_server: RedisServer) -> Iterator[Publisher]:
    publisher = Publisher(redis_server.url, history_length=1000)
    yield publisher
    publisher.close()


def _start(page: Page, name: str, url: str, user: str, **spec: Any) -> None:
    page.evaluate("([name, url, spec]) => startProbe(name, url, spec)", [name, url, {**spec, "user": user}])


def _view(page: Page, name: str) -> View:
    view: View = page.evaluate("(name) => probeView(name)", name)
    return view


def _run_retry(page: Page, name: str) -> None:
    page.evaluate("(name) => runRetry(name)", name)


def _stop(page: Page, name: str) -> None:
    page.evaluate("(name) => stopProbe(name)", name)


def _until(page: Page, name: str, condition: Callable[[View], bool], what: str, timeout: float = 10) -> View:
    seen: View = {}

    def check() -> bool:
        seen.update(_view(page, name))
        return condition(seen)

    wait_for(check, timeout=timeout, what=f"{name}: {what}")
    return seen


def _messages(view: View) -> list[list[Any]]:
    return [event[1:] for event in view["events"] if event[0] == "message"]


def _states(view: View) -> list[Any]:
    return [event[1:] for event in view["events"] if event[0] == "state"]


def _recoveries(view: View) -> list[dict[str, Any]]:
    return [event[1] for event in view["events"] if event[0] == "recovery"]


def _is_open(view: View) -> bool:
    return bool(view["state"] == "open")


def test_messages_arrive_in_publish_order_with_their_positions(
    app: Page, gateway: Gateway, publisher: Publisher, redis_server: RedisServer, user: str
) -> None:
    """JSON and text payloads with their positions, and a plain publish without one; the token
    travels in the bearer subprotocol, the client asks for envelopes."""
    _start(app, "delivery", gateway.ws_url, user)
    _until(app, "delivery", _is_open, "open")
    first = publisher.publish(user, {"n": 1})
    second = publisher.publish(user, "not json")
    plain = Publisher(redis_server.url, history=False)
    plain.publish(user, {"n": 3})
    plain.close()
    view = _until(app, "delivery", lambda v: len(_messages(v)) == 3, "three messages")
    assert _messages(view) == [[{"n": 1}, first.position], ["not json", second.position], [{"n": 3}, None]]
    assert view["position"] == second.position
    [socket] = view["sockets"]
    assert socket["protocols"][0] == "bearer" and socket["protocol"] == "bearer"
    assert jwt.decode(socket["protocols"][1], options={"verify_signature": False})["sub"] == user
    assert "envelope=1" in socket["url"] and "token=" not in socket["url"]
    assert _states(view) == [["connecting", None], ["open", None]]
    _stop(app, "delivery")


# setTimeout holds its delay in a signed 32-bit integer: anything longer fires at once.
_MAX_TIMER_MS = 2**31 - 1
_DAY_S = 86_400


def test_a_token_valid_for_weeks_is_refreshed_when_due_not_at_once(
    app: Page, gateway: Gateway, user: str
) -> None:
    """A token 40 days long (past setTimeout's 24.8-day limit): the client sleeps in steps setTimeout
    can hold, looks at its clock on each wake and asks for a new token only when it is due."""
    _start(
        app, "weeks", gateway.ws_url, user, tokens=[{"ttl": 40 * _DAY_S}, {}], fakeTimers=True, fakeClock=True
    )
    _until(app, "weeks", _is_open, "open")

    def refresh_timers() -> list[float]:
        timers: list[float] = app.evaluate("(name) => refreshTimers(name)", "weeks")
        return timers

    def wake() -> None:
        app.evaluate("(name) => runRefreshTimer(name)", "weeks")

    assert refresh_timers() == [_MAX_TIMER_MS]
    wake()  # 24.8 days early: nothing is due yet
    assert refresh_timers() == [_MAX_TIMER_MS] and _view(app, "weeks")["tokens"] == 1
    app.evaluate("([name, ms]) => advanceClock(name, ms)", ["weeks", 30 * _DAY_S * 1000])
    wake()
    [due_in] = refresh_timers()  # what is left of the 40 days, less the refresh margin
    assert 9 * _DAY_S * 1000 < due_in < 10 * _DAY_S * 1000
    assert _view(app, "weeks")["tokens"] == 1
    app.evaluate("([name, ms]) => advanceClock(name, ms)", ["weeks", due_in])
    wake()
    view = _until(app, "weeks", lambda v: v["sockets"][0]["refreshed"] >= 1, "the gateway's refresh ack")
    assert view["tokens"] == 2 and len(view["sockets"]) == 1 and view["state"] == "open"
    _stop(app, "weeks")


def test_the_token_is_refreshed_in_band_across_its_expiry_with_no_reconnect(
    app: Page, gateway: Gateway, publisher: Publisher, user: str
) -> None:
    """Tokens that live 2 to 3 s: the session outlives the first one on the same socket."""
    _start(app, "refresh", gateway.ws_url, user, tokens=[{"ttl": 3}])
    view = _until(app, "refresh", _is_open, "open")
    first_exp = jwt.decode(view["sockets"][0]["protocols"][1], options={"verify_signature": False})["exp"]
    # The gateway closes at exp (4001) unless a refresh came first: wait until well past it,
    # polling the page, since its fetches of /token wait for this thread to serve the harness's
    # request filter (Playwright's sync API dispatches only inside its calls).
    _until(app, "refresh", lambda v: time.time() > first_exp + 1.0, "the first exp", timeout=6)
    published = publisher.publish(user, {"after": "expiry"})
    view = _until(app, "refresh", lambda v: len(_messages(v)) == 1, "the message after expiry")
    assert _messages(view) == [[{"after": "expiry"}, published.position]]
    assert len(view["sockets"]) == 1 and view["sockets"][0]["close"] is None
    assert view["tokens"] >= 2 and view["sockets"][0]["refreshed"] >= 1  # the gateway's acks
    assert _states(view) == [["connecting", None], ["open", None]]
    _stop(app, "refresh")


def test_a_forged_token_is_told_4401_and_the_client_stops(app: Page, gateway: Gateway, user: str) -> None:
    _start(app, "forged", gateway.ws_url, user, tokens=[{"forged": True}], fakeTimers=True)
    view = _until(app, "forged", lambda v: v["state"] == "closed", "closed")
    assert view["sockets"][0]["close"] == [4401, "token_invalid"]
    assert _states(view)[-1] == ["closed", [4401, "token_invalid"]]
    assert view["retries"] == [] and len(view["sockets"]) == 1


def test_a_page_of_another_origin_is_told_4403_and_the_client_stops(
    browser: Browser, app_page: AppPage, gateway: Gateway, user: str
) -> None:
    """The same app from http://localhost: an origin the gateway's CORS_ORIGINS does not list."""
    with new_page(browser) as (page, _log):
        foreign = _load_app(page, app_page.other_origin_url)
        _start(foreign, "foreign", gateway.ws_url, user, fakeTimers=True)
        view = _until(foreign, "foreign", lambda v: v["state"] == "closed", "closed")
    assert view["sockets"][0]["close"] == [4403, "origin_forbidden"]
    assert view["retries"] == [] and len(view["sockets"]) == 1


def test_an_expired_token_is_replaced_by_a_new_one_at_once(app: Page, gateway: Gateway, user: str) -> None:
    """4001: call getToken again and reconnect with no delay."""
    _start(app, "expired", gateway.ws_url, user, tokens=[{"ttl": -60}, {}], fakeTimers=True)
    view = _until(app, "expired", lambda v: v["retries"] == [0], "a reconnect with no delay")
    assert view["sockets"][0]["close"][0] == 4001
    _run_retry(app, "expired")
    view = _until(app, "expired", _is_open, "open with the new token")
    assert view["tokens"] == 2 and len(view["sockets"]) == 2
    _stop(app, "expired")


def test_a_backend_disconnect_4003_stops_the_client(
    app: Page, gateway: Gateway, publisher: Publisher, user: str
) -> None:
    _start(app, "logout", gateway.ws_url, user, fakeTimers=True)
    _until(app, "logout", _is_open, "open")
    assert publisher.disconnect(user) == 1
    view = _until(app, "logout", lambda v: v["state"] == "closed", "closed")
    assert _states(view)[-1] == ["closed", [4003, "disconnected"]]
    assert view["retries"] == [] and len(view["sockets"]) == 1


def test_the_user_limit_4029_waits_until_another_tab_frees_a_place(
    app: Page, gateway: Gateway, publisher: Publisher, user: str
) -> None:
    """The second client of a one-place user waits half to all of userLimitDelay; when the first
    closes, it tries again within 0-2 s. Both live in one page here; tabs of one origin share the
    BroadcastChannel that carries the news the same way."""
    _start(app, "holder", gateway.ws_url, user)
    _until(app, "holder", _is_open, "open")
    _start(app, "waiter", gateway.ws_url, user, fakeTimers=True, random=0.5)
    view = _until(app, "waiter", lambda v: v["retries"] != [], "a retry")
    assert view["sockets"][0]["close"] == [4029, "user_limit"]
    assert view["retries"] == [22500] and view["state"] == "connecting"
    _stop(app, "holder")
    _until(app, "waiter", lambda v: v["retries"] == [1000], "the wake-up: a 0-2 s retry")

    wait_for(lambda: publisher.online([user])[user] == 0, what="the holder's place back")
    _run_retry(app, "waiter")
    view = _until(app, "waiter", _is_open, "admitted")
    assert len(view["sockets"]) == 2
    _stop(app, "waiter")


def test_a_restart_on_the_same_port_mid_stream_loses_and_doubles_nothing(
    app: Page, gateway: Gateway, publisher: Publisher, user: str
) -> None:
    """SIGTERM (1012 draining), gunicorn started again on the same port, while messages are
    published with history throughout: the client resumes with since, every message once, in order."""
    options = {"minDelay": 50, "maxDelay": 250}
    _start(app, "resume", gateway.ws_url, user, options=options, random=0.1)
    _until(app, "resume", _is_open, "open")
    reopened = threading.Event()
    published: list[str | None] = []

    def stream() -> None:
        """About 100 messages a second (a live backend's pace), until 50 after the reopen."""
        after_reopen = 0
        for seq in range(5000):  # bounded: about 50 s at most
            published.append(publisher.publish(user, {"seq": seq}).position)
            time.sleep(0.01)
            after_reopen += reopened.is_set()
            if after_reopen >= 50:
                return

    streaming = threading.Thread(target=stream, name="stream")
    streaming.start()
    try:
        _until(app, "resume", lambda v: len(_messages(v)) >= 50, "the stream flowing")
        gateway.stop()
        gateway.start()
        _until(app, "resume", lambda v: len(_states(v)) == 4, "open again", timeout=20)
    finally:
        reopened.set()
        streaming.join(60)
    view = _until(app, "resume", lambda v: len(_messages(v)) == len(published), "every message")
    assert [m[0]["seq"] for m in _messages(view)] == list(range(len(published)))
    assert [m[1] for m in _messages(view)] == published
    assert _states(view) == [
        ["connecting", None],
        ["open", None],
        ["reconnecting", [1012, "draining"]],
        ["open", None],
    ]
    [recovery] = _recoveries(view)
    assert recovery["recovered"] is True and recovery["replayed"] > 0
    assert view["duplicates"] == 0
    assert view["sockets"][0]["close"] == [1012, "draining"]
    assert "since=" not in view["sockets"][0]["url"] and "since=" in view["sockets"][-1]["url"]
    _stop(app, "resume")


def test_group_and_broadcast_messages_arrive_with_their_group_and_resume_with_the_one_cursor(
    app: Page, gateway: Gateway, publisher: Publisher, user: str
) -> None:
    """A token naming a group: the handler gets each message's group ("*": a broadcast). The
    gateway restarts while the user, the group and everyone are published to: the client resumes
    with its one position, and gets every message once."""
    team = f"team-{user}"
    options = {"minDelay": 50, "maxDelay": 250}
    _start(app, "groups", gateway.ws_url, user, options=options, random=0.1, groups=[team])
    _until(app, "groups", _is_open, "open")
    publisher.publish(user, {"n": 0})
    publisher.publish_group(team, {"n": 1})
    publisher.broadcast({"n": 2})
    view = _until(app, "groups", lambda v: len(_messages(v)) == 3, "three messages")
    assert [(m[0], m[2:]) for m in _messages(view)] == [({"n": 0}, []), ({"n": 1}, [team]), ({"n": 2}, ["*"])]
    gateway.stop()
    publisher.publish(user, {"n": 3})
    publisher.publish_group(team, {"n": 4})
    publisher.broadcast({"n": 5})
    gateway.start()
    view = _until(app, "groups", lambda v: len(_messages(v)) == 6, "the missed three", timeout=20)
    assert sorted((m[0]["n"], *m[2:]) for m in _messages(view)[3:]) == [(3,), (4, team), (5, "*")]
    [recovery] = _recoveries(view)
    assert recovery == {"recovered": True, "replayed": 3}
    assert view["duplicates"] == 0
    assert "since=t" in view["sockets"][-1]["url"]  # the composite cursor, as the client got it
    _stop(app, "groups")


def _expected_rules() -> dict[int, Retry]:
    """The close-code table's rule per code, as the client follows it."""
    rules: dict[int, Retry] = {}
    for refusal in close_codes.ALL:
        if refusal.close_code is not None:
            # A client decides by the code alone: every reason with one code has one rule.
            assert rules.setdefault(refusal.close_code, refusal.retry) is refusal.retry, refusal
    rules.setdefault(4401, Retry.GIVE_UP)
    rules.setdefault(4403, Retry.GIVE_UP)
    # The client's one departure from the table: after a backend ended the user's sessions it
    # does not fetch a token and come back by itself; the app decides (its connect() fetches one).
    rules[4003] = Retry.GIVE_UP
    rules[1006] = Retry.BACKOFF  # no close frame: the connection failed or was lost
    rules[4999] = Retry.BACKOFF  # a code the table does not know
    return rules


# With random() = 0.5 and the defaults (minDelay 1 s, maxDelay 30 s, userLimitDelay 30 s): the
# first delay, and the second after a second close in a row.
_DELAYS = {
    Retry.RECONNECT: (1000, 1500),  # 0.5 * 2 s, then the back-off: a fast loop is impossible
    Retry.BACKOFF: (750, 1500),  # half to all of 1 s, then of 2 s
    Retry.NEW_TOKEN: (0, 1500),
    Retry.WAIT_FOR_CLOSE: (22500, 22500),
}


def test_every_close_code_gets_the_retry_rule_of_the_close_code_table(
    app: Page, close_server: CloseServer
) -> None:
    rules = _expected_rules()
    for code in rules:
        url = close_server.url("abort" if code == 1006 else code)
        _start(app, f"code-{code}", url, "someone", fakeTimers=True, random=0.5)
    firsts: dict[int, View] = {}
    for code in rules:
        firsts[code] = _until(
            app, f"code-{code}", lambda v: v["state"] == "closed" or v["retries"] != [], "a decision"
        )
    for code, rule in rules.items():
        view = firsts[code]
        assert len(view["sockets"]) == 1, code
        assert view["sockets"][0]["close"] == [code, "" if code == 1006 else "scripted"], code
        if rule is Retry.GIVE_UP:
            assert (view["state"], view["retries"]) == ("closed", []), code
            assert _states(view)[-1] == ["closed", [code, "scripted"]], code
        else:
            assert (view["state"], view["retries"]) == ("connecting", [_DELAYS[rule][0]]), code
            _run_retry(app, f"code-{code}")
    for code, rule in rules.items():
        if rule is Retry.GIVE_UP:
            continue
        view = _until(app, f"code-{code}", lambda v: len(v["retries"]) == 1, "a second decision")
        assert view["retries"] == [_DELAYS[rule][1]], code
        # Only 4001 asks for a new token; every other retry reuses the one it has.
        assert view["tokens"] == (2 if rule is Retry.NEW_TOKEN else 1), code
        _stop(app, f"code-{code}")
    assert close_server.count(4008) == 2


def test_the_back_off_doubles_up_to_max_delay(app: Page, close_server: CloseServer) -> None:
    _start(app, "backoff", close_server.url(1013), "someone", fakeTimers=True, random=1.0)
    delays = []
    for attempt in range(7):
        view = _until(
            app, "backoff", lambda v, n=attempt: len(v["sockets"]) == n + 1 and v["retries"] != [], "a retry"
        )
        delays.extend(view["retries"])
        _run_retry(app, "backoff")
    assert delays == [1000, 2000, 4000, 8000, 16000, 30000, 30000]
    _stop(app, "backoff")


def _frame(position: str | None, data: Any) -> str:
    frame: dict[str, Any] = {"type": "message", "data": data}
    if position is not None:
        frame["position"] = position
    return json.dumps(frame)


def test_no_message_at_or_before_the_last_position_is_ever_emitted(
    app: Page, close_server: CloseServer
) -> None:
    """A server that repeats and reorders: only newer positions pass; a new epoch starts again."""
    frames = [
        _frame("1-aa", 1),
        _frame("2-aa", 2),
        _frame("2-aa", "again"),
        _frame("1-aa", "older"),
        _frame("3-aa", 3),
        _frame("1-bb", "new epoch"),
        _frame(None, "plain"),
    ]
    _start(app, "dedup", close_server.url(4401, frames), "someone", fakeTimers=True)
    view = _until(app, "dedup", lambda v: v["state"] == "closed", "closed")
    assert _messages(view) == [[1, "1-aa"], [2, "2-aa"], [3, "3-aa"], ["new epoch", "1-bb"], ["plain", None]]
    assert view["duplicates"] == 2 and view["position"] == "1-bb"


def test_an_unrecovered_resume_forgets_the_old_position(app: Page, close_server: CloseServer) -> None:
    frames = [
        json.dumps({"type": "recovery", "recovered": False, "replayed": 0, "reason": "epoch"}),
        _frame("2-cc", "x"),
    ]
    _start(
        app,
        "unrecovered",
        close_server.url(4401, frames),
        "someone",
        fakeTimers=True,
        options={"position": "5-cc"},
    )
    view = _until(app, "unrecovered", lambda v: v["state"] == "closed", "closed")
    assert "since=5-cc" in view["sockets"][0]["url"]
    assert _recoveries(view) == [{"recovered": False, "replayed": 0, "reason": "epoch"}]
    assert _messages(view) == [["x", "2-cc"]]


def test_a_reconnect_with_nothing_to_resume_from_tells_the_app_to_refetch(
    app: Page, close_server: CloseServer
) -> None:
    """Only plain messages so far: no position, so the reconnect cannot ask for what it missed."""
    _start(app, "nopos", close_server.url(1012, [_frame(None, "plain")]), "someone", fakeTimers=True)
    _until(app, "nopos", lambda v: v["retries"] != [], "a retry")
    _run_retry(app, "nopos")
    view = _until(app, "nopos", lambda v: len(_messages(v)) == 2, "the second connection's message")
    assert "since=" not in view["sockets"][1]["url"]
    assert _recoveries(view) == [{"recovered": False, "replayed": 0, "reason": "no_position"}]
    # (the scripted server closes the second connection too)
    assert [s[0] for s in _states(view)][:4] == ["connecting", "open", "reconnecting", "open"]
    _stop(app, "nopos")


def test_a_handler_that_closes_the_client_on_reconnecting_stops_the_retry(
    app: Page, close_server: CloseServer
) -> None:
    """close() from inside a "state" handler wins over the reconnect the client was deciding."""
    url = close_server.url(1012, [_frame(None, "hello")])
    _start(app, "handler-close", url, "someone", fakeTimers=True, closeOn="reconnecting")
    view = _until(app, "handler-close", lambda v: v["state"] == "closed", "closed")
    assert [s[0] for s in _states(view)] == ["connecting", "open", "reconnecting", "closed"]
    assert view["retries"] == [] and len(view["sockets"]) == 1
