// Two browser-side devices of one user, with the real JS client (clients/js), for the
// FastAPI example's end-to-end test. Each gets its token from the app's own token endpoint
// (behind the app's auth), connects to the gateway and prints what it receives as JSON
// lines. Commands on stdin: `send <notification_id>` (device 1 sends mark_read), `exit`.
//
//   node --experimental-websocket devices.mjs <app url> <session>
import { createInterface } from "node:readline";
import { Fanout } from "../../../js/src/index.js";

const [appUrl, session] = process.argv.slice(2);
const print = (event) => process.stdout.write(JSON.stringify(event) + "\n");
const headers = { authorization: `Bearer ${session}` };

const config = await (await fetch(`${appUrl}/realtime-config`)).json();
const getToken = async () => {
  const response = await fetch(`${appUrl}/realtime-token`, { headers });
  if (!response.ok) throw new Error(`token endpoint answered ${response.status}`);
  return response.text();
};

const devices = [1, 2].map((device) => {
  const client = new Fanout({ url: config.url, getToken, transport: "websocket" });
  client.on("error", (error) => print({ device, error: error.code, message: error.message }));
  let started = 0;
  const onReload = () => {
    started += 1;
    if (started === 2) print({ device, ready: true, user: client.connection?.user });
  };
  const onMessage = (data, meta) => print({ device, channel: meta.channel, offset: meta.offset, data });
  client.on("connected", (connection) => {
    for (const channel of connection.channels) {
      if (!client._channels.has(channel)) client.subscribe(channel, { onMessage, onReload });
    }
  });
  client.connect();
  return client;
});

const lines = createInterface({ input: process.stdin });
for await (const line of lines) {
  const [command, arg] = line.trim().split(" ");
  if (command === "send") {
    const user = devices[0].connection.user;
    const receipt = await devices[0].send(`user:${user}`, { type: "mark_read", data: { notification_id: arg } });
    print({ device: 1, sent: receipt.streamId });
  } else if (command === "exit") {
    break;
  }
}
for (const client of devices) client.close();
process.exit(0);
