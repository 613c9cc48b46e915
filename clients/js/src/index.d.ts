/** The client's life: only changes are emitted. */
export type GatewayState = "closed" | "connecting" | "open" | "reconnecting";

/** Why the client went to "reconnecting" or "closed" on its own. */
export interface CloseDetail {
  /** The close code the gateway sent (1006 when the connection failed); 0 for a token problem. */
  code: number;
  /** The gateway's reason label (e.g. "user_limit"), or "get_token_failed" / "token_unusable". */
  reason: string;
  /** What getToken threw, or what the WebSocket constructor threw, when code is 0. */
  error?: unknown;
}

/** After a reconnect: whether every message published meanwhile was replayed. */
export interface Recovery {
  recovered: boolean;
  /** How many missed messages follow, in order, before live ones. */
  replayed: number;
  /** Why not recovered: the gateway's reason ("epoch", "trimmed", ...) or "no_position". */
  reason?: string;
}

/** A published JSON value, or the payload as a string when it was not JSON. */
export type JsonValue = null | boolean | number | string | JsonValue[] | { [key: string]: JsonValue };

export interface GatewayClientOptions {
  /** Returns a JWT for the gateway; called to connect, to refresh before exp, and after 4001. */
  getToken: () => Promise<string> | string;
  /** A position to resume from (e.g. saved from `client.position` before a reload). */
  position?: string | null;
  /** Back-off bounds in ms: min(maxDelay, minDelay * 2^n), jittered to half..all. Default 1000, 30000. */
  minDelay?: number;
  maxDelay?: number;
  /** After 4029 (user_limit), wait half..all of this many ms. Default 30000. */
  userLimitDelay?: number;
  /** Refresh the token this many ms before its exp (at most a third of its life). Default 60000. */
  refreshMargin?: number;
  /** For tests and other runtimes: the WebSocket class, timers, randomness and clock to use. */
  WebSocket?: { new (url: string, protocols: string[]): WebSocket };
  setTimeout?: (callback: () => void, ms: number) => unknown;
  clearTimeout?: (id: unknown) => void;
  random?: () => number;
  now?: () => number;
}

export class GatewayClient {
  constructor(url: string | URL, options: GatewayClientOptions);
  /** The current state. */
  readonly state: GatewayState;
  /** The position of the last message delivered, or null. */
  readonly position: string | null;
  /** Start connecting; does nothing unless the client is "closed". */
  connect(): void;
  /** Close and stop reconnecting; connect() later resumes from `position`. */
  close(): void;
  /** Each handler is called in registration order; the returned function removes it. */
  on(
    event: "message",
    handler: (data: JsonValue, position: string | undefined, group: string | undefined) => void,
  ): () => void;
  on(event: "state", handler: (state: GatewayState, detail: CloseDetail | undefined) => void): () => void;
  on(event: "recovery", handler: (recovery: Recovery) => void): () => void;
}
