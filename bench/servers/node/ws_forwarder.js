// The Node counterpart of bench/toy_forwarder.py: the `ws` library + Redis pub/sub (ioredis), nothing else.
//
// A client connects to ws://HOST:PORT/ws?workspace=W; every text frame it sends is published unchanged on
// the Redis channel "toy:W", and every message on "toy:W" is sent to this process's connections in W.
// One subscription per workspace that has (or had) a local connection. No schema, no auth, no versions.
//
// Run: NODE_PATH=~/.cache/rtlib/node-peers/node_modules node ws_forwarder.js --port 8765 --redis redis://127.0.0.1:6379/0
"use strict";
const { WebSocketServer } = require("ws");
const Redis = require("ioredis");

function arg(name, fallback) {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : fallback;
}

const PREFIX = "toy:";
const port = Number(arg("port"));
const host = arg("host", "127.0.0.1");
const pub = new Redis(arg("redis"));
const sub = pub.duplicate();
const local = new Map(); // workspace -> Set of sockets

sub.on("message", (channel, message) => {
  const sockets = local.get(channel.slice(PREFIX.length));
  if (!sockets) return;
  for (const ws of sockets) ws.send(message); // a string: sent as a text frame
});

const wss = new WebSocketServer({ host, port, perMessageDeflate: false });
wss.on("connection", (ws, request) => {
  const workspace = new URL(request.url, "http://x").searchParams.get("workspace");
  if (!workspace) {
    ws.close(1008, "workspace query parameter required");
    return;
  }
  let sockets = local.get(workspace);
  if (!sockets) {
    sockets = new Set();
    local.set(workspace, sockets);
    sub.subscribe(PREFIX + workspace);
  }
  sockets.add(ws);
  ws.on("message", (data, isBinary) => {
    if (!isBinary) pub.publish(PREFIX + workspace, data.toString());
  });
  ws.on("close", () => sockets.delete(ws));
});
wss.on("listening", () => console.log(`ws forwarder listening on ws://${host}:${port}/ws`));
for (const signal of ["SIGTERM", "SIGINT"]) {
  process.on(signal, () => {
    wss.close();
    pub.disconnect();
    sub.disconnect();
    process.exit(0);
  });
}
