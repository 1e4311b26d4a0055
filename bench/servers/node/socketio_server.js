// The mainstream peer of notebook 06: Socket.IO 4 on Node with @socket.io/redis-adapter (ioredis).
//
// A client connects to ws://HOST:PORT/socket.io/?EIO=4&transport=websocket&workspace=W and is put in room W.
// Every "task.update" event it emits is sent as "task.updated" to room W on every instance
// (io.to(W).emit: local sockets directly, other instances through the adapter's Redis pub/sub).
// Like bench/toy_forwarder.py: no schema, no auth, no versions. Websocket transport only, no compression
// (Socket.IO's default for websocket), so the frames are comparable with rtlib's.
//
// Run: NODE_PATH=~/.cache/rtlib/node-peers/node_modules node socketio_server.js --port 8765 --redis redis://127.0.0.1:6379/0
"use strict";
const { createServer } = require("http");
const { Server } = require("socket.io");
const { createAdapter } = require("@socket.io/redis-adapter");
const Redis = require("ioredis");

function arg(name, fallback) {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : fallback;
}

const port = Number(arg("port"));
const host = arg("host", "127.0.0.1");
const pub = new Redis(arg("redis"));
const sub = pub.duplicate();

const httpServer = createServer();
const io = new Server(httpServer, { transports: ["websocket"], serveClient: false, perMessageDeflate: false });
io.adapter(createAdapter(pub, sub));

io.on("connection", (socket) => {
  const workspace = socket.handshake.query.workspace;
  if (!workspace) {
    socket.disconnect(true);
    return;
  }
  socket.join(workspace);
  socket.on("task.update", (envelope) => {
    io.to(workspace).emit("task.updated", envelope);
  });
});

httpServer.listen(port, host, () => console.log(`socket.io listening on ws://${host}:${port}/socket.io/`));
for (const signal of ["SIGTERM", "SIGINT"]) {
  process.on(signal, () => {
    io.close();
    pub.disconnect();
    sub.disconnect();
    process.exit(0);
  });
}
