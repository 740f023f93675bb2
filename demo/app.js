// The live demo dashboard of fanout: one page, no build step, on the fanout JS client.
//
// Channels:
//   dag:<run>   the run view (node_state, edge_active, cost_update, execution_complete,
//               human_gate_waiting, error) and the agent console (output, tool_call,
//               status, inject_prompt); decisions, prompts and cancels go back to the backend's
//               inbox with send(), or, for a run that asks for it (`"reply": "publish"`: the
//               gateway's own demo player), are published on the run's channel
//   user:<me>   notifications (the bell)
//   room:demo   presence (the client's trackPresence), with each member's status (setStatus)
//   broadcast   system announcements
//
// Events follow docs/events.md. All text from the network is inserted as text, never as
// HTML. Every message shown is also listed in the event log with data-* attributes
// (channel, offset, type), which is what the browser tests count.

import { Fanout, trackPresence } from "./client/index.js";

const PRESENCE_CHANNEL = "room:demo";
/** How many entries the console and the event log keep before dropping the oldest. */
const CONSOLE_LIMIT = 300;
const LOG_LIMIT = 1000;
/** How long an edge stays highlighted after its edge_active. */
const EDGE_ACTIVE_MS = 2500;

const params = new URLSearchParams(location.search);
const me = {
  user: params.get("user") || storedGuestId(),
  name: params.get("name") || "",
};
let runId = params.get("run") || "demo";

const $ = (id) => document.getElementById(id);

const SVG_TAGS = new Set(["svg", "g", "rect", "path", "text", "title", "circle", "defs", "marker"]);

/**
 * Creates an element (in the SVG namespace for SVG_TAGS). `attrs` sets attributes (`class`, `data-*`, ...; null/undefined
 * skipped); children are nodes or strings, inserted as text.
 */
function el(tag, attrs = {}, ...children) {
  const node = document.createElementNS(
    SVG_TAGS.has(tag) ? "http://www.w3.org/2000/svg" : "http://www.w3.org/1999/xhtml",
    tag,
  );
  for (const [name, value] of Object.entries(attrs)) {
    if (value !== null && value !== undefined && value !== false) node.setAttribute(name, String(value));
  }
  for (const child of children.flat()) {
    if (child !== null && child !== undefined) node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

/** A per-tab guest id, so that a reload keeps the identity and two tabs are two users. */
function storedGuestId() {
  try {
    let id = sessionStorage.getItem("fanout-demo-user");
    if (!id) {
      id = `guest-${Math.random().toString(36).slice(2, 6)}`;
      sessionStorage.setItem("fanout-demo-user", id);
    }
    return id;
  } catch {
    return `guest-${Math.random().toString(36).slice(2, 6)}`;
  }
}

/** The gateway's WebSocket URL: ?gateway=ws://host:port, else the page's own origin. */
function gatewayUrl() {
  const override = params.get("gateway");
  const base = override
    ? new URL(override)
    : new URL(`${location.protocol === "https:" ? "wss:" : "ws:"}//${location.host}`);
  if (base.pathname === "/" || base.pathname === "") base.pathname = "/ws";
  return base.toString();
}

/**
 * A development token from the gateway's demo endpoint (`GET /demo/token`, next to this
 * page; insecure by design, only with `--demo`). The client calls this again before the
 * token expires and after a rejection.
 */
async function getToken() {
  const url = new URL("token", location.href);
  url.searchParams.set("user", me.user);
  if (me.name) url.searchParams.set("name", me.name);
  const response = await fetch(url, { cache: "no-store" });
  if (!response.ok) throw new Error(`token endpoint answered ${response.status}`);
  const body = await response.json();
  return body.token;
}

function describe(error) {
  return error?.message || String(error);
}

function formatTime(date = new Date()) {
  return date.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit", second: "2-digit", hour12: false });
}

/**
 * When an event was created, from its `timestamp` (events.md: Unix seconds, Unix
 * milliseconds above 10^11, or RFC 3339); now when it has none.
 */
function eventTime(event) {
  const t = event && typeof event === "object" ? event.timestamp : undefined;
  if (typeof t === "number" && Number.isFinite(t)) return new Date(t > 1e11 ? t : t * 1000);
  if (typeof t === "string") {
    const parsed = Date.parse(t);
    if (!Number.isNaN(parsed)) return new Date(parsed);
  }
  return new Date();
}

/** Shows a short message at the bottom right for a few seconds. */
function toast(text, level = "info") {
  const node = el("div", { class: `toast level-${level}`, role: "status" }, text);
  $("toasts").append(node);
  setTimeout(() => node.remove(), 5000);
}

// ---------------------------------------------------------------------------------------
// Connection indicator

const STATE_TEXT = {
  connecting: "Connecting…",
  connected: "Connected",
  disconnected: "Offline · reconnecting",
};

/**
 * Shows the state, and which node and transport serve the page once connected
 * (`data-node`, `data-transport`; `data-connections` counts the connections made).
 */
function showConnectionState(state, connection) {
  const box = $("connection");
  box.dataset.state = state;
  let text = STATE_TEXT[state] || state;
  if (state === "connected" && connection) {
    box.dataset.connections = String(Number(box.dataset.connections || 0) + 1);
    box.dataset.node = connection.node;
    box.dataset.transport = connection.transport;
    text += ` · ${connection.node}${connection.transport === "sse" ? " · SSE" : ""}`;
    box.title = `node ${connection.node}, ${connection.transport === "sse" ? "Server-Sent Events" : "WebSocket"}, connection ${connection.connId}`;
  }
  $("connection-text").textContent = text;
}

// ---------------------------------------------------------------------------------------
// Subscriptions, listed in the footer with their state (pending until `subscribed`).

const subscriptions = {
  /** Shows `channel` as pending (subscribed but not yet acknowledged on this connection). */
  add(channel) {
    if (!this.item(channel)) $("subscriptions").append(el("li", { "data-channel": channel, "data-state": "pending" }, channel));
  },

  set(channel, state) {
    const item = this.item(channel);
    if (item) item.dataset.state = state;
  },

  remove(channel) {
    this.item(channel)?.remove();
  },

  item(channel) {
    return [...$("subscriptions").children].find((li) => li.dataset.channel === channel);
  },
};

/**
 * Lists a subscription in the footer and follows its state there (pending while it is
 * `subscribing`, refused when the gateway ended it).
 */
function showSubscription(sub) {
  const channel = sub.channel;
  subscriptions.add(channel);
  sub.on("state", (state, { error }) => {
    if (state === "subscribed") subscriptions.set(channel, "subscribed");
    else if (state === "subscribing") subscriptions.set(channel, "pending");
    else if (error) {
      subscriptions.set(channel, "refused");
      eventLog.note(channel, "refused", `${channel}: ${describe(error)}`);
    } else subscriptions.remove(channel);
  });
  return sub;
}

/** Subscribes through the client (`handlers` as the client's) and lists it in the footer. */
function subscribe(channel, handlers) {
  return showSubscription(client.subscribe(channel, handlers));
}

// ---------------------------------------------------------------------------------------
// Event log: every message of every channel, with the data the tests count.

const eventLog = {
  count: 0,
  liveDuplicates: 0,

  add(channel, meta, data, source) {
    const list = $("event-log");
    const type = data && typeof data === "object" && typeof data.type === "string" ? data.type : typeof data;
    const summary = JSON.stringify(data);
    list.append(
      el(
        "li",
        {
          "data-channel": channel,
          "data-offset": meta.offset ?? null,
          "data-type": type,
          "data-user": meta.user ?? null,
          "data-source": source,
        },
        el("time", {}, formatTime(eventTime(data))),
        el("span", { class: "log-channel" }, channel),
        el("span", { class: "log-offset" }, meta.offset != null ? `#${meta.offset}` : ""),
        el("span", { class: "log-type" }, type),
        el("span", { class: "log-data" }, summary.length > 240 ? `${summary.slice(0, 240)}…` : summary),
      ),
    );
    while (list.childElementCount > LOG_LIMIT) list.firstElementChild.remove();
    this.count += 1;
    list.dataset.count = String(this.count);
    $("log-count").textContent = `${this.count} message${this.count === 1 ? "" : "s"}`;
    list.scrollTop = list.scrollHeight;
  },

  note(channel, type, text) {
    $("event-log").append(
      el("li", { class: "log-note", "data-channel": channel, "data-note": type }, el("time", {}, formatTime()), text),
    );
  },

  /** A live message at or below an offset already applied: the client delivered it twice. */
  duplicate() {
    this.liveDuplicates += 1;
    $("event-log").dataset.liveDuplicates = String(this.liveDuplicates);
  },
};

// ---------------------------------------------------------------------------------------
// Channels with history: state = the history, then the live messages, each offset once.

/**
 * Subscribes to a channel with history. The client delivers each live message once, in
 * order, across reconnects, and calls `onReload` when the page must (re)build its state: at
 * the start of the subscription, and when messages were lost for good. The page rebuilds it
 * from the channel's recent history (so a page opened mid-run shows the run so far), up to
 * the position the client continues from; live messages that arrive meanwhile wait for it.
 */
function followWithHistory(channel, { apply, reset, historyLimit = 1000 }) {
  /** Set by unsubscribe: a history read still on its way must not touch the view. */
  let closed = false;
  let loading = false;
  /** Live messages that arrived while the history loads, applied after it. */
  let waiting = [];
  /** Counts rebuilds: a reload during a rebuild makes the older one stop. */
  let generation = 0;
  /** Offsets seen live, per epoch: a second delivery of one would be the client's bug. */
  let liveEpoch = null;
  let lastLiveOffset = 0;

  const deliver = (data, meta, source) => {
    if (closed) return;
    if (source === "live" && meta.offset != null) {
      if (meta.epoch !== liveEpoch) {
        liveEpoch = meta.epoch;
        lastLiveOffset = 0;
      }
      if (meta.offset <= lastLiveOffset) eventLog.duplicate();
      lastLiveOffset = Math.max(lastLiveOffset, meta.offset);
    }
    eventLog.add(channel, meta, data, source);
    apply(data, meta, source);
  };

  const rebuild = async (info) => {
    const mine = ++generation;
    loading = true;
    waiting = [];
    try {
      const reply = await client.history(channel, { limit: historyLimit });
      if (mine !== generation) return;
      // The client continues after `info.offset` (of `info.epoch`): take history up to it.
      const sameEpoch = !info.epoch || reply.epoch === info.epoch;
      for (const m of reply.messages) {
        if (sameEpoch && typeof info.offset === "number" && m.offset > info.offset) break;
        deliver(m.data, { channel, offset: m.offset, epoch: reply.epoch, ...(m.user !== undefined ? { user: m.user } : {}) }, "history");
      }
    } catch (error) {
      if (mine === generation) eventLog.note(channel, "history-failed", `history of ${channel} not loaded: ${describe(error)}`);
    }
    if (mine !== generation) return;
    loading = false;
    const queued = waiting;
    waiting = [];
    for (const [data, meta] of queued) deliver(data, meta, "live");
  };

  const subscription = subscribe(channel, {
    onMessage(data, meta) {
      if (loading) waiting.push([data, meta]);
      else deliver(data, meta, "live");
    },
    onReload(info) {
      if (info.reason === "lost") eventLog.note(channel, "reload", `${channel}: messages were lost, reloading from history`);
      reset();
      rebuild(info);
    },
  });
  return {
    unsubscribe() {
      closed = true;
      subscription.unsubscribe();
    },
  };
}

// ---------------------------------------------------------------------------------------
// The run view: nodes and edges in SVG, the cost, the run's status.

const NODE_W = 146;
const NODE_H = 56;
const COL_GAP = 30;
const ROW_GAP = 22;
const PAD = 16;

const STATE_LABEL = {
  pending: "pending",
  queued: "queued",
  running: "running",
  waiting: "waiting for you",
  completed: "completed",
  failed: "failed",
  skipped: "skipped",
  cancelled: "cancelled",
};

const run = {
  /** @type {Map<string, {id:string,label:string,dependsOn:string[],state:string,detail:string,tooltip:string}>} */
  nodes: new Map(),
  /** @type {Map<string, {from:string,to:string,activeUntil:number,traversed:boolean}>} by "from→to"; animated until `activeUntil` (ms) */
  edges: new Map(),
  ended: false,
  redrawTimer: 0,
  /**
   * How the page answers this run (decisions, prompts, cancels): "send" to the backend's
   * inbox, or "publish" on the run's channel when the run's events ask for it (the
   * gateway's own demo player has no inbox to read).
   */
  reply: "send",

  reset() {
    this.nodes.clear();
    this.edges.clear();
    this.ended = false;
    this.reply = "send";
    setRunStatus("idle", "waiting for events");
    showCost(null);
    gates.clear();
    this.draw();
  },

  node(id) {
    let node = this.nodes.get(id);
    if (!node) {
      node = { id, label: id, dependsOn: [], state: "pending", detail: "", tooltip: "" };
      this.nodes.set(id, node);
    }
    return node;
  },

  edge(from, to) {
    const key = `${from}→${to}`;
    let edge = this.edges.get(key);
    if (!edge) {
      edge = { from, to, activeUntil: 0, traversed: false };
      this.edges.set(key, edge);
    }
    return edge;
  },

  /** Applies one event of the run's channel; console events go to the console. */
  apply(event, meta, source) {
    if (!event || typeof event !== "object" || typeof event.type !== "string") return;
    const data = event.data && typeof event.data === "object" ? event.data : {};
    // One run per channel, but the simulator replays runs on the same channel: the first
    // event after execution_complete starts a new one.
    if (this.ended && ["node_state", "edge_active", "cost_update", "human_gate_waiting"].includes(event.type)) {
      this.reset();
      agentConsole.separator("new run");
    }
    if (data.reply === "publish" && !meta.user) this.reply = "publish";
    switch (event.type) {
      case "node_state":
        this.nodeState(data);
        break;
      case "edge_active":
        if (typeof data.from === "string" && typeof data.to === "string") {
          this.node(data.from);
          this.node(data.to);
          const edge = this.edge(data.from, data.to);
          edge.traversed = true;
          edge.activeUntil = source === "live" ? Date.now() + EDGE_ACTIVE_MS : 0;
          this.scheduleRedraw(EDGE_ACTIVE_MS + 50);
        }
        break;
      case "cost_update":
        showCost(data);
        break;
      case "human_gate_waiting":
        if (typeof data.node_id === "string") {
          this.node(data.node_id).state = "waiting";
          gates.open(data);
          setRunStatus("waiting", "waiting for a decision");
        }
        break;
      case "execution_complete":
        this.ended = true;
        gates.clear();
        setRunStatus(
          data.status || "ended",
          `${data.status || "ended"}${typeof data.duration_ms === "number" ? ` in ${(data.duration_ms / 1000).toFixed(1)} s` : ""}`,
        );
        agentConsole.add("complete", event, `Run ${data.status || "ended"}.`, { "data-status": data.status ?? null });
        break;
      case "error":
        agentConsole.add("error", event, `${data.node_id ? `[${data.node_id}] ` : ""}${data.message ?? "error"}`);
        break;
      default:
        agentConsole.apply(event, meta);
        return;
    }
    this.draw();
  },

  nodeState(data) {
    if (typeof data.node_id !== "string" || typeof data.state !== "string") return;
    const node = this.node(data.node_id);
    if (typeof data.label === "string") node.label = data.label;
    if (Array.isArray(data.depends_on)) {
      node.dependsOn = data.depends_on.filter((d) => typeof d === "string");
      for (const from of node.dependsOn) {
        this.node(from);
        this.edge(from, node.id);
      }
    }
    const previous = node.state;
    node.state = data.state;
    // One short detail fits in the box; the tooltip has them all.
    const parts = [];
    if (typeof data.decided_by === "string") parts.push(`by ${data.decided_by}`);
    if (typeof data.error === "string") parts.push(data.error);
    if (data.metrics && typeof data.metrics.cost_usd === "number") parts.push(`$${data.metrics.cost_usd.toFixed(3)}`);
    if (data.metrics && typeof data.metrics.duration_ms === "number") parts.push(`${(data.metrics.duration_ms / 1000).toFixed(1)} s`);
    node.detail = parts[0] ?? "";
    node.tooltip = parts.join(" · ");
    if (previous === "waiting" && data.state !== "waiting") gates.resolve(node.id, data);
    if (data.state === "failed") agentConsole.add("error", { type: "node_state" }, `${node.label} failed${data.error ? `: ${data.error}` : ""}`);
    if (!this.ended && ["running", "queued"].includes(data.state)) setRunStatus("running", "running");
  },

  scheduleRedraw(ms) {
    clearTimeout(this.redrawTimer);
    this.redrawTimer = setTimeout(() => this.draw(), ms);
  },

  /** Column of each node: 1 + the deepest of its dependencies (cycles cut). */
  layout() {
    const depth = new Map();
    const visiting = new Set();
    const depthOf = (id) => {
      if (depth.has(id)) return depth.get(id);
      if (visiting.has(id)) return 0;
      visiting.add(id);
      const node = this.nodes.get(id);
      const d = node && node.dependsOn.length ? 1 + Math.max(...node.dependsOn.map(depthOf)) : 0;
      visiting.delete(id);
      depth.set(id, d);
      return d;
    };
    const columns = [];
    for (const id of this.nodes.keys()) {
      const d = depthOf(id);
      (columns[d] ||= []).push(id);
    }
    const rows = Math.max(1, ...columns.map((c) => (c ? c.length : 0)));
    const height = PAD * 2 + rows * NODE_H + (rows - 1) * ROW_GAP;
    const position = new Map();
    columns.forEach((ids, col) => {
      if (!ids) return;
      const columnHeight = ids.length * NODE_H + (ids.length - 1) * ROW_GAP;
      ids.forEach((id, row) => {
        position.set(id, {
          x: PAD + col * (NODE_W + COL_GAP),
          y: (height - columnHeight) / 2 + row * (NODE_H + ROW_GAP),
        });
      });
    });
    const width = PAD * 2 + Math.max(1, columns.length) * NODE_W + Math.max(0, columns.length - 1) * COL_GAP;
    return { position, width, height };
  },

  draw() {
    const svg = $("dag");
    const empty = this.nodes.size === 0;
    $("dag-empty").hidden = !empty;
    svg.classList.toggle("is-empty", empty);
    if (empty) {
      svg.replaceChildren();
      return;
    }
    const { position, width, height } = this.layout();
    svg.setAttribute("viewBox", `0 0 ${width} ${height + 24}`);
    svg.style.setProperty("--dag-width", `${width}px`);
    const now = Date.now();
    const defs = el(
      "defs",
      {},
      el("marker", { id: "arrow", viewBox: "0 0 10 10", refX: "9", refY: "5", markerUnits: "userSpaceOnUse", markerWidth: "8", markerHeight: "8", orient: "auto-start-reverse" },
        el("path", { d: "M0 0L10 5L0 10z", class: "arrow-head" })),
    );
    const edges = el("g", { class: "edges" });
    for (const edge of this.edges.values()) {
      const a = position.get(edge.from);
      const b = position.get(edge.to);
      if (!a || !b) continue;
      let d;
      if (b.x > a.x) {
        const x1 = a.x + NODE_W;
        const y1 = a.y + NODE_H / 2;
        const x2 = b.x - 2;
        const y2 = b.y + NODE_H / 2;
        const mid = (x1 + x2) / 2;
        d = `M${x1} ${y1}C${mid} ${y1} ${mid} ${y2} ${x2} ${y2}`;
      } else {
        // A loop back (a gate sending work back upstream): an arc under the nodes.
        const x1 = a.x + NODE_W / 2;
        const x2 = b.x + NODE_W / 2;
        const y = Math.max(a.y, b.y) + NODE_H;
        d = `M${x1} ${a.y + NODE_H}C${x1} ${y + 30} ${x2} ${y + 30} ${x2} ${b.y + NODE_H + 2}`;
      }
      const active = edge.activeUntil > now;
      edges.append(
        el("path", {
          d,
          class: `edge${active ? " active" : ""}${edge.traversed ? " traversed" : ""}`,
          "data-from": edge.from,
          "data-to": edge.to,
          "data-active": active ? "true" : "false",
          "marker-end": "url(#arrow)",
        }),
      );
    }
    const nodes = el("g", { class: "nodes" });
    for (const node of this.nodes.values()) {
      const p = position.get(node.id);
      const label = node.label.length > 18 ? `${node.label.slice(0, 17)}…` : node.label;
      const stateText = STATE_LABEL[node.state] || node.state;
      const detail = node.detail.length > 24 ? `${node.detail.slice(0, 23)}…` : node.detail;
      nodes.append(
        el(
          "g",
          { class: `node state-${node.state}`, transform: `translate(${p.x} ${p.y})`, "data-node": node.id, "data-state": node.state },
          el("title", {}, `${node.label} (${node.id}): ${stateText}${node.tooltip ? ` · ${node.tooltip}` : ""}`),
          el("rect", { width: NODE_W, height: NODE_H, rx: 10 }),
          el("circle", { class: "node-dot", cx: 16, cy: 20, r: 5 }),
          el("text", { class: "node-label", x: 28, y: 24 }, label),
          el("text", { class: "node-state", x: 12, y: 43 }, detail ? `${stateText} · ${detail}` : stateText),
        ),
      );
    }
    svg.replaceChildren(defs, edges, nodes);
  },
};

function setRunStatus(status, text) {
  const pill = $("run-status");
  pill.dataset.status = status;
  pill.textContent = text;
}

function showCost(cost) {
  const box = $("cost");
  if (!cost || typeof cost.spent !== "number") {
    box.dataset.spent = "0";
    $("cost-spent").textContent = "—";
    $("cost-budget").textContent = "—";
    $("cost-remaining").textContent = "";
    $("cost-bar").style.width = "0%";
    box.classList.remove("warn", "over");
    return;
  }
  let money;
  try {
    money = new Intl.NumberFormat(undefined, { style: "currency", currency: cost.currency || "USD", minimumFractionDigits: 3 });
  } catch {
    money = new Intl.NumberFormat(undefined, { minimumFractionDigits: 3 });
  }
  box.dataset.spent = String(cost.spent);
  $("cost-spent").textContent = money.format(cost.spent);
  $("cost-budget").textContent = typeof cost.budget === "number" ? money.format(cost.budget) : "—";
  const remaining = typeof cost.remaining === "number" ? cost.remaining : cost.budget - cost.spent;
  $("cost-remaining").textContent = Number.isFinite(remaining) ? `· ${money.format(remaining)} left` : "";
  const ratio = cost.budget > 0 ? cost.spent / cost.budget : 0;
  $("cost-bar").style.width = `${Math.min(100, Math.max(0, ratio * 100)).toFixed(1)}%`;
  box.classList.toggle("warn", ratio >= 0.8 && ratio <= 1);
  box.classList.toggle("over", ratio > 1);
}

// ---------------------------------------------------------------------------------------
// Human gates: human_gate_waiting opens one; the decision goes to the inbox with send().

const gates = {
  /** @type {Map<string, HTMLElement>} open gates by node id */
  cards: new Map(),
  timer: 0,

  open(gate) {
    const nodeId = gate.node_id;
    const presentation = gate.presentation && typeof gate.presentation === "object" ? gate.presentation : {};
    const options = Array.isArray(presentation.options) && presentation.options.length
      ? presentation.options.filter((o) => ["approve", "reject", "modify"].includes(o))
      : ["approve", "reject"];
    this.cards.get(nodeId)?.remove();
    const feedback = el("textarea", { class: "gate-feedback", rows: 2, placeholder: "What should change? (for Modify)", maxlength: 2000 });
    const result = el("p", { class: "gate-result", role: "status" });
    const buttons = options.map((decision) =>
      el("button", { type: "button", class: `gate-button decision-${decision}`, "data-decision": decision }, DECISION_LABEL[decision]),
    );
    const expires = typeof gate.expires_at === "string" ? Date.parse(gate.expires_at) : NaN;
    const card = el(
      "article",
      { class: "card gate", "data-node": nodeId, "data-state": "waiting", "data-expires": Number.isNaN(expires) ? null : expires },
      el("div", { class: "gate-head" },
        el("span", { class: "gate-kicker" }, "Human gate"),
        el("code", {}, nodeId),
        el("span", { class: "gate-expiry muted" })),
      el("h2", { class: "gate-title" }, presentation.title || `Node ${nodeId} waits for a decision`),
      presentation.body ? el("p", { class: "gate-body" }, presentation.body) : null,
      options.includes("modify") ? feedback : null,
      el("div", { class: "gate-actions" }, buttons),
      result,
    );
    card.addEventListener("click", (event) => {
      const button = event.target.closest("button[data-decision]");
      if (button && !button.disabled) this.decide(card, nodeId, button.dataset.decision, feedback.value.trim(), result);
    });
    this.cards.set(nodeId, card);
    $("gates").append(card);
    this.tick();
  },

  async decide(card, nodeId, decision, feedback, result) {
    if (decision === "modify" && !feedback) {
      result.textContent = "Say what should change first.";
      card.querySelector(".gate-feedback")?.focus();
      return;
    }
    for (const b of card.querySelectorAll("button")) b.disabled = true;
    card.dataset.state = "sending";
    result.textContent = `Sending “${decision}”…`;
    const data = { node_id: nodeId, decision };
    if (feedback) data.feedback = feedback;
    try {
      const { streamId, offset } = await answerRun({ type: "human_decision", data, timestamp: Date.now() / 1000 });
      card.dataset.state = "sent";
      card.dataset.decision = decision;
      result.textContent = streamId
        ? `Sent (inbox entry ${streamId}); waiting for the engine…`
        : `Published on ${runChannel()} (#${offset}); waiting for the agent…`;
      if (streamId) card.dataset.streamId = streamId;
      if (offset !== undefined) card.dataset.offset = String(offset);
    } catch (error) {
      card.dataset.state = "waiting";
      result.textContent = `Not sent: ${describe(error)}`;
      for (const b of card.querySelectorAll("button")) b.disabled = false;
    }
  },

  /** The gate's node left `waiting`: the engine acted on a decision (or timed out). */
  resolve(nodeId, data) {
    const card = this.cards.get(nodeId);
    if (!card) return;
    this.cards.delete(nodeId);
    card.remove();
    const who = typeof data.decided_by === "string" ? ` by ${data.decided_by}` : "";
    agentConsole.add("gate", { type: "human_gate" }, `Gate ${nodeId}: ${GATE_OUTCOME[data.state] ?? data.state}${who}.`, { "data-status": data.state });
  },

  clear() {
    for (const card of this.cards.values()) card.remove();
    this.cards.clear();
  },

  /** Updates the "expires in" line of open gates, once a second while any is open. */
  tick() {
    clearTimeout(this.timer);
    if (this.cards.size === 0) return;
    for (const card of this.cards.values()) {
      const expires = Number(card.dataset.expires);
      if (!expires) continue;
      const seconds = Math.round((expires - Date.now()) / 1000);
      card.querySelector(".gate-expiry").textContent =
        seconds > 0 ? `decides alone in ${seconds >= 120 ? `${Math.round(seconds / 60)} min` : `${seconds} s`}` : "expired";
    }
    this.timer = setTimeout(() => this.tick(), 1000);
  },
};

/**
 * Answers the run (a decision, a prompt, a cancel: catalogue events): to the backend's inbox
 * with `send`, or published on the run's channel when the run asks for that. Resolves with
 * where it went: `{ streamId }` or `{ offset }`.
 */
async function answerRun(event) {
  if (run.reply === "publish") {
    const reply = await client.publish(runChannel(), event);
    return { offset: reply.offset };
  }
  const reply = await client.send(runChannel(), event);
  return { streamId: reply.streamId };
}

const DECISION_LABEL = { approve: "Approve", reject: "Reject", modify: "Ask for changes" };
/** What a gate node's next state says about the decision. */
const GATE_OUTCOME = { completed: "approved", running: "approved", cancelled: "rejected", failed: "failed", pending: "sent back for changes", skipped: "skipped" };

// ---------------------------------------------------------------------------------------
// Agent console: output (streamed by message_id), tool_call, status, inject_prompt.

const agentConsole = {
  /** @type {Map<string, HTMLElement>} the entry of each streamed answer */
  answers: new Map(),

  add(kind, event, text, extra = {}) {
    const list = $("console");
    const entry = el(
      "li",
      { class: `entry entry-${kind}`, "data-type": event.type, ...extra },
      el("time", {}, formatTime(eventTime(event))),
      el("span", { class: "entry-text" }, text),
    );
    list.append(entry);
    while (list.childElementCount > CONSOLE_LIMIT) list.firstElementChild.remove();
    list.scrollTop = list.scrollHeight;
    return entry;
  },

  separator(text) {
    $("console").append(el("li", { class: "entry entry-separator" }, text));
  },

  apply(event, meta) {
    const data = event.data && typeof event.data === "object" ? event.data : {};
    switch (event.type) {
      case "output": {
        if (typeof data.content !== "string") return;
        const id = typeof data.message_id === "string" ? data.message_id : null;
        let entry = id ? this.answers.get(id) : null;
        if (!entry || !entry.isConnected) {
          entry = this.add("output", event, "", { "data-message-id": id });
          if (id) this.answers.set(id, entry);
        }
        entry.querySelector(".entry-text").append(data.content);
        if (data.done) {
          entry.dataset.done = "true";
          if (id) this.answers.delete(id);
        }
        $("console").scrollTop = $("console").scrollHeight;
        return;
      }
      case "tool_call":
        this.add("tool", event, "", { "data-call-id": data.call_id ?? null })
          .querySelector(".entry-text")
          .append(el("strong", {}, String(data.name ?? "tool")), el("code", {}, JSON.stringify(data.input ?? {})));
        return;
      case "status":
        showAgentStatus(data);
        this.add("status", event, `${data.state ?? "?"}${data.detail ? ` · ${data.detail}` : ""}`);
        return;
      case "inject_prompt": {
        if (typeof data.text !== "string") return;
        const entry = this.add("inject", event, "", { "data-source": data.source ?? null });
        const use = el("button", { type: "button", class: "button-link" }, "Use");
        use.addEventListener("click", () => usePrompt(data.text));
        entry.querySelector(".entry-text").append(
          el("span", { class: "muted" }, `Suggested${data.source ? ` by ${data.source}` : ""}: `),
          data.text,
          " ",
          use,
        );
        // Shown "as if typed" (events.md), unless the user is typing something else.
        if (!$("prompt-input").value.trim()) usePrompt(data.text);
        return;
      }
      // What pages published on a run that asks for it (see answerRun).
      case "prompt":
        // This page shows its own prompts as it sends them.
        if (meta?.user && meta.user !== me.user && typeof data.text === "string") this.add("prompt", event, `${meta.user}: ${data.text}`);
        return;
      case "human_decision":
        if (meta?.user) this.add("other", event, `${meta.user} chose “${data.decision ?? "?"}”${data.feedback ? `: ${data.feedback}` : ""}`);
        return;
      case "cancel_execution":
        if (meta?.user) this.add("other", event, `${meta.user} asked to cancel the run`);
        return;
      default:
        // Unknown event types are ignored here (the event log lists them).
        if (meta?.user && typeof event.type === "string") this.add("other", event, `${meta.user}: ${event.type}`);
    }
  },
};

function showAgentStatus(status) {
  const pill = $("agent-status");
  pill.dataset.state = status.state || "idle";
  pill.textContent = status.detail ? `${status.state} · ${status.detail}` : status.state || "idle";
}

function usePrompt(text) {
  const input = $("prompt-input");
  input.value = text;
  $("prompt-hint").textContent = "A suggested prompt; edit it or press Send.";
}

async function sendPrompt(event) {
  event.preventDefault();
  const input = $("prompt-input");
  const text = input.value.trim();
  if (!text) return;
  input.value = "";
  $("prompt-hint").textContent = "";
  const entry = agentConsole.add("prompt", { type: "prompt" }, `${me.name || me.user}: ${text}`);
  try {
    // `prompt` is the catalogue's client → backend event; the answer comes back as output.
    await answerRun({ type: "prompt", data: { text }, timestamp: Date.now() / 1000 });
    entry.dataset.sent = "true";
  } catch (error) {
    entry.dataset.sent = "false";
    entry.append(el("span", { class: "entry-error" }, ` · not sent: ${describe(error)}`));
  }
}

async function cancelRun() {
  try {
    await answerRun({ type: "cancel_execution", data: { reason: `cancelled from the dashboard by ${me.name || me.user}` }, timestamp: Date.now() / 1000 });
    toast("Cancel sent to the engine.");
  } catch (error) {
    toast(`Cancel not sent: ${describe(error)}`, "error");
  }
}

// ---------------------------------------------------------------------------------------
// Notifications on user:<me>: the bell.

const notifications = {
  unread: 0,
  seen: new Set(),

  apply(event, meta, source) {
    if (!event || typeof event !== "object") return;
    const data = event.data && typeof event.data === "object" ? event.data : {};
    let title;
    let body = "";
    let level = "info";
    let id;
    if (event.type === "notification") {
      title = String(data.title ?? "Notification");
      body = typeof data.message === "string" ? data.message : "";
      level = ["info", "success", "warning", "error"].includes(data.level) ? data.level : "info";
      id = typeof data.id === "string" ? data.id : null;
    } else if (event.type === "task_update") {
      title = `Task ${data.title ?? data.task_id ?? ""} ${event.action ?? "updated"}`;
      id = null;
    } else {
      return;
    }
    const key = id ?? `${meta.epoch}:${meta.offset}`;
    if (this.seen.has(key)) return;
    this.seen.add(key);
    const link = typeof data.url === "string" && safeUrl(data.url);
    const item = el(
      "li",
      { class: `notification level-${level}`, "data-id": id, "data-offset": meta.offset ?? null, "data-unread": source === "live" ? "true" : "false" },
      el("div", { class: "notification-title" }, link ? el("a", { href: link, target: "_blank", rel: "noopener noreferrer" }, title) : title),
      body ? el("div", { class: "notification-body" }, body) : null,
      el("time", { class: "muted" }, formatTime(eventTime(event))),
    );
    $("notification-list").prepend(item);
    $("notifications-empty").hidden = true;
    if (source === "live") {
      this.setUnread(this.unread + 1);
      toast(title, level);
    }
  },

  setUnread(n) {
    this.unread = n;
    const badge = $("bell-count");
    badge.textContent = n > 99 ? "99+" : String(n);
    badge.dataset.count = String(n);
    badge.hidden = n === 0;
  },

  toggle() {
    const panel = $("notifications");
    const open = panel.hidden;
    panel.hidden = !open;
    $("bell-button").setAttribute("aria-expanded", String(open));
    if (open) {
      this.setUnread(0);
      for (const item of $("notification-list").children) item.dataset.unread = "false";
    }
  },
};

/** Only http(s) links (or relative ones) are followed from a notification. */
function safeUrl(url) {
  try {
    const parsed = new URL(url, location.href);
    return parsed.protocol === "http:" || parsed.protocol === "https:" ? parsed.href : null;
  } catch {
    return null;
  }
}

// ---------------------------------------------------------------------------------------
// Presence on room:demo: who is here, per user, with their status.

const presence = {
  /** The members, one per connection, as the client's trackPresence keeps them. */
  members: [],

  /** Follows room:demo's presence: a snapshot after every (re)subscribe, and the events around it. */
  track() {
    const tracker = trackPresence(client, PRESENCE_CHANNEL, {
      onChange: (members) => {
        this.members = members;
        if (tracker.ready) this.problem = null;
        this.draw();
      },
      onError: (error) => {
        if (error.code === "disconnected") return; // asked again after the reconnect
        eventLog.note(PRESENCE_CHANNEL, "presence-failed", `presence not read: ${describe(error)}`);
        this.problem = error;
        this.draw();
      },
    });
    showSubscription(tracker.subscription);
  },

  /** Why presence could not be read (e.g. off on this gateway), or null. */
  problem: null,

  draw() {
    if (this.problem && this.members.length === 0) {
      $("presence").replaceChildren(el("li", { class: "member-hint muted" },
        `Presence is off on this gateway (${describe(this.problem)}). Run it with --config examples/simulator/demo.toml.`));
      return;
    }
    const byUser = new Map();
    for (const m of this.members) {
      const entry = byUser.get(m.user) || { user: m.user, info: m.info, connections: 0, status: undefined };
      entry.connections += 1;
      if (m.info !== undefined) entry.info = m.info;
      if (m.status !== undefined && m.status !== null) entry.status = m.status;
      byUser.set(m.user, entry);
    }
    const users = [...byUser.values()].sort((a, b) => (a.user === me.user ? -1 : b.user === me.user ? 1 : a.user.localeCompare(b.user)));
    const list = $("presence");
    list.dataset.users = String(users.length);
    list.replaceChildren(
      ...users.map((u) => {
        const name = (u.info && typeof u.info === "object" && typeof u.info.name === "string" && u.info.name) || u.user;
        const isAgent = u.info && typeof u.info === "object" && u.info.kind === "agent";
        const state = statusState(u.status);
        const detail = statusDetail(u.status);
        return el(
          "li",
          { class: `member${u.user === me.user ? " is-me" : ""}${isAgent ? " is-agent" : ""}`, "data-user": u.user, "data-connections": u.connections, "data-status": state || null },
          el("span", { class: "avatar", "aria-hidden": "true", style: `--hue:${hue(u.user)}` }, isAgent ? "⚙" : name.slice(0, 1).toUpperCase()),
          el("span", { class: "member-main" },
            el("span", { class: "member-name" }, name, u.user === me.user ? el("span", { class: "muted" }, " (you)") : null),
            el("span", { class: "member-status muted" }, [state, detail].filter(Boolean).join(" · ") || "online")),
          u.connections > 1 ? el("span", { class: "tabs muted", title: "connections of this user (tabs, devices; a dead node's linger until their lease ends)" }, `${u.connections} connections`) : null,
        );
      }),
    );
  },
};

function statusState(status) {
  if (typeof status === "string") return status;
  if (status && typeof status === "object" && typeof status.state === "string") return status.state;
  return "";
}

function statusDetail(status) {
  return status && typeof status === "object" && typeof status.detail === "string" ? status.detail : "";
}

/** A stable colour per user id, for avatars. */
function hue(text) {
  let h = 0;
  for (const ch of text) h = (h * 31 + ch.codePointAt(0)) % 360;
  return h;
}

let myStatus = { state: "watching", detail: "" };

/**
 * Sets this tab's status on the presence channel (the client sets it again after every
 * reconnect). A failure is toasted when the user asked for it (`fromForm`); the initial
 * status only notes it (a gateway without presence on room:* already says so in the list).
 */
async function applyMyStatus({ fromForm = false } = {}) {
  const status = { state: myStatus.state };
  if (myStatus.detail) status.detail = myStatus.detail;
  try {
    await client.setStatus(PRESENCE_CHANNEL, status);
  } catch (error) {
    eventLog.note(PRESENCE_CHANNEL, "status-failed", `status not set: ${describe(error)}`);
    if (fromForm) toast(`Status not set: ${describe(error)}`, "error");
  }
}

// ---------------------------------------------------------------------------------------
// Wiring

const client = new Fanout({ url: gatewayUrl(), getToken, transport: params.get("transport") || "auto" });
let runSubscription = null;

function runChannel() {
  return `dag:${runId}`;
}

function watchRun(id) {
  runSubscription?.unsubscribe();
  runId = id;
  $("run-input").value = id;
  $("run-channel").textContent = runChannel();
  document.title = `${runChannel()} · fanout live demo`;
  run.reset();
  agentConsole.answers.clear();
  $("console").replaceChildren();
  showAgentStatus({ state: "idle" });
  runSubscription = followWithHistory(runChannel(), {
    apply: (event, meta, source) => run.apply(event, meta, source),
    reset: () => {
      run.reset();
      $("console").replaceChildren();
    },
  });
}

function start() {
  $("me").textContent = me.name || me.user;
  $("me").dataset.user = me.user;
  $("notifications-channel").textContent = `user:${me.user}`;
  $("notify-hint").textContent = `redis-cli FCALL fanout_publish 1 user:${me.user} '{"type":"notification","data":{"id":"n1","title":"Hello"}}'`;
  $("presence-channel").textContent = PRESENCE_CHANNEL;

  client.on("state", (state) => {
    showConnectionState(state, client.connection);
  });
  client.on("error", (error) => {
    eventLog.note("", "error", `client error: ${describe(error)}`);
    if (client.state !== "connected") $("connection").title = `last error: ${describe(error)}`;
  });
  // "auto" falls back to Server-Sent Events when WebSockets cannot connect (a proxy that
  // refuses upgrades, say), and back when they can again.
  client.on("transport", (kind) => toast(kind === "sse" ? "WebSockets fail here: using Server-Sent Events." : "Back on WebSockets."));
  showConnectionState("connecting");
  // Requests need connect() first; subscriptions made after it are sent once connected.
  client.connect();

  watchRun(runId);
  followWithHistory(`user:${me.user}`, {
    apply: (event, meta, source) => notifications.apply(event, meta, source),
    reset: () => {},
    historyLimit: 100,
  });
  // Who is here (a subscription of its own), and what is published on the room (another
  // subscription of the same channel: they share one on the gateway).
  presence.track();
  client.subscribe(PRESENCE_CHANNEL, {
    onMessage(data, meta) {
      eventLog.add(PRESENCE_CHANNEL, meta, data, "live");
    },
  });
  // Set once: the client sets it again on every new connection.
  applyMyStatus();
  subscribe("broadcast", {
    onMessage(data, meta) {
      eventLog.add("broadcast", meta, data, "live");
      if (data && data.type === "system_announcement" && data.data && typeof data.data.message === "string") {
        const banner = $("announcement");
        banner.textContent = data.data.message;
        banner.dataset.level = data.data.level || "info";
        banner.hidden = false;
      }
    },
  });

  $("run-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const id = $("run-input").value.trim();
    if (!/^[A-Za-z0-9_.:@-]{1,100}$/.test(id) || id === runId) return;
    const url = new URL(location.href);
    url.searchParams.set("run", id);
    history.replaceState(null, "", url);
    watchRun(id);
  });
  $("prompt-form").addEventListener("submit", sendPrompt);
  $("prompt-input").addEventListener("keydown", (event) => {
    if (event.key === "Enter" && !event.shiftKey && !event.isComposing) {
      event.preventDefault();
      $("prompt-form").requestSubmit();
    }
  });
  $("status-form").addEventListener("submit", (event) => {
    event.preventDefault();
    myStatus = { state: $("status-state").value, detail: $("status-detail").value.trim() };
    applyMyStatus({ fromForm: true });
  });
  $("cancel-run").addEventListener("click", cancelRun);
  $("bell-button").addEventListener("click", () => notifications.toggle());
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape" && !$("notifications").hidden) notifications.toggle();
  });
}

start();
