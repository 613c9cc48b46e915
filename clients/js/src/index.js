// GatewayClient: the browser side of the WebSocket notification gateway, with no dependencies.
// It authenticates through the `bearer` subprotocol, follows the gateway's close-code table,
// refreshes its token in-band before it expires, and resumes after a reconnect from the last
// position it delivered. README.md beside this file documents the API, states and retry rules.

// What the gateway's close-code table asks of a client, per close code (gateway/close_codes.py).
const RECONNECT = "reconnect"; // after a random 0-2 s delay
const BACKOFF = "backoff"; // jittered exponential back-off
const NEW_TOKEN = "new_token"; // fetch a new token, then reconnect
const WAIT_FOR_PLACE = "wait_for_place"; // the user holds all their places: wait for one to free
const STOP = "stop"; // reconnecting would not help: the app decides

const RULES = new Map([
  [1001, RECONNECT], // going_away, idle_timeout
  [1002, STOP], // protocol_error
  [1007, STOP], // invalid_utf8
  [1008, BACKOFF], // policy_violation
  [1009, STOP], // message_too_big
  [1011, BACKOFF], // internal_error, ping_timeout
  [1012, RECONNECT], // draining
  [1013, BACKOFF], // redis_unavailable, overloaded, admission_backlog, too_many_handshakes, too_many_resumes
  [4001, NEW_TOKEN], // session_expired, token_expired
  // disconnected: a backend ended the user's sessions (logout, revoked access); token_revoked: the
  // token predates such a disconnect. The app decides whether there is a session to come back
  // to; its connect() fetches a new token.
  [4003, STOP],
  [4008, RECONNECT], // slow_consumer
  [4029, WAIT_FOR_PLACE], // user_limit
  [4400, STOP], // query_invalid
  [4401, STOP], // token_missing, token_invalid, token_wrong_user
  [4403, STOP], // Origin not allowed
]);

const EVENTS = ["message", "state", "recovery"];
const OPEN = 1;
const RANDOM_RECONNECT_MS = 2000;
const MIN_REFRESH_DELAY_MS = 1000;
// setTimeout keeps its delay in 32 bits: a longer one (24.8 days) fires at once. Longer waits
// sleep this long, then look at the clock again.
const MAX_TIMER_DELAY_MS = 2 ** 31 - 1;
// Positions are "<offset>-<epoch>" (gateway/history/position.py), or a connection's composite
// cursor across its user, groups and broadcasts (gateway/history/cursor.py), which is compared
// as opaque: the gateway drops copies per source itself. Opaque to apps either way.
const POSITION = /^([0-9]{1,15})-([0-9A-Za-z]{1,40})$/;

/** The exp claim of a JWT in milliseconds, read without verifying (the gateway verifies), or null. */
function tokenClaims(token) {
  try {
    const part = token.split(".")[1].replace(/-/g, "+").replace(/_/g, "/");
    const claims = JSON.parse(atob(part + "=".repeat((4 - (part.length % 4)) % 4)));
    return claims && typeof claims === "object" ? claims : {};
  } catch {
    return {};
  }
}

function parsePosition(text) {
  const match = typeof text === "string" ? POSITION.exec(text) : null;
  return match ? { offset: Number(match[1]), epoch: match[2] } : null;
}

/** Whether position `next` comes after `last` (null: nothing delivered yet). */
function isAfter(next, last) {
  if (last === null) return true;
  const a = parsePosition(next);
  const b = parsePosition(last);
  if (a === null || b === null) return next !== last;
  // A new epoch means the history started again: its offsets start again too.
  return a.epoch !== b.epoch || a.offset > b.offset;
}

function websocketUrl(url) {
  const base = globalThis.location ? globalThis.location.href : undefined;
  const parsed = new URL(String(url), base);
  if (parsed.protocol === "http:") parsed.protocol = "ws:";
  else if (parsed.protocol === "https:") parsed.protocol = "wss:";
  if (parsed.protocol !== "ws:" && parsed.protocol !== "wss:") {
    throw new TypeError(`GatewayClient: not a WebSocket URL: ${parsed.protocol}`);
  }
  parsed.hash = "";
  return parsed;
}

/**
 * One logical connection to the gateway that survives restarts, drains and token expiry.
 * States: "closed" -> "connecting" -> "open" -> "reconnecting" -> "open" ... -> "closed".
 */
export class GatewayClient {
  /**
   * @param {string | URL} url the gateway's /ws URL (ws:, wss:, http:, https: or relative)
   * @param {object} options see README.md; getToken is required
   */
  constructor(url, options) {
    const o = options || {};
    if (typeof o.getToken !== "function") {
      throw new TypeError("GatewayClient: options.getToken must be a function returning a JWT");
    }
    this._url = websocketUrl(url);
    this._getToken = o.getToken;
    this._minDelay = o.minDelay ?? 1000;
    this._maxDelay = o.maxDelay ?? 30000;
    this._userLimitDelay = o.userLimitDelay ?? 30000;
    this._refreshMargin = o.refreshMargin ?? 60000;
    this._WebSocket = o.WebSocket ?? globalThis.WebSocket;
    if (typeof this._WebSocket !== "function") {
      // Node before 22 has no global WebSocket: say so now, not as a token problem at connect().
      throw new TypeError(
        "GatewayClient: no WebSocket constructor in this runtime: pass options.WebSocket " +
          "(e.g. the ws package's WebSocket on Node before 22)",
      );
    }
    this._setTimeout = o.setTimeout ?? ((fn, ms) => globalThis.setTimeout(fn, ms));
    this._clearTimeout = o.clearTimeout ?? ((id) => globalThis.clearTimeout(id));
    this._random = o.random ?? Math.random;
    this._now = o.now ?? Date.now;

    this._handlers = new Map(EVENTS.map((name) => [name, new Set()]));
    this._state = "closed";
    this._position = o.position ?? null;
    this._token = null;
    this._refreshAt = 0; // ms: when the current token should be replaced
    this._ws = null;
    this._admitted = false; // the gateway has sent the current socket a frame
    this._attempt = 0; // connections in a row that ended before the gateway admitted them
    this._timer = null; // the pending reconnect
    this._refreshTimer = null;
    this._lateRefreshes = 0; // refreshes in a row that found the new token already due
    this._waitingForPlace = false;
    this._placeChannel = null; // BroadcastChannel shared with this user's other clients
    this._run = 0; // bumped by close(), so work started before it is dropped
    this._duplicates = 0; // messages dropped as at or before the last position (diagnostics)
  }

  /** "closed", "connecting", "open" or "reconnecting". */
  get state() {
    return this._state;
  }

  /** The position of the last message delivered, or null: persist it to resume after a reload. */
  get position() {
    return this._position;
  }

  /**
   * Register a handler; returns a function that removes it.
   * "message" (data, position), "state" (state, detail), "recovery" ({recovered, replayed, reason}).
   */
  on(event, handler) {
    const handlers = this._handlers.get(event);
    if (handlers === undefined) throw new TypeError(`GatewayClient: unknown event ${event}`);
    if (typeof handler !== "function") throw new TypeError("GatewayClient: handler must be a function");
    handlers.add(handler);
    return () => handlers.delete(handler);
  }

  /** Start connecting; does nothing unless the client is closed. */
  connect() {
    if (this._state !== "closed") return;
    this._attempt = 0;
    this._setState("connecting");
    this._open(this._run);
  }

  /** Close the connection and stop reconnecting. connect() starts again from the same position. */
  close() {
    if (this._state === "closed") return;
    this._run += 1;
    this._cancelTimers();
    this._stopWaitingForPlace();
    const ws = this._ws;
    if (ws !== null) {
      this._detach(ws);
      if (this._admitted) this._announcePlaceFreed();
      ws.close(1000, "client");
    }
    this._setState("closed");
  }

  async _open(run) {
    let token;
    try {
      token = await this._currentToken();
    } catch (error) {
      if (run !== this._run) return;
      // The token service may be down for a moment: try again later.
      this._retry(BACKOFF, { code: 0, reason: "get_token_failed", error });
      return;
    }
    if (run !== this._run) return;
    const url = new URL(this._url.href);
    url.searchParams.set("envelope", "1");
    if (this._position !== null) url.searchParams.set("since", this._position);
    let ws;
    try {
      ws = new this._WebSocket(url.href, ["bearer", token]);
    } catch (error) {
      // A token that is not a valid subprotocol value can never authenticate.
      this._token = null;
      this._stop({ code: 0, reason: "token_unusable", error });
      return;
    }
    this._ws = ws;
    this._admitted = false;
    ws.onopen = () => {
      // Any frame the gateway sends proves admission; a refused socket gets only its close frame.
      ws.send('{"type":"ping"}');
    };
    ws.onmessage = (event) => this._onFrame(event.data);
    ws.onclose = (event) => this._onClose(ws, event.code, event.reason);
    ws.onerror = () => {}; // the close event that follows carries what there is to know
  }

  async _currentToken() {
    if (this._token === null || this._now() >= this._refreshAt) {
      this._setToken(await this._getToken());
    }
    return this._token;
  }

  _setToken(token) {
    if (typeof token !== "string" || token === "") {
      throw new TypeError("GatewayClient: getToken must return a non-empty string");
    }
    const now = this._now();
    const exp = Number(tokenClaims(token).exp) * 1000;
    // Refresh a margin before exp, or after two thirds of a short token's life.
    const margin = Number.isFinite(exp) ? Math.min(this._refreshMargin, (exp - now) / 3) : 0;
    this._token = token;
    this._refreshAt = Number.isFinite(exp) ? exp - margin : Infinity;
  }

  _onFrame(text) {
    let frame;
    try {
      frame = JSON.parse(text);
    } catch {
      return;
    }
    if (frame === null || typeof frame !== "object") return;
    const ws = this._ws;
    if (!this._admitted) this._onAdmitted(frame);
    // A handler of "state" or "recovery" may have closed the client: deliver nothing more.
    if (this._ws !== ws) return;
    if (frame.type === "message") {
      const position = typeof frame.position === "string" ? frame.position : undefined;
      if (position !== undefined) {
        if (!isAfter(position, this._position)) {
          this._duplicates += 1;
          return;
        }
        this._position = position;
      }
      // A group's message names it ("*": a broadcast); the user's own have no group.
      const group = typeof frame.group === "string" ? frame.group : undefined;
      this._emit("message", frame.data, position, group);
    } else if (frame.type === "recovery") {
      // Not recovered: the old position means nothing any more; live messages follow.
      if (frame.recovered !== true) this._position = null;
      const recovery = { recovered: frame.recovered === true, replayed: Number(frame.replayed) || 0 };
      if (typeof frame.reason === "string") recovery.reason = frame.reason;
      this._emit("recovery", recovery);
    }
  }

  _onAdmitted(frame) {
    this._admitted = true;
    this._attempt = 0;
    this._stopWaitingForPlace();
    const resumed = this._state === "reconnecting";
    const ws = this._ws;
    this._scheduleRefresh(ws);
    this._setState("open");
    if (this._ws !== ws) return;
    // Without a position there is nothing to resume from: whatever was published while the
    // client was away is lost to it, so the app must refetch as after an unrecovered resume.
    if (resumed && frame.type !== "recovery") {
      this._emit("recovery", { recovered: false, replayed: 0, reason: "no_position" });
    }
  }

  _onClose(ws, code, reason) {
    if (ws !== this._ws) return;
    this._ws = null;
    this._detach(ws);
    this._cancelTimers();
    if (this._admitted) this._announcePlaceFreed();
    const detail = { code, reason };
    const rule = RULES.get(code) ?? BACKOFF;
    if (rule === STOP) this._stop(detail);
    else this._retry(rule, detail);
  }

  _retry(rule, detail) {
    let delay;
    if (rule === NEW_TOKEN) {
      this._token = null;
      delay = this._attempt === 0 ? 0 : this._backoff();
    } else if (rule === RECONNECT && this._attempt === 0) {
      delay = this._random() * RANDOM_RECONNECT_MS;
    } else if (rule === WAIT_FOR_PLACE) {
      delay = this._userLimitDelay * (0.5 + this._random() / 2);
      this._waitForPlace();
    } else {
      delay = this._backoff();
    }
    this._attempt += 1;
    // Scheduled before the state is emitted, so that a handler's close() cancels it.
    this._schedule(delay);
    this._setState(this._state === "connecting" ? "connecting" : "reconnecting", detail);
  }

  _schedule(delay) {
    if (this._timer !== null) this._clearTimeout(this._timer);
    const run = this._run;
    this._timer = this._setTimeout(
      () => {
        this._timer = null;
        this._stopWaitingForPlace();
        this._open(run);
      },
      Math.min(delay, MAX_TIMER_DELAY_MS),
    );
  }

  /** Half to all of min(maxDelay, minDelay * 2^attempt): growing, and spread between clients. */
  _backoff() {
    const cap = Math.min(this._maxDelay, this._minDelay * 2 ** Math.min(this._attempt, 30));
    return cap * (0.5 + this._random() / 2);
  }

  _stop(detail) {
    this._run += 1;
    this._token = null; // connect() after a stop starts with a new token
    this._cancelTimers();
    this._stopWaitingForPlace();
    this._setState("closed", detail);
  }

  _scheduleRefresh(ws) {
    if (this._refreshTimer !== null) this._clearTimeout(this._refreshTimer);
    this._refreshTimer = null;
    if (this._refreshAt === Infinity) return;
    let delay = this._refreshAt - this._now();
    if (delay < MIN_REFRESH_DELAY_MS) {
      // Due already: the token service gave an old token, or this clock runs ahead of the
      // gateway's. Ask again with growing delays; at worst the gateway closes with 4001 at exp.
      const cap = Math.max(this._refreshMargin, MIN_REFRESH_DELAY_MS);
      delay = Math.min(cap, MIN_REFRESH_DELAY_MS * 2 ** Math.min(this._lateRefreshes, 30));
      this._lateRefreshes += 1;
    } else {
      this._lateRefreshes = 0;
    }
    if (delay > MAX_TIMER_DELAY_MS) {
      // A long-lived token: wake before it is due and schedule again from the clock then.
      this._refreshTimer = this._setTimeout(() => {
        this._refreshTimer = null;
        if (ws === this._ws) this._scheduleRefresh(ws);
      }, MAX_TIMER_DELAY_MS);
      return;
    }
    this._refreshTimer = this._setTimeout(() => this._refresh(ws), delay);
  }

  /** Replace the token in-band. On failure the gateway closes with 4001 at exp, and we reconnect. */
  async _refresh(ws) {
    this._refreshTimer = null;
    let token;
    try {
      token = await this._getToken();
    } catch {
      token = null;
    }
    if (ws !== this._ws || ws.readyState !== OPEN) return;
    if (token !== null) {
      try {
        this._setToken(token);
        ws.send(JSON.stringify({ type: "refresh", token }));
      } catch {
        // Not a usable token: keep the old one until it expires.
      }
    }
    this._scheduleRefresh(ws);
  }

  // The user's other clients in this browser (other tabs) that wait on 4029 are told when one
  // of the user's connections closes, and try at once instead of waiting out userLimitDelay.
  _channelName() {
    const sub = this._token === null ? "" : String(tokenClaims(this._token).sub ?? "");
    return `ws-gateway-client ${this._url.origin}${this._url.pathname} ${sub}`;
  }

  _waitForPlace() {
    this._waitingForPlace = true;
    if (this._placeChannel !== null || typeof globalThis.BroadcastChannel !== "function") return;
    this._placeChannel = new globalThis.BroadcastChannel(this._channelName());
    this._placeChannel.onmessage = () => {
      if (this._waitingForPlace && this._timer !== null) {
        this._waitingForPlace = false;
        this._schedule(this._random() * RANDOM_RECONNECT_MS);
      }
    };
  }

  _stopWaitingForPlace() {
    this._waitingForPlace = false;
    if (this._placeChannel !== null) {
      this._placeChannel.close();
      this._placeChannel = null;
    }
  }

  _announcePlaceFreed() {
    if (typeof globalThis.BroadcastChannel !== "function") return;
    const channel = new globalThis.BroadcastChannel(this._channelName());
    channel.postMessage("freed");
    channel.close();
  }

  _cancelTimers() {
    if (this._timer !== null) this._clearTimeout(this._timer);
    if (this._refreshTimer !== null) this._clearTimeout(this._refreshTimer);
    this._timer = null;
    this._refreshTimer = null;
  }

  _detach(ws) {
    ws.onopen = null;
    ws.onmessage = null;
    ws.onclose = null;
    ws.onerror = null;
  }

  _setState(state, detail) {
    if (state === this._state) return;
    this._state = state;
    this._emit("state", state, detail);
  }

  _emit(event, ...args) {
    for (const handler of [...this._handlers.get(event)]) {
      try {
        handler(...args);
      } catch (error) {
        // One failing handler must not stop the others or the client; report it as uncaught.
        queueMicrotask(() => {
          throw error;
        });
      }
    }
  }
}
