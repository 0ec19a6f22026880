/**
 * A TCP proxy on loopback that holds every chunk for half a round trip in each direction: a link
 * with latency, for `DTS_BENCH_RTT_MS` (the kernel's netem is not available on every machine, and it
 * would slow every loopback connection, not only the bench's). Order is kept; a direction holding
 * more than 8 MiB pauses its sender until it drains, so the proxy adds latency, not unbounded buffers.
 * Every tool goes through the same proxy in the same run, so the comparison stays fair; the proxy's
 * own CPU (in the bench process) is not counted for any of them.
 */
import * as net from 'node:net';

const HIGH_WATER = 8 * 1024 * 1024;

/** Starts a proxy to `127.0.0.1:targetPort` that delays each direction by `rttMs / 2`; resolves with its port and `close`. */
export async function startDelayProxy(targetPort, rttMs) {
  const oneWay = rttMs / 2;
  const sockets = new Set();
  const server = net.createServer((client) => {
    const upstream = net.connect({ host: '127.0.0.1', port: targetPort });
    for (const s of [client, upstream]) {
      sockets.add(s);
      s.setNoDelay(true);
      s.on('close', () => sockets.delete(s));
      s.on('error', () => {
        client.destroy();
        upstream.destroy();
      });
    }
    delayed(client, upstream, oneWay);
    delayed(upstream, client, oneWay);
  });
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return {
    port: server.address().port,
    close: () =>
      new Promise((resolve) => {
        for (const s of sockets) s.destroy();
        server.close(() => resolve());
      }),
  };
}

/** Copies `from` to `to`, each chunk delivered `delayMs` after it arrived, in order. */
function delayed(from, to, delayMs) {
  const queue = [];
  let held = 0;
  let scheduled = false;
  let ended = false;
  // Back-pressure: the sender waits while the proxy holds too much, or the receiver takes too little.
  const full = () => held >= HIGH_WATER || to.writableLength >= HIGH_WATER;
  const maybeResume = () => {
    if (!full() && from.isPaused()) from.resume();
  };
  to.on('drain', maybeResume);
  const schedule = (ms) => {
    if (scheduled) return;
    scheduled = true;
    setTimeout(deliver, ms);
  };
  const deliver = () => {
    scheduled = false;
    const now = performance.now();
    while (queue.length > 0 && queue[0].at <= now) {
      const { data } = queue.shift();
      held -= data.length;
      if (!to.destroyed) to.write(data);
    }
    maybeResume();
    if (queue.length > 0) schedule(Math.max(0, queue[0].at - performance.now()));
    else if (ended && !to.destroyed) to.end();
  };
  from.on('data', (data) => {
    queue.push({ at: performance.now() + delayMs, data });
    held += data.length;
    if (full()) from.pause();
    schedule(delayMs);
  });
  from.on('end', () => {
    ended = true;
    schedule(delayMs);
  });
}
