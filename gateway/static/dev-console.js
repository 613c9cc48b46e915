// The dev console: connects with the repository's JS client (served at /dev/gateway-client.js),
// logs every frame, state, recovery and close code, and publishes to the connected user.
const $ = (id) => document.getElementById(id);
const MAX_ENTRIES = 500;

function log(kind, text) {
  const item = document.createElement("li");
  item.dataset.kind = kind;
  const time = new Date().toISOString().slice(11, 23);
  for (const [cls, value] of [["time", time], ["kind", kind], ["text", text]]) {
    const cell = document.createElement("span");
    cell.className = cls;
    cell.textContent = value;
    item.append(cell);
  }
  const list = $("log");
  list.append(item);
  while (list.childElementCount > MAX_ENTRIES) list.firstElementChild.remove();
  list.scrollTop = list.scrollHeight;
}

// Tokens never shown in full: enough to tell two apart.
const redact = (text) => text.replace(/eyJ[\w-]+\.[\w-]+\.[\w-]+/g, (t) => `${t.slice(0, 12)}…`);

async function postJson(path, body, token) {
  const headers = { "content-type": "application/json" };
  if (token) headers.authorization = `Bearer ${token}`;
  const response = await fetch(path, { method: "POST", headers, body: JSON.stringify(body) });
  const answer = await response.json().catch(() => ({}));
  if (!response.ok) throw new Error(`${path}: HTTP ${response.status} ${answer.error ?? ""}`.trim());
  return answer;
}

// A WebSocket that reports what the client's own socket does: frames in and out, and each close
// with its code and reason (the client itself only reports states).
class TracingWebSocket extends WebSocket {
  constructor(url, protocols) {
    super(url, protocols);
    log("socket", `connect ${url}`);
    this.addEventListener("open", () => log("socket", `open (subprotocol ${this.protocol || "none"})`));
    this.addEventListener("message", (event) => log("frame", String(event.data)));
    this.addEventListener("close", (event) => {
      const reason = event.reason || "no reason";
      log("close", `${event.code} ${reason}${event.wasClean ? "" : " (not clean)"}`);
    });
  }

  send(data) {
    log("sent", redact(String(data)));
    super.send(data);
  }
}

let GatewayClient = null;
let client = null;
let clientUser = null;
let token = null;

function setState(state) {
  $("state").textContent = state;
  $("state").dataset.state = state;
  $("connect").disabled = state !== "closed";
  $("close").disabled = state === "closed";
  $("publish").disabled = state !== "open";
}

async function getToken() {
  const user = $("user").value.trim();
  let answer;
  try {
    answer = await postJson("/dev/token", { user, ttl: Number($("ttl").value) });
  } catch (error) {
    log("error", error.message); // the client retries on its own; say why it has to
    throw error;
  }
  token = answer.token;
  log("token", `for ${user}, expires ${new Date(answer.exp * 1000).toISOString().slice(11, 19)}`);
  return token;
}

function connect() {
  const user = $("user").value.trim();
  if (client && user === clientUser) {
    client.connect(); // the same user again: resumes from the last position (since)
    return;
  }
  clientUser = user; // another user: a client of its own, from the start
  const url = new URL("/ws", location.href);
  client = new GatewayClient(url, { getToken, WebSocket: TracingWebSocket });
  client.on("state", (state, detail) => {
    setState(state);
    log("state", detail === undefined ? state : `${state} ${JSON.stringify(detail)}`);
  });
  client.on("message", (data, position) => {
    if (position) $("position").textContent = `last position ${position}`;
    log("message", `${JSON.stringify(data)}${position ? ` @ ${position}` : ""}`);
  });
  client.on("recovery", (recovery) => log("recovery", JSON.stringify(recovery)));
  client.connect();
}

async function publish() {
  const answer = await postJson("/dev/publish", { payload: $("payload").value }, token);
  $("published").textContent = `${answer.receivers} worker(s), position ${answer.position}`;
}

function guard(action) {
  return (event) => {
    event.preventDefault();
    Promise.resolve()
      .then(action)
      .catch((error) => log("error", error.message));
  };
}

async function main() {
  $("connect-form").addEventListener("submit", guard(connect));
  $("close").addEventListener("click", guard(() => client && client.close()));
  $("publish-form").addEventListener("submit", guard(publish));
  $("clear").addEventListener("click", () => $("log").replaceChildren());
  setState("closed");
  try {
    ({ GatewayClient } = await import("/dev/gateway-client.js"));
  } catch (error) {
    $("connect").disabled = true;
    log("error", `the JS client did not load (clients/js/src/index.js): ${error.message}`);
    return;
  }
  document.body.dataset.ready = "true";
  log("ready", "JS client loaded; pick a user and connect");
}

main();
