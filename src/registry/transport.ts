import type {
  Agent,
  AgentOptions,
  ClientRequest,
  ClientRequestArgs,
} from "node:http";
import type { RequestOptions as HttpsRequestOptions } from "node:https";
import { BlockList, type Socket, connect as connectTcp, isIP } from "node:net";
import type { Duplex } from "node:stream";
import type { ConnectionOptions } from "node:tls";

import { PpaLoadError } from "../errors.js";
import { redactUrl } from "./errors.js";

// Loaded as CommonJS modules: importing node:http as an ES module also loads
// Node.js's fetch (undici), about 9 MB of memory that ppa-load never uses.
// TLS is loaded only for the first https registry or proxy.
const http = process.getBuiltinModule("node:http");
const https = () => process.getBuiltinModule("node:https");
const tls = () => process.getBuiltinModule("node:tls");

/**
 * Proxy settings read from the environment.
 *
 * The rules are those of Go's golang.org/x/net/http/httpproxy, which the
 * Docker CLI and Docker Engine use, so ppa-load reaches a registry the same
 * way `docker push` does:
 * - https URLs use `HTTPS_PROXY`, http URLs use `HTTP_PROXY`. The upper-case
 *   name wins over the lower-case one, and neither falls back to the other.
 * - A value without a scheme, e.g. `proxy.example:3128`, means `http://`.
 * - `localhost` and loopback addresses are never proxied, even when
 *   `NO_PROXY` does not list them.
 * - `NO_PROXY` is a comma-separated list of `*` (no proxy at all), IP
 *   addresses, CIDR ranges, and domain names. A domain name matches itself and
 *   its subdomains, and a leading `.` or `*.` matches subdomains only. IP
 *   addresses and domain names may carry a port (`example.com:5000`,
 *   `[::1]:5000`), and then match only that port.
 *
 * curl differs: it treats a leading `.` like a bare domain, ignores ports in
 * `NO_PROXY`, and proxies loopback hosts that `NO_PROXY` does not list.
 */
export interface ProxySettings {
  /** `[name, value]` of the variable for http URLs, if set. */
  http?: [string, string];
  /** `[name, value]` of the variable for https URLs, if set. */
  https?: [string, string];
  noProxy: NoProxyList;
}

/** Reads the proxy variables of an environment. */
export function proxySettings(env: NodeJS.ProcessEnv): ProxySettings {
  return {
    http: firstSet(env, "HTTP_PROXY", "http_proxy"),
    https: firstSet(env, "HTTPS_PROXY", "https_proxy"),
    noProxy: new NoProxyList(firstSet(env, "NO_PROXY", "no_proxy")?.[1] ?? ""),
  };
}

function firstSet(
  env: NodeJS.ProcessEnv,
  ...names: string[]
): [string, string] | undefined {
  for (const name of names) {
    const value = env[name];
    if (value) return [name, value];
  }
  return undefined;
}

/**
 * Returns the proxy for a request URL, or undefined to connect directly.
 * Throws a `USAGE` error when the variable that applies is not a usable
 * proxy URL.
 */
export function proxyFor(url: URL, settings: ProxySettings): URL | undefined {
  const variable =
    url.protocol === "https:"
      ? settings.https
      : url.protocol === "http:"
        ? settings.http
        : undefined;
  if (!variable) return undefined;
  const host = hostOf(url);
  const port = url.port || (url.protocol === "https:" ? "443" : "80");
  if (isLoopbackHost(host) || settings.noProxy.matches(host, port)) {
    return undefined;
  }
  return parseProxyUrl(variable[0], variable[1]);
}

/** Returns the host of a URL in lower case, without the brackets of IPv6. */
function hostOf(url: URL): string {
  return url.hostname.replace(/^\[|\]$/g, "").toLowerCase();
}

/** Returns whether a host is `localhost` or a loopback address. */
export function isLoopbackHost(host: string): boolean {
  if (host === "localhost") return true;
  if (isIP(host) === 4) return host.startsWith("127.");
  if (isIP(host) === 6) return loopbackAddresses.check(host, "ipv6");
  return false;
}

const loopbackAddresses = new BlockList();
loopbackAddresses.addAddress("::1", "ipv6");
loopbackAddresses.addSubnet("::ffff:127.0.0.0", 104, "ipv6");

function parseProxyUrl(name: string, value: string): URL {
  let url: URL | undefined;
  try {
    url = new URL(value);
  } catch {
    url = undefined;
  }
  if (!url || !["http:", "https:", "socks5:"].includes(url.protocol)) {
    // Like Go, read `HOST[:PORT]` as an http:// proxy.
    try {
      url = new URL(`http://${value}`);
    } catch {
      throw new PpaLoadError(
        "USAGE",
        `${name} is set to "${redactUrl(value)}", which is not a proxy URL`,
        { hint: `set ${name} to http://HOST:PORT, or unset it` },
      );
    }
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    throw new PpaLoadError(
      "USAGE",
      `${name} names a ${url.protocol.slice(0, -1)} proxy (${redactUrl(url.href)}), but ppa-load supports only http:// and https:// proxies`,
      { hint: `set ${name} to an HTTP proxy, or add the registry to NO_PROXY` },
    );
  }
  if (!url.hostname) {
    throw new PpaLoadError(
      "USAGE",
      `${name} is set to "${redactUrl(value)}", which names no proxy host`,
      { hint: `set ${name} to http://HOST:PORT, or unset it` },
    );
  }
  return url;
}

type NoProxyRule =
  | { kind: "ip"; addresses: BlockList; port: string }
  | { kind: "domain"; suffix: string; matchesHost: boolean; port: string };

/**
 * A parsed `NO_PROXY` value. Entries that are neither an address, a range
 * nor a domain name are ignored, as Go ignores them.
 */
export class NoProxyList {
  readonly #rules: NoProxyRule[] = [];
  readonly #matchesAll: boolean = false;

  constructor(value: string) {
    for (const raw of value.split(",")) {
      const entry = raw.trim().toLowerCase();
      if (!entry) continue;
      if (entry === "*") {
        this.#matchesAll = true;
        return;
      }
      const rule = parseNoProxyEntry(entry);
      if (rule) this.#rules.push(rule);
    }
  }

  /** Returns whether requests to `host` (lower case, IPv6 without brackets) and `port` bypass the proxy. */
  matches(host: string, port: string): boolean {
    if (this.#matchesAll) return true;
    const family = isIP(host);
    for (const rule of this.#rules) {
      if (rule.port && rule.port !== port) continue;
      if (rule.kind === "ip") {
        if (
          family &&
          rule.addresses.check(host, family === 4 ? "ipv4" : "ipv6")
        ) {
          return true;
        }
      } else if (
        host.endsWith(rule.suffix) ||
        (rule.matchesHost && host === rule.suffix.slice(1))
      ) {
        return true;
      }
    }
    return false;
  }
}

function parseNoProxyEntry(entry: string): NoProxyRule | undefined {
  const cidr = /^(.+)\/(\d{1,3})$/.exec(entry);
  if (cidr) {
    const family = isIP(cidr[1]);
    const prefix = Number(cidr[2]);
    if (!family || prefix > (family === 4 ? 32 : 128)) return undefined;
    const addresses = new BlockList();
    addresses.addSubnet(cidr[1], prefix, family === 4 ? "ipv4" : "ipv6");
    return { kind: "ip", addresses, port: "" };
  }

  let host = entry;
  let port = "";
  const withPort = /^(\[[^\]]*\]|[^:]*):(\d+)$/.exec(entry);
  if (withPort) {
    host = withPort[1];
    port = withPort[2];
  }
  host = host.replace(/^\[|\]$/g, "");
  if (!host) return undefined;

  const family = isIP(host);
  if (family) {
    const addresses = new BlockList();
    addresses.addAddress(host, family === 4 ? "ipv4" : "ipv6");
    return { kind: "ip", addresses, port };
  }
  if (host.startsWith("*.")) host = host.slice(1);
  const matchesHost = !host.startsWith(".");
  return {
    kind: "domain",
    suffix: matchesHost ? `.${host}` : host,
    matchesHost,
    port,
  };
}

export interface TransportOptions {
  /** PEM certificates of a private CA, trusted in addition to Node's default CAs. */
  caCert?: string | Buffer;
  /** Environment with the proxy variables; `process.env` by default. */
  env?: NodeJS.ProcessEnv;
}

/**
 * Keep-alive settings of Node 22's `http.globalAgent`, except that pooled
 * sockets close after 4 s idle instead of 5 s. A server that closes idle
 * connections after 5 s, as Node's does by default, could otherwise close
 * one just as a request goes out on it. The socket timeout only closes idle
 * pooled sockets, so a slow response does not fail.
 */
const agentOptions: AgentOptions = {
  keepAlive: true,
  scheduling: "lifo",
  timeout: 4000,
};

/**
 * The connections of a registry client: an agent per scheme and proxy, with
 * the extra CA and the proxy settings applied. Pass `agentFor` to httpRequest.
 */
export class Transport {
  readonly #settings: ProxySettings;
  readonly #ca: string[] | undefined;
  readonly #agents = new Map<string, Agent>();

  constructor(options: TransportOptions = {}) {
    this.#settings = proxySettings(options.env ?? process.env);
    if (options.caCert !== undefined) {
      this.#ca = [...defaultCaCertificates(), options.caCert.toString()];
    }
  }

  /** Returns the proxy that requests to `url` go through, or undefined. */
  proxyFor(url: URL): URL | undefined {
    return proxyFor(url, this.#settings);
  }

  /** Returns the agent for requests to `url`, creating it on first use. */
  agentFor(url: URL): Agent {
    const proxy = this.proxyFor(url);
    const key = `${url.protocol} ${proxy?.href ?? "direct"}`;
    let agent = this.#agents.get(key);
    if (agent) return agent;
    const tlsOptions: ConnectionOptions = this.#ca ? { ca: this.#ca } : {};
    if (url.protocol === "https:") {
      agent = proxy
        ? createTunnelingAgent(proxy, tlsOptions)
        : new (https().Agent)({ ...agentOptions, ...tlsOptions });
    } else {
      agent = proxy
        ? new ForwardingAgent(proxy, tlsOptions)
        : new http.Agent(agentOptions);
    }
    this.#agents.set(key, agent);
    return agent;
  }

  /** Closes every pooled connection. */
  destroy(): void {
    for (const agent of this.#agents.values()) agent.destroy();
    this.#agents.clear();
  }
}

/**
 * Returns the CA certificates that Node's TLS clients trust by default: the
 * bundled Mozilla store (or the OpenSSL store under `--use-openssl-ca`), the
 * system store under `--use-system-ca`, and `NODE_EXTRA_CA_CERTS`.
 * `tls.getCACertificates` exists from Node 22.15. Before that, the bundled
 * `tls.rootCertificates` are used, without `NODE_EXTRA_CA_CERTS`.
 */
function defaultCaCertificates(): string[] {
  const get = (
    tls as {
      getCACertificates?: (type: "default") => string[];
    }
  ).getCACertificates;
  return get ? get("default") : [...tls().rootCertificates];
}

/** Returns `HOST:PORT` for a request line or CONNECT, with brackets around IPv6. */
function authorityOf(host: string, port: number | string): string {
  return isIP(host) === 6 ? `[${host}]:${port}` : `${host}:${port}`;
}

/** Returns the `Proxy-Authorization` value for credentials in a proxy URL. */
function proxyAuthorization(proxy: URL): string | undefined {
  if (!proxy.username && !proxy.password) return undefined;
  const pair = `${decodeURIComponent(proxy.username)}:${decodeURIComponent(proxy.password)}`;
  return `Basic ${Buffer.from(pair).toString("base64")}`;
}

function proxyPort(proxy: URL): number {
  return Number(proxy.port || (proxy.protocol === "https:" ? 443 : 80));
}

/** Opens a connection to the proxy itself, over TLS for an https:// proxy. */
function connectToProxy(proxy: URL, tlsOptions: ConnectionOptions): Socket {
  const host = proxy.hostname.replace(/^\[|\]$/g, "");
  const port = proxyPort(proxy);
  if (proxy.protocol === "https:") {
    return tls().connect({
      ...tlsOptions,
      host,
      port,
      servername: isIP(host) ? undefined : host,
    });
  }
  return connectTcp({ host, port });
}

/** The part of `ClientRequestArgs` that the agents read. */
interface ConnectionArgs {
  host?: string | null;
  hostname?: string | null;
  port?: number | string | null;
  servername?: string;
}

function targetOf(options: ConnectionArgs, defaultPort: number) {
  const host = (options.hostname ?? options.host ?? "localhost").replace(
    /^\[|\]$/g,
    "",
  );
  return { host, port: Number(options.port || defaultPort) };
}

/**
 * Opens a tunnel to `authority` through an HTTP proxy with CONNECT
 * (RFC 9110, section 9.3.6) and resolves with the socket once the proxy
 * responds with 2xx.
 */
function openTunnel(
  proxy: URL,
  authority: string,
  tlsOptions: ConnectionOptions,
): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const socket = connectToProxy(proxy, tlsOptions);
    const connectedEvent =
      proxy.protocol === "https:" ? "secureConnect" : "connect";
    let received = Buffer.alloc(0);

    const cleanup = () => {
      socket.off("readable", onReadable);
      socket.off("error", onError);
      socket.off("end", onEnd);
      socket.off(connectedEvent, onConnected);
    };
    const fail = (message: string) => {
      cleanup();
      socket.destroy();
      reject(new Error(message));
    };
    const onError = (error: Error) =>
      fail(`proxy ${redactUrl(proxy.href)} failed: ${error.message}`);
    const onEnd = () =>
      fail(
        `proxy ${redactUrl(proxy.href)} closed the connection before it answered CONNECT ${authority}`,
      );
    const onConnected = () => {
      const authorization = proxyAuthorization(proxy);
      socket.write(
        `CONNECT ${authority} HTTP/1.1\r\nHost: ${authority}\r\n` +
          (authorization ? `Proxy-Authorization: ${authorization}\r\n` : "") +
          "\r\n",
      );
    };
    // Read in paused mode, so no byte after the response head is lost
    // before the TLS socket takes the connection over.
    const onReadable = () => {
      let chunk: Buffer | null;
      while ((chunk = socket.read() as Buffer | null) !== null) {
        received = Buffer.concat([received, chunk]);
      }
      const headEnd = received.indexOf("\r\n\r\n");
      if (headEnd === -1) {
        if (received.length > 64 * 1024) {
          fail(
            `proxy ${redactUrl(proxy.href)} sent an oversized CONNECT response`,
          );
        }
        return;
      }
      const statusLine = received
        .subarray(0, received.indexOf("\r\n"))
        .toString("latin1");
      const status = Number(/^HTTP\/1\.[01] (\d{3})/.exec(statusLine)?.[1]);
      if (!(status >= 200 && status < 300)) {
        fail(
          `proxy ${redactUrl(proxy.href)} answered CONNECT ${authority} with "${statusLine}"`,
        );
        return;
      }
      cleanup();
      const rest = received.subarray(headEnd + 4);
      if (rest.length > 0) socket.unshift(rest);
      resolve(socket);
    };

    socket.on("readable", onReadable);
    socket.on("error", onError);
    socket.on("end", onEnd);
    socket.once(connectedEvent, onConnected);
  });
}

let TunnelingAgent:
  (new (proxy: URL, tlsOptions: ConnectionOptions) => Agent) | undefined;

/** Creates an agent that connects to https targets through an HTTP CONNECT tunnel, then TLS to the target. */
function createTunnelingAgent(
  proxy: URL,
  tlsOptions: ConnectionOptions,
): Agent {
  TunnelingAgent ??= tunnelingAgentClass();
  return new TunnelingAgent(proxy, tlsOptions);
}

function tunnelingAgentClass() {
  return class TunnelingAgent extends https().Agent {
    readonly #proxy: URL;
    readonly #tlsOptions: ConnectionOptions;

    constructor(proxy: URL, tlsOptions: ConnectionOptions) {
      super({ ...agentOptions, ...tlsOptions });
      this.#proxy = proxy;
      this.#tlsOptions = tlsOptions;
    }

    override createConnection(
      options: HttpsRequestOptions,
      callback?: (error: Error | null, stream: Duplex) => void,
    ): Duplex | null | undefined {
      const { host, port } = targetOf(options, 443);
      const authority = authorityOf(host, port);
      openTunnel(this.#proxy, authority, this.#tlsOptions).then(
        (tunnel) => {
          // `path` would make tls.connect open a Unix socket, so it is left out.
          const { path: _path, port: _port, ...rest } = options;
          const secure = tls().connect({
            ...(rest as ConnectionOptions),
            ...this.#tlsOptions,
            socket: tunnel,
            // The host checks the certificate; the socket is already connected.
            host,
            servername: options.servername || (isIP(host) ? undefined : host),
          });
          callback?.(null, secure);
        },
        (error: Error) => callback?.(error, undefined as unknown as Duplex),
      );
      return undefined;
    }
  };
}

/** `Agent#addRequest`, which Node calls for every request but does not document. */
type AddRequest = (
  this: Agent,
  request: ClientRequest,
  options: ClientRequestArgs,
) => void;

/**
 * Sends http requests to an HTTP proxy in absolute form
 * (`GET http://host:port/path HTTP/1.1`, RFC 9112 section 3.2.2).
 *
 * The request line is rewritten in `addRequest`, before Node writes the
 * head; the http-proxy-agent package does the same.
 */
class ForwardingAgent extends http.Agent {
  readonly #proxy: URL;
  readonly #tlsOptions: ConnectionOptions;

  constructor(proxy: URL, tlsOptions: ConnectionOptions) {
    super(agentOptions);
    this.#proxy = proxy;
    this.#tlsOptions = tlsOptions;
  }

  addRequest(request: ClientRequest, options: ClientRequestArgs) {
    const { host, port } = targetOf(options, 80);
    const authority = authorityOf(host, port).replace(/:80$/, "");
    request.path = `http://${authority}${request.path}`;
    const authorization = proxyAuthorization(this.#proxy);
    if (authorization) request.setHeader("proxy-authorization", authorization);
    const proxyHost = this.#proxy.hostname.replace(/^\[|\]$/g, "");
    const addRequest = (
      http.Agent.prototype as unknown as { addRequest: AddRequest }
    ).addRequest;
    addRequest.call(this, request, {
      ...options,
      host: proxyHost,
      hostname: proxyHost,
      port: proxyPort(this.#proxy),
    });
  }

  override createConnection(): Duplex {
    return connectToProxy(this.#proxy, this.#tlsOptions);
  }
}
