/**
 * HTTP requests of the registry, token and ChartMuseum clients, made with
 * Node's own `http` and `https` modules. It offers the part of `fetch` those
 * clients use: a status, headers and a streamed body, with redirects left to
 * the caller.
 */
import type { Agent, IncomingMessage } from "node:http";
import { Readable, type Transform } from "node:stream";
import zlib from "node:zlib";

import { pipeReleasing } from "../chunk-memory.js";

// Loaded as CommonJS modules: importing node:http as an ES module also loads
// Node.js's fetch (undici), about 9 MB of memory that ppa-load never uses.
// node:https, which loads TLS, waits for the first https request.
const http = process.getBuiltinModule("node:http");

export interface HttpRequestInit {
  /** `GET` unless given. */
  method?: string;
  headers?: Record<string, string>;
  /**
   * Sent as it is. A stream goes out with chunked transfer encoding unless
   * the headers give its `content-length`. Form parameters go out as
   * `application/x-www-form-urlencoded`.
   */
  body?: Readable | Buffer | string | URLSearchParams;
  /** The agent for the request's URL: its pooled connections, CA and proxy. */
  agent?: Agent | ((url: URL) => Agent);
  /** Aborts the request, and the response body if it is still being read. */
  signal?: AbortSignal;
}

/** The headers of a response, looked up by name in any case. */
export class HttpHeaders {
  readonly #values = new Map<string, string>();

  /**
   * Takes name and value pairs. A name given twice keeps both values, joined
   * with ", " as `fetch` does, so that two `WWW-Authenticate` challenges
   * both reach the parser.
   */
  constructor(init?: HttpHeaders | Iterable<readonly [string, string]>) {
    for (const [name, value] of init ?? []) this.append(name, value);
  }

  /**
   * Builds the headers of a received message. Node's parser keeps the first
   * of a repeated `Location`, `Content-Type` or other single-value header,
   * and joins the values of the others, such as `WWW-Authenticate`.
   */
  static fromMessage(message: IncomingMessage): HttpHeaders {
    const headers = new HttpHeaders();
    for (const [name, value] of Object.entries(message.headers)) {
      if (value === undefined) continue;
      if (registrySingleValueHeaders.has(name)) {
        headers.append(name, firstRawValue(message.rawHeaders, name) ?? "");
      } else {
        headers.append(name, Array.isArray(value) ? value.join(", ") : value);
      }
    }
    return headers;
  }

  append(name: string, value: string): void {
    const key = name.toLowerCase();
    const previous = this.#values.get(key);
    this.#values.set(
      key,
      previous === undefined ? value : `${previous}, ${value}`,
    );
  }

  get(name: string): string | null {
    return this.#values.get(name.toLowerCase()) ?? null;
  }

  has(name: string): boolean {
    return this.#values.has(name.toLowerCase());
  }

  [Symbol.iterator](): IterableIterator<[string, string]> {
    return this.#values.entries();
  }
}

/**
 * Headers of the distribution API that carry one value, which Node's parser
 * would join when a server repeats them. The first value is kept, as Node
 * does for `Location`.
 */
const registrySingleValueHeaders = new Set([
  "docker-content-digest",
  "docker-upload-uuid",
  "blob-upload-session-id",
  "oci-chunk-min-length",
  "range",
]);

/** Returns the first value of `name` in Node's `rawHeaders` list. */
function firstRawValue(raw: string[], name: string): string | undefined {
  for (let index = 0; index + 1 < raw.length; index += 2) {
    if (raw[index].toLowerCase() === name) return raw[index + 1];
  }
  return undefined;
}

export interface HttpResponseInit {
  status: number;
  statusText?: string;
  headers?: HttpHeaders;
}

/** A response whose body is read once, as a stream or whole. */
export class HttpResponse {
  readonly status: number;
  readonly statusText: string;
  readonly headers: HttpHeaders;
  /** The body as it arrives, or null once a method has read it. */
  body: Readable | null;

  constructor(body: Readable | Buffer | null, init: HttpResponseInit) {
    this.status = init.status;
    this.statusText = init.statusText ?? "";
    this.headers = init.headers ?? new HttpHeaders();
    this.body = Buffer.isBuffer(body)
      ? Readable.from([body], { objectMode: false })
      : body;
  }

  /** Whether the status is 2xx. */
  get ok(): boolean {
    return this.status >= 200 && this.status < 300;
  }

  /** Reads the whole body. */
  async buffer(): Promise<Buffer> {
    const body = this.body;
    if (!body) throw new TypeError("the response body was already read");
    this.body = null;
    const parts: Buffer[] = [];
    for await (const chunk of body) parts.push(chunk as Buffer);
    return Buffer.concat(parts);
  }

  /** Reads the whole body as UTF-8 text. */
  async text(): Promise<string> {
    return (await this.buffer()).toString("utf8");
  }

  /**
   * Reads the first `maxBytes` of the body as UTF-8 text, for an error
   * message, and drops the rest. Stops after `maxMs` with what has arrived.
   */
  async textStart(maxBytes = 64 * 1024, maxMs = 10_000): Promise<string> {
    const parts: Buffer[] = [];
    await this.#readBounded(maxBytes, maxMs, (chunk) => parts.push(chunk));
    return Buffer.concat(parts).subarray(0, maxBytes).toString("utf8");
  }

  /**
   * Reads and drops the body, so that the connection can carry the next
   * request. A body that is larger than `maxBytes` or still arriving after
   * `maxMs` is cut off instead, which closes the connection.
   */
  async discard(maxBytes = 64 * 1024, maxMs = 5000): Promise<void> {
    await this.#readBounded(maxBytes, maxMs);
  }

  /**
   * Reads the body to its end, passing each chunk to `take`, and cuts it off
   * once more than `maxBytes` arrived or after `maxMs`.
   */
  async #readBounded(
    maxBytes: number,
    maxMs: number,
    take?: (chunk: Buffer) => void,
  ): Promise<void> {
    const body = this.body;
    if (!body) return;
    this.body = null;
    await new Promise<void>((resolve) => {
      let received = 0;
      const finish = () => {
        clearTimeout(timer);
        resolve();
      };
      const cutOff = () => {
        body.destroy();
        finish();
      };
      const timer = setTimeout(cutOff, maxMs);
      body.on("data", (chunk: Buffer) => {
        take?.(chunk);
        received += chunk.length;
        if (received > maxBytes) cutOff();
      });
      body.on("end", finish);
      body.on("close", finish);
      body.on("error", finish);
    });
  }
}

/** A redirect that a response requests. */
export interface Redirect {
  /** The `Location` header as the server sent it. */
  location: string;
  /** The resolved target, or undefined when it is not an http or https URL. */
  url: URL | undefined;
  /** The method to repeat the request with. */
  method: string;
  /** Whether the body and its headers are dropped, because the method became GET. */
  dropsBody: boolean;
}

const redirectStatuses = new Set([301, 302, 303, 307, 308]);

/**
 * Returns the redirect that `response` to `method` on `from` requests, or
 * undefined when it is not a redirect with a `Location`. As browsers and Go
 * do, 303, and 301 or 302 after a POST, become a GET without a body, and 307
 * and 308 repeat the request as it was.
 */
export function redirectOf(
  response: HttpResponse,
  from: URL,
  method: string,
): Redirect | undefined {
  const location = response.headers.get("location");
  if (!redirectStatuses.has(response.status) || !location) return undefined;
  let url: URL | undefined;
  try {
    url = new URL(location, from);
  } catch {
    url = undefined;
  }
  if (url?.protocol !== "http:" && url?.protocol !== "https:") url = undefined;
  const dropsBody =
    response.status === 303 ||
    (method === "POST" && (response.status === 301 || response.status === 302));
  return { location, url, method: dropsBody ? "GET" : method, dropsBody };
}

/** Content codings that responses are decoded from, although none is requested. */
const decoders: Record<string, () => Transform> = {
  gzip: () => zlib.createGunzip(),
  "x-gzip": () => zlib.createGunzip(),
  deflate: () => zlib.createInflate(),
  br: () => zlib.createBrotliDecompress(),
};

/**
 * Returns the body of a received message, decoded when the server compressed
 * it although the request asked for `identity`.
 */
function decodedBody(message: IncomingMessage, method: string): Readable {
  const coding = (message.headers["content-encoding"] ?? "")
    .trim()
    .toLowerCase();
  const decoder = decoders[coding];
  const empty =
    method === "HEAD" ||
    message.statusCode === 204 ||
    message.statusCode === 304 ||
    message.headers["content-length"] === "0";
  if (!decoder || empty) return message;
  const decoded = decoder();
  message.on("error", (error) => decoded.destroy(error));
  decoded.on("close", () => message.destroy());
  return message.pipe(decoded);
}

/** Methods that carry a body, and so get `content-length: 0` without one. */
const methodsWithBody = new Set(["POST", "PUT", "PATCH"]);

/**
 * Sends one request and resolves with the response as soon as its headers
 * arrive, even when the server responds before it has read the whole body.
 * Network failures reject with Node's own error, whose `code` (such as
 * `ECONNREFUSED` or `ECONNRESET`) identifies the failure. Redirects are returned,
 * not followed.
 */
export function httpRequest(
  url: string | URL,
  init: HttpRequestInit = {},
): Promise<HttpResponse> {
  const target = typeof url === "string" ? new URL(url) : url;
  const method = (init.method ?? "GET").toUpperCase();
  const signal = init.signal;
  if (target.protocol !== "http:" && target.protocol !== "https:") {
    return Promise.reject(
      new TypeError(`cannot send a request to ${target.protocol} URLs`),
    );
  }
  if (signal?.aborted) return Promise.reject(abortError(signal));

  const headers: Record<string, string> = {};
  for (const [name, value] of Object.entries(init.headers ?? {})) {
    headers[name.toLowerCase()] = value;
  }
  headers["user-agent"] ??= "ppa-load";
  headers.accept ??= "*/*";
  // Without this header a server may compress the response in any coding,
  // and this client decodes only gzip, deflate and br.
  headers["accept-encoding"] ??= "identity";
  let body = init.body;
  if (body instanceof URLSearchParams) {
    headers["content-type"] ??=
      "application/x-www-form-urlencoded;charset=UTF-8";
    body = body.toString();
  }
  if (typeof body === "string") body = Buffer.from(body);
  if (Buffer.isBuffer(body)) {
    headers["content-length"] ??= String(body.length);
  } else if (body === undefined && methodsWithBody.has(method)) {
    headers["content-length"] ??= "0";
  }
  const agent =
    typeof init.agent === "function" ? init.agent(target) : init.agent;
  const client =
    target.protocol === "https:"
      ? process.getBuiltinModule("node:https")
      : http;

  return new Promise<HttpResponse>((resolve, reject) => {
    const request = client.request(target, { method, headers, agent });
    let message: IncomingMessage | undefined;
    const onAbort = () => {
      const error = abortError(signal!);
      request.destroy(error);
      message?.destroy(error);
    };
    const stopListening = () => signal?.removeEventListener("abort", onAbort);
    signal?.addEventListener("abort", onAbort, { once: true });

    request.on("response", (incoming) => {
      message = incoming;
      incoming.on("close", stopListening);
      resolve(
        new HttpResponse(decodedBody(incoming, method), {
          status: incoming.statusCode ?? 0,
          statusText: incoming.statusMessage,
          headers: HttpHeaders.fromMessage(incoming),
        }),
      );
    });
    // Before the response this rejects. After it, the body stream carries the
    // failure to its reader.
    request.on("error", (error) => {
      if (!message) {
        stopListening();
        reject(error);
      }
    });

    if (body instanceof Readable) {
      const source = body;
      source.on("error", (error) => request.destroy(error));
      // A request that ended before its body did, by an error or an early
      // response, has no more use for the rest of it.
      const stop = pipeReleasing(source, request);
      request.on("close", () => {
        if (!source.readableEnded) {
          stop();
          source.destroy();
        }
      });
    } else {
      request.end(body);
    }
  });
}

/** Creates the error that a request aborted by its signal rejects with. */
function abortError(signal: AbortSignal): Error {
  return Object.assign(new Error("the request was aborted"), {
    name: "AbortError",
    cause: signal.reason,
  });
}
