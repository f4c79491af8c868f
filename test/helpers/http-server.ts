import { type RequestListener, type Server, createServer } from "node:http";
import type { AddressInfo } from "node:net";

/**
 * HTTP servers on 127.0.0.1 for one test file. `closeAll` stops them and
 * drops their open connections, for an `afterEach`.
 */
export class TestServers {
  readonly #servers: Server[] = [];

  /** Starts a server on a free port and returns it with its base URL. */
  async start(
    listener: RequestListener,
  ): Promise<{ url: string; server: Server }> {
    const server = createServer(listener);
    this.#servers.push(server);
    await new Promise<void>((resolve) =>
      server.listen(0, "127.0.0.1", () => resolve()),
    );
    const { port } = server.address() as AddressInfo;
    return { url: `http://127.0.0.1:${port}`, server };
  }

  /** Stops one server, so that its port refuses connections. */
  async close(server: Server): Promise<void> {
    this.#servers.splice(this.#servers.indexOf(server), 1);
    await closeServer(server);
  }

  async closeAll(): Promise<void> {
    await Promise.all(this.#servers.splice(0).map(closeServer));
  }
}

function closeServer(server: Server): Promise<void> {
  return new Promise((resolve) => {
    server.closeAllConnections();
    server.close(() => resolve());
  });
}
