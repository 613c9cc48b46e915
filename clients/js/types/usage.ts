import { GatewayClient, type GatewayState, type Recovery } from "@ws-gateway/client";

const client = new GatewayClient("wss://gateway.example/ws", {
  getToken: async () => "a.b.c",
  maxDelay: 10_000,
});
const off = client.on("message", (data, position) => {
  const p: string | undefined = position;
  console.log(data, p);
});
client.on("state", (state: GatewayState, detail) => console.log(state, detail?.code));
client.on("recovery", ({ recovered, replayed }: Recovery) => console.log(recovered, replayed));
client.connect();
off();
const pos: string | null = client.position;
console.log(pos, client.state);
client.close();
// @ts-expect-error unknown event
client.on("nope", () => {});
