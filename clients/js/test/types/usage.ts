// Compiled (not run) by test/types.test.js with tsc --strict: the declarations describe
// the API the way applications use it.

import { Fanout, FanoutError, type ConnectionState, type EventOfType, type NodeStateEvent, type ServerEvent, type ClientEvent } from "../../src/index.js";
import { FanoutProvider, useChannel, useConnectionState, usePresence } from "../../src/react.js";

const client = new Fanout({
  url: "wss://realtime.example.com/ws",
  getToken: async () => "token",
  transport: "auto",
  backoff: { baseMs: 500, capMs: 20000 },
});
const stop: () => void = client.on("state", (state: ConnectionState) => void state);
client.on("error", (error) => {
  const code: string = error.code;
  const retryable: boolean = error.retryable;
  void code;
  void retryable;
});
stop();
client.on("disconnect", ({ code, reason, reconnect }) => {
  const again: boolean = reconnect;
  void [code + 1, reason.length, again];
});
client.on("serverSubscribed", (info) => void (info.channel + (info.offset ?? 0)));
client.on("serverUnsubscribed", (info) => void (info.reason ?? info.channel));
client.on("publication", (data, meta) => void [data, meta.channel, meta.offset]);
client.on("error", (error) => {
  if (error.code === "revoked" || error.code === "unsubscribed_by_server") void error.closeCode;
});
const withChannelTokens = new Fanout({
  url: "/ws",
  token: "t",
  getChannelToken: async (channel: string) => (channel.startsWith("room:") ? "channel token" : null),
});
withChannelTokens.subscribe("dag:9", { getToken: () => "channel token", onError: (error) => void error.code });
withChannelTokens.close();
client.connect();

const sub = client.subscribe<ServerEvent>("dag:7", {
  onMessage(event, meta) {
    if (event.type === "node_state") {
      const state: NodeStateEvent["data"]["state"] = event.data.state;
      void state;
    }
    const offset: number | undefined = meta.offset;
    void offset;
  },
  onReload(info) {
    const reason: "start" | "lost" = info.reason;
    void reason;
  },
  since: { epoch: "e", offset: 3 },
});
const position = sub.position;
if (position) void (position.offset + 1);
sub.unsubscribe();

const decision: ClientEvent = { type: "human_decision", data: { node_id: "n3", decision: "approve" } };
// @ts-expect-error: "maybe" is not a decision of the catalogue
const wrong: EventOfType<"human_decision"> = { type: "human_decision", data: { node_id: "n3", decision: "maybe" } };
void wrong;

async function requests(): Promise<void> {
  const sent = await client.send("dag:7", decision);
  const id: string = sent.msgId + sent.streamId;
  const published = await client.publish("room:chat", { text: "hi" });
  const history = await client.history("dag:7", { since: 3, limit: 10 });
  const presence = await client.presence("room:chat");
  await client.setStatus("room:chat", { state: "idle" });
  void [id, published.offset, history.messages[0]?.offset, presence.members[0]?.user];
  try {
    await client.publish("room:chat", 1);
  } catch (error) {
    if (error instanceof FanoutError && error.retryable) void error.code;
  }
}
void requests;

function View(): null {
  const state: ConnectionState = useConnectionState();
  const { send } = useChannel<ServerEvent>("dag:7", (event) => void event.type, { onReload: () => undefined });
  const { members, ready } = usePresence("room:chat");
  void [state, send, members.length, ready];
  return null;
}
void View;
void FanoutProvider({ client });
void FanoutProvider({ options: { url: "/ws", token: "t" } });
client.close();
