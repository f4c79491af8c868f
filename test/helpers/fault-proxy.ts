/**
 * A reverse proxy on 127.0.0.1 in front of a test registry, which records
 * every request and responds to chosen requests with a fault instead of
 * forwarding them: a connection reset part way through the request body, or
 * a status with the headers and body a registry or proxy would send.
 *
 * It also serves as a forward proxy (`HTTP_PROXY`, `HTTPS_PROXY`): a request
 * in absolute form (`GET http://NAME:PORT/v2/`) and a `CONNECT NAME:PORT`
 * tunnel both go to the upstream registry, whatever host they name, so a
 * test can address the registry by a name that is not on loopback without
 * any traffic leaving 127.0.0.1.
 */
import * as http from "node:http";
import * as net from "node:net";

export type Fault =
  | {
      kind: "reset";
      /** Request body bytes read before the connection is reset. */
      afterBytes: number;
    }
  | {
      kind: "answer";
      status: number;
      headers?: Record<string, string>;
      body?: string;
      /**
       * Whether to respond as soon as the request headers arrive and read the
       * body afterwards, as nginx does for a body over client_max_body_size.
       * Otherwise the whole body is read first.
       */
      early?: boolean;
    };

/** One request that reached the proxy. */
export interface ProxiedRequest {
  method: string;
  /** Path and query, also for a request in absolute form. */
  path: string;
  /** Host and port that the request named, from its absolute form or Host header. */
  host: string;
  headers: http.IncomingHttpHeaders;
  /** Status sent to the client, or undefined when the connection was reset. */
  status?: number;
  /** The fault that the proxy sent in place of forwarding, if any. */
  fault?: Fault;
  /** Request body bytes that the proxy read. */
  bytesRead: number;
  /** Body of a manifest PUT, kept so that tests can check what it references. */
  body?: Buffer;
  /** Position in the proxy's sequence of events when the request arrived. */
  arrived: number;
  /** Position when the proxy finished its response or reset the connection. */
  finished?: number;
  /** Milliseconds since the proxy started, when the request arrived. */
  arrivedAtMs: number;
}

export interface FaultRule {
  /** Selects the requests that the rule applies to. */
  match: (request: ProxiedRequest) => boolean;
  /** The fault, or a function that returns it, or undefined to forward the request. */
  fault: Fault | ((request: ProxiedRequest) => Fault | undefined);
  /** Number of matching requests that get the fault, or all of them when undefined. */
  times?: number;
}

/** Returns a fault that resets the connection after `afterBytes` of the request body. */
export function reset(afterBytes = 256 * 1024): Fault {
  return { kind: "reset", afterBytes };
}

/** Returns a fault that responds with a JSON error body of the distribution spec. */
export function registryError(
  status: number,
  code: string,
  message: string,
  headers: Record<string, string> = {},
): Fault {
  return {
    kind: "answer",
    status,
    headers: { "content-type": "application/json", ...headers },
    body: JSON.stringify({ errors: [{ code, message }] }),
  };
}

/** Returns a fault that responds with an HTML page, as a proxy in front of a registry does. */
export function htmlPage(
  status: number,
  page: string,
  options: { early?: boolean; headers?: Record<string, string> } = {},
): Fault {
  return {
    kind: "answer",
    status,
    headers: { "content-type": "text/html", ...options.headers },
    body: page,
    early: options.early,
  };
}

/** Returns the repository of a `/v2/NAME/(blobs|manifests|tags)/…` path. */
export function repositoryOf(path: string): string | undefined {
  return /^\/v2\/(.+?)\/(?:blobs|manifests|tags)\//.exec(path)?.[1];
}

/**
 * Returns the blob digest that a request names: in the path of a blob
 * request, in `digest=` of an upload, or in `mount=` of a mount.
 */
export function blobDigestOf(request: ProxiedRequest): string | undefined {
  const url = new URL(request.path, "http://proxy");
  const inPath = /\/blobs\/(sha256:[0-9a-f]{64})$/.exec(url.pathname)?.[1];
  return (
    inPath ??
    url.searchParams.get("digest") ??
    url.searchParams.get("mount") ??
    undefined
  );
}

/** Headers that concern only one connection and are never forwarded. */
const hopByHopHeaders = [
  "connection",
  "keep-alive",
  "proxy-authorization",
  "proxy-connection",
  "te",
  "trailer",
  "upgrade",
];

export class FaultProxy {
  /** Every request, in order of arrival. */
  readonly requests: ProxiedRequest[] = [];
  /** `HOST:PORT` of each `CONNECT` tunnel that was asked for. */
  readonly tunnels: string[] = [];
  readonly #upstream: { host: string; port: number };
  readonly #rules: { rule: FaultRule; used: number }[] = [];
  readonly #server = http.createServer((req, res) => this.#handle(req, res));
  readonly #sockets = new Set<net.Socket>();
  #events = 0;
  #startedAt = Date.now();

  /** `upstream` is the registry's `HOST:PORT`, which must be on 127.0.0.1. */
  constructor(upstream: string) {
    const [host, port] = upstream.split(":");
    if (host !== "127.0.0.1") {
      throw new Error(`the upstream ${upstream} is not on 127.0.0.1`);
    }
    this.#upstream = { host, port: Number(port) };
    this.#server.on("connect", (req, socket, head) =>
      this.#tunnel(req, socket as net.Socket, head),
    );
    this.#server.on("connection", (socket) => {
      this.#sockets.add(socket);
      socket.on("close", () => this.#sockets.delete(socket));
    });
  }

  async start(): Promise<this> {
    await new Promise<void>((resolve) =>
      this.#server.listen(0, "127.0.0.1", resolve),
    );
    this.#startedAt = Date.now();
    return this;
  }

  /** `127.0.0.1:PORT` of the proxy. */
  get address(): string {
    return `127.0.0.1:${this.port}`;
  }

  get port(): number {
    return (this.#server.address() as net.AddressInfo).port;
  }

  /** Adds a rule. Rules are tried in the order they were added. */
  inject(rule: FaultRule): void {
    this.#rules.push({ rule, used: 0 });
  }

  /** Removes every rule and clears the recorded requests. */
  reset(): void {
    this.#rules.length = 0;
    this.requests.length = 0;
    this.tunnels.length = 0;
  }

  /** Returns the recorded requests of a method whose path matches. */
  matching(method: string, path: RegExp): ProxiedRequest[] {
    return this.requests.filter(
      (r) => r.method === method && path.test(r.path),
    );
  }

  async close(): Promise<void> {
    for (const socket of this.#sockets) socket.destroy();
    await new Promise((resolve) => this.#server.close(resolve));
  }

  #tick(): number {
    this.#events += 1;
    return this.#events;
  }

  #faultFor(request: ProxiedRequest): Fault | undefined {
    for (const entry of this.#rules) {
      const { rule } = entry;
      if (rule.times !== undefined && entry.used >= rule.times) continue;
      if (!rule.match(request)) continue;
      const fault =
        typeof rule.fault === "function" ? rule.fault(request) : rule.fault;
      if (!fault) continue;
      entry.used += 1;
      return fault;
    }
    return undefined;
  }

  #handle(req: http.IncomingMessage, res: http.ServerResponse): void {
    const absolute = /^https?:\/\//.test(req.url ?? "");
    const url = new URL(
      req.url ?? "/",
      `http://${req.headers.host ?? "proxy"}`,
    );
    const request: ProxiedRequest = {
      method: req.method ?? "GET",
      path: url.pathname + url.search,
      host: absolute ? url.host : (req.headers.host ?? ""),
      headers: req.headers,
      bytesRead: 0,
      arrived: this.#tick(),
      arrivedAtMs: Date.now() - this.#startedAt,
    };
    this.requests.push(request);
    const keepBody =
      request.method === "PUT" && request.path.includes("/manifests/");
    const chunks: Buffer[] = [];
    req.on("data", (chunk: Buffer) => {
      request.bytesRead += chunk.length;
      if (keepBody) chunks.push(chunk);
    });
    req.on("end", () => {
      if (keepBody) request.body = Buffer.concat(chunks);
    });

    const fault = this.#faultFor(request);
    if (fault?.kind === "reset") {
      request.fault = fault;
      this.#resetAfter(req, request, fault.afterBytes);
    } else if (fault) {
      request.fault = fault;
      const send = () => {
        request.status = fault.status;
        request.finished = this.#tick();
        res.writeHead(fault.status, fault.headers ?? {});
        res.end(fault.body ?? "");
      };
      req.resume();
      if (fault.early) send();
      else req.on("end", send);
    } else {
      this.#forward(req, res, request);
    }
  }

  /** Resets the connection once `afterBytes` of the body were read, or at its end. */
  #resetAfter(
    req: http.IncomingMessage,
    request: ProxiedRequest,
    afterBytes: number,
  ): void {
    let done = false;
    const resetNow = () => {
      if (done) return;
      done = true;
      request.finished = this.#tick();
      req.socket.resetAndDestroy();
    };
    req.on("data", () => {
      if (request.bytesRead >= afterBytes) resetNow();
    });
    req.on("end", resetNow);
  }

  #forward(
    req: http.IncomingMessage,
    res: http.ServerResponse,
    request: ProxiedRequest,
  ): void {
    const headers = { ...req.headers };
    for (const name of hopByHopHeaders) delete headers[name];
    const upstream = http.request(
      {
        host: this.#upstream.host,
        port: this.#upstream.port,
        method: req.method,
        path: request.path,
        headers,
      },
      (answer) => {
        request.status = answer.statusCode;
        const answerHeaders = { ...answer.headers };
        for (const name of hopByHopHeaders) delete answerHeaders[name];
        res.writeHead(answer.statusCode ?? 502, answerHeaders);
        answer.pipe(res, { end: false });
        answer.on("end", () => {
          request.finished = this.#tick();
          res.end();
        });
      },
    );
    upstream.on("error", () => res.destroy());
    req.on("error", () => upstream.destroy());
    req.pipe(upstream);
  }

  /** Tunnels a CONNECT to the upstream registry, whatever host it names. */
  #tunnel(req: http.IncomingMessage, socket: net.Socket, head: Buffer): void {
    this.tunnels.push(req.url ?? "");
    socket.on("error", () => undefined);
    const upstream = net.connect(
      this.#upstream.port,
      this.#upstream.host,
      () => {
        socket.write("HTTP/1.1 200 Connection Established\r\n\r\n");
        upstream.write(head);
        upstream.pipe(socket);
        socket.pipe(upstream);
      },
    );
    this.#sockets.add(upstream);
    upstream.on("error", () => socket.destroy());
    socket.on("close", () => upstream.destroy());
  }
}
