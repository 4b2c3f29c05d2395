import net from 'node:net';

/**
 * A TCP proxy in front of a real server, to take it "down" and bring it back without
 * touching the server other tests share: `down()` drops every connection and refuses new
 * ones, `up()` accepts again.
 */
export interface TcpProxy {
  url: (protocol: string) => string;
  port: number;
  down: () => void;
  up: () => void;
  close: () => Promise<void>;
}

export async function createTcpProxy(targetUrl: string): Promise<TcpProxy> {
  const target = new URL(targetUrl);
  const sockets = new Set<net.Socket>();
  let accepting = true;
  const server = net.createServer((client) => {
    if (!accepting) {
      client.destroy();
      return;
    }
    const upstream = net.connect({ host: target.hostname, port: Number(target.port) });
    sockets.add(client).add(upstream);
    const cleanup = () => { client.destroy(); upstream.destroy(); sockets.delete(client); sockets.delete(upstream); };
    client.on('error', cleanup).on('close', cleanup);
    upstream.on('error', cleanup).on('close', cleanup);
    client.pipe(upstream).pipe(client);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const port = (server.address() as net.AddressInfo).port;
  return {
    port,
    url: (protocol) => `${protocol}//127.0.0.1:${port}`,
    down: () => {
      accepting = false;
      for (const s of sockets) s.destroy();
      sockets.clear();
    },
    up: () => { accepting = true; },
    close: async () => {
      accepting = false;
      for (const s of sockets) s.destroy();
      await new Promise<void>((resolve) => server.close(() => resolve()));
    },
  };
}
