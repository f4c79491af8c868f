import { execFileSync } from "node:child_process";
import { createHash, randomBytes } from "node:crypto";
import { mkdir, mkdtemp, readFile, rm } from "node:fs/promises";
import * as http from "node:http";
import * as https from "node:https";
import * as net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable } from "node:stream";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";

import type { BlobSource } from "../../src/blobs/blob.js";
import { adopt } from "../../src/chunk-memory.js";
import { PpaLoadError } from "../../src/errors.js";
import { RegistryTarget } from "../../src/publish/registry-target.js";
import {
  RegistryClient,
  type RegistryClientOptions,
  type ResumeInfo,
  type RetryInfo,
  autoChunkSize,
  autoChunkThreshold,
  parseRetryAfter,
} from "../../src/registry/client.js";
import { UploadJournal } from "../../src/registry/upload-journal.js";
import { TestServers } from "../helpers/http-server.js";
import { RegistryError } from "../../src/registry/errors.js";
import { proxyFor, proxySettings } from "../../src/registry/transport.js";

function sha256(bytes: Buffer): string {
  return `sha256:${createHash("sha256").update(bytes).digest("hex")}`;
}

interface TestBlob extends BlobSource {
  /** How often `open()` was called. */
  opens: number;
  bytes: Buffer;
}

/** Returns a blob in memory that streams in pieces of 777 bytes, so chunks never line up with them. */
function testBlob(bytes: Buffer, digest = sha256(bytes)): TestBlob {
  const blob: TestBlob = {
    digest,
    size: bytes.length,
    mediaType: "application/octet-stream",
    opens: 0,
    bytes,
    open() {
      blob.opens++;
      const pieces: Buffer[] = [];
      for (let i = 0; i < bytes.length; i += 777) {
        pieces.push(bytes.subarray(i, i + 777));
      }
      return Readable.from(pieces);
    },
  };
  return blob;
}

interface Recorded {
  method: string;
  /** The request target as sent, path and query. */
  url: string;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
}

interface Reply {
  status: number;
  headers?: Record<string, string>;
  body?: string | Buffer;
}

function errorBody(code: string, message: string): string {
  return JSON.stringify({ errors: [{ code, message }] });
}

/**
 * An in-process registry that speaks enough of the distribution API for the
 * upload paths: sessions with PATCH, PUT, GET and DELETE, mounts, blob and
 * manifest HEAD, and optional basic or bearer authentication.
 */
class FakeRegistry {
  readonly requests: Recorded[] = [];
  readonly uploads = new Map<string, Buffer>();
  readonly blobs = new Map<string, Buffer>();
  readonly manifests = new Map<string, { body: Buffer; mediaType: string }>();
  readonly cancelled: string[] = [];
  /** How upload Locations are written. */
  locationStyle: "path" | "absolute" | "relative" = "path";
  /** Query string of every upload Location, e.g. `?_state=x`; requests to the session must repeat it exactly. */
  locationQuery = "";
  minChunkLength?: number;
  /** Returns the reply to a request after its body was read, in place of the normal handling. */
  intercept?: (request: Recorded) => Reply | undefined;
  /** Returns the reply to a request before its body is read, as a proxy that checks Content-Length does. */
  interceptHead?: (request: Recorded) => Reply | undefined;
  /** When set, every request needs `Authorization: <value>`. */
  basicAuthorization?: string;
  /** When set, every request needs a bearer token from /token that is still in the set. */
  bearerTokens?: Set<string>;
  tokensIssued = 0;
  readonly server: http.Server;
  #sessions = 0;

  constructor(tlsOptions?: { key: string; cert: string }) {
    const handler = (req: http.IncomingMessage, res: http.ServerResponse) => {
      this.#handle(req, res).catch((error) => {
        res.statusCode = 500;
        res.end(String(error));
      });
    };
    this.server = tlsOptions
      ? https.createServer(tlsOptions, handler)
      : http.createServer(handler);
  }

  async start(): Promise<this> {
    await new Promise<void>((resolve) =>
      this.server.listen(0, "127.0.0.1", resolve),
    );
    return this;
  }

  get port(): number {
    return (this.server.address() as net.AddressInfo).port;
  }

  get host(): string {
    return `127.0.0.1:${this.port}`;
  }

  get origin(): string {
    const scheme = this.server instanceof https.Server ? "https" : "http";
    return `${scheme}://${this.host}`;
  }

  async close(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise((resolve) => this.server.close(resolve));
  }

  of(method: string, pattern = ""): Recorded[] {
    return this.requests.filter(
      (r) => r.method === method && r.url.includes(pattern),
    );
  }

  /** Opens an upload session and returns its id. */
  openSession(): string {
    const id = `session-${++this.#sessions}`;
    this.uploads.set(id, Buffer.alloc(0));
    return id;
  }

  uploadLocation(name: string, id: string): string {
    const query = this.locationQuery;
    if (this.locationStyle === "absolute") {
      return `${this.origin}/v2/${name}/blobs/uploads/${id}${query}`;
    }
    if (this.locationStyle === "relative") return `${id}${query}`;
    return `/v2/${name}/blobs/uploads/${id}${query}`;
  }

  async #handle(req: http.IncomingMessage, res: http.ServerResponse) {
    const recorded: Recorded = {
      method: req.method ?? "",
      url: req.url ?? "",
      headers: req.headers,
      body: Buffer.alloc(0),
    };
    this.requests.push(recorded);
    const early = this.interceptHead?.(recorded);
    if (early) {
      res.setHeader("connection", "close");
      this.#send(res, early);
      return;
    }
    const parts: Buffer[] = [];
    for await (const part of req) parts.push(part as Buffer);
    recorded.body = Buffer.concat(parts);
    const url = new URL(recorded.url, "http://fake");
    if (url.pathname === "/token") {
      const token = `token-${++this.tokensIssued}`;
      this.bearerTokens?.add(token);
      this.#send(res, { status: 200, body: JSON.stringify({ token }) });
      return;
    }
    const denied = this.#authenticate(recorded);
    const reply =
      denied ?? this.intercept?.(recorded) ?? this.#route(recorded, url);
    this.#send(res, reply);
  }

  #send(res: http.ServerResponse, reply: Reply) {
    res.statusCode = reply.status;
    for (const [name, value] of Object.entries(reply.headers ?? {})) {
      res.setHeader(name, value);
    }
    res.end(reply.body ?? "");
  }

  #authenticate(request: Recorded): Reply | undefined {
    const given = request.headers.authorization;
    if (this.basicAuthorization && given !== this.basicAuthorization) {
      return {
        status: 401,
        headers: { "www-authenticate": 'Basic realm="fake"' },
        body: errorBody("UNAUTHORIZED", "authentication required"),
      };
    }
    if (this.bearerTokens) {
      const token = given?.replace(/^Bearer /, "") ?? "";
      if (!this.bearerTokens.has(token)) {
        return {
          status: 401,
          headers: {
            "www-authenticate": `Bearer realm="${this.origin}/token",service="fake"`,
          },
          body: errorBody("UNAUTHORIZED", "authentication required"),
        };
      }
    }
    return undefined;
  }

  #route(request: Recorded, url: URL): Reply {
    const { method } = request;
    if (url.pathname === "/v2/") return { status: 200, body: "{}" };
    let match = /^\/v2\/(.+)\/blobs\/uploads\/$/.exec(url.pathname);
    if (match && method === "POST") return this.#post(match[1], url);
    match = /^\/v2\/(.+)\/blobs\/uploads\/([^/]+)$/.exec(url.pathname);
    if (match) return this.#session(request, match[1], match[2], url);
    match = /^\/v2\/(.+)\/blobs\/(sha256:[a-f0-9]{64})$/.exec(url.pathname);
    if (match && (method === "HEAD" || method === "GET")) {
      const blob = this.blobs.get(`${match[1]}@${match[2]}`);
      if (!blob) return { status: 404 };
      return {
        status: 200,
        headers: { "docker-content-digest": match[2] },
        body: method === "GET" ? blob : undefined,
      };
    }
    match = /^\/v2\/(.+)\/manifests\/([^/]+)$/.exec(url.pathname);
    if (match) return this.#manifest(request, match[1], match[2]);
    return { status: 404, body: errorBody("NOT_FOUND", "no route") };
  }

  #post(name: string, url: URL): Reply {
    const mount = url.searchParams.get("mount");
    if (mount) {
      const blob = this.blobs.get(`${url.searchParams.get("from")}@${mount}`);
      if (blob) {
        this.blobs.set(`${name}@${mount}`, blob);
        return { status: 201, headers: { "docker-content-digest": mount } };
      }
    }
    const id = this.openSession();
    const headers: Record<string, string> = {
      location: this.uploadLocation(name, id),
      "docker-upload-uuid": id,
      range: "0-0",
    };
    if (this.minChunkLength) {
      headers["oci-chunk-min-length"] = String(this.minChunkLength);
    }
    return { status: 202, headers };
  }

  #session(request: Recorded, name: string, id: string, url: URL): Reply {
    const stored = this.uploads.get(id);
    if (!stored) {
      return {
        status: 404,
        body: errorBody("BLOB_UPLOAD_UNKNOWN", "blob upload unknown"),
      };
    }
    if (this.locationQuery && !request.url.includes(this.locationQuery)) {
      return {
        status: 400,
        body: errorBody("BLOB_UPLOAD_INVALID", "the upload state is missing"),
      };
    }
    const progress = (status: number, size: number): Reply => ({
      status,
      headers: {
        location: this.uploadLocation(name, id),
        range: `0-${Math.max(0, size - 1)}`,
        "docker-upload-uuid": id,
      },
    });
    switch (request.method) {
      case "GET":
        return progress(204, stored.length);
      case "DELETE":
        this.uploads.delete(id);
        this.cancelled.push(id);
        return { status: 204 };
      case "PATCH": {
        const range = /^(\d+)-(\d+)$/.exec(
          String(request.headers["content-range"]),
        );
        if (!range || Number(range[1]) !== stored.length) {
          return progress(416, stored.length);
        }
        const grown = Buffer.concat([stored, request.body]);
        this.uploads.set(id, grown);
        return progress(202, grown.length);
      }
      case "PUT": {
        const whole = Buffer.concat([stored, request.body]);
        const digest = url.searchParams.get("digest") ?? "";
        if (sha256(whole) !== digest) {
          return {
            status: 400,
            body: errorBody("DIGEST_INVALID", "provided digest did not match"),
          };
        }
        this.uploads.delete(id);
        this.blobs.set(`${name}@${digest}`, whole);
        return {
          status: 201,
          headers: {
            location: `/v2/${name}/blobs/${digest}`,
            "docker-content-digest": digest,
          },
        };
      }
    }
    return { status: 405 };
  }

  #manifest(request: Recorded, name: string, reference: string): Reply {
    if (request.method === "PUT") {
      const mediaType = String(request.headers["content-type"]);
      const digest = sha256(request.body);
      this.manifests.set(`${name}:${reference}`, {
        body: request.body,
        mediaType,
      });
      this.manifests.set(`${name}:${digest}`, {
        body: request.body,
        mediaType,
      });
      return { status: 201, headers: { "docker-content-digest": digest } };
    }
    const manifest = this.manifests.get(`${name}:${reference}`);
    if (!manifest) return { status: 404 };
    return {
      status: 200,
      headers: {
        "content-type": manifest.mediaType,
        "docker-content-digest": sha256(manifest.body),
      },
      body: request.method === "GET" ? manifest.body : undefined,
    };
  }
}

const started: { close(): Promise<void> }[] = [];

async function startRegistry(tlsOptions?: {
  key: string;
  cert: string;
}): Promise<FakeRegistry> {
  const registry = await new FakeRegistry(tlsOptions).start();
  started.push(registry);
  return registry;
}

function clientFor(
  registry: FakeRegistry,
  options: Partial<RegistryClientOptions> = {},
): RegistryClient {
  return new RegistryClient({
    registry: registry.host,
    // An empty environment keeps the proxy variables of the machine out.
    env: {},
    retry: { baseDelayMs: 10 },
    ...options,
  });
}

const plainServers = new TestServers();

afterEach(async () => {
  await Promise.all(started.splice(0).map((server) => server.close()));
  await plainServers.closeAll();
});

describe("RegistryClient.uploadBlob in one PUT", () => {
  it("follows a Location that is a path", async () => {
    const registry = await startRegistry();
    const blob = testBlob(randomBytes(5000));

    await clientFor(registry).uploadBlob("ns/app", blob);

    const [put] = registry.of("PUT");
    expect(registry.of("POST")).toHaveLength(1);
    expect(put.url).toBe(
      `/v2/ns/app/blobs/uploads/session-1?digest=${encodeURIComponent(blob.digest)}`,
    );
    expect(put.headers["content-length"]).toBe("5000");
    expect(put.headers["content-type"]).toBe("application/octet-stream");
    expect(registry.blobs.get(`ns/app@${blob.digest}`)).toEqual(blob.bytes);
    expect(registry.of("PATCH")).toHaveLength(0);
    expect(registry.cancelled).toEqual([]);
  });

  it("keeps an absolute Location's query", async () => {
    const registry = await startRegistry();
    registry.locationStyle = "absolute";
    registry.locationQuery = "?_state=a%2Fb%3D%3D&n=1";
    const blob = testBlob(randomBytes(3000));

    await clientFor(registry).uploadBlob("ns/app", blob);

    const [put] = registry.of("PUT");
    expect(put.url).toBe(
      `/v2/ns/app/blobs/uploads/session-1?_state=a%2Fb%3D%3D&n=1&digest=${encodeURIComponent(blob.digest)}`,
    );
    expect(registry.blobs.get(`ns/app@${blob.digest}`)).toEqual(blob.bytes);
  });

  it("resolves a relative Location", async () => {
    const registry = await startRegistry();
    registry.locationStyle = "relative";
    const blob = testBlob(randomBytes(3000));

    await clientFor(registry).uploadBlob("ns/app", blob, { chunkSize: 1000 });

    expect(registry.of("PATCH").map((r) => r.url)).toEqual([
      "/v2/ns/app/blobs/uploads/session-1",
      "/v2/ns/app/blobs/uploads/session-1",
      "/v2/ns/app/blobs/uploads/session-1",
    ]);
    expect(registry.blobs.get(`ns/app@${blob.digest}`)).toEqual(blob.bytes);
  });

  it("uploads an empty blob", async () => {
    const registry = await startRegistry();
    const blob = testBlob(Buffer.alloc(0));

    await clientFor(registry).uploadBlob("ns/app", blob);

    expect(registry.blobs.get(`ns/app@${blob.digest}`)).toEqual(
      Buffer.alloc(0),
    );
  });

  it("pushBlob uploads a buffer once", async () => {
    const registry = await startRegistry();
    const body = Buffer.from('{"architecture":"amd64"}');
    const client = clientFor(registry);

    const digest = await client.pushBlob("ns/app", body);
    const again = await client.pushBlob("ns/app", body);

    expect(digest).toBe(sha256(body));
    expect(again).toBe(digest);
    expect(registry.of("POST")).toHaveLength(1);
    expect(registry.blobs.get(`ns/app@${digest}`)).toEqual(body);
  });
});

describe("RegistryClient.uploadBlob in chunks", () => {
  it("sends ranged PATCHes, then empty PUT", async () => {
    const registry = await startRegistry();
    registry.locationStyle = "absolute";
    registry.locationQuery = "?_state=xyz%3D";
    const blob = testBlob(randomBytes(10_000));

    await clientFor(registry).uploadBlob("ns/app", blob, { chunkSize: 3000 });

    const patches = registry.of("PATCH");
    expect(patches.map((r) => r.headers["content-range"])).toEqual([
      "0-2999",
      "3000-5999",
      "6000-8999",
      "9000-9999",
    ]);
    expect(patches.map((r) => r.headers["content-length"])).toEqual([
      "3000",
      "3000",
      "3000",
      "1000",
    ]);
    for (const patch of patches) {
      expect(patch.url).toContain("?_state=xyz%3D");
    }
    const [put] = registry.of("PUT");
    expect(put.body).toHaveLength(0);
    expect(put.url).toContain(`&digest=${encodeURIComponent(blob.digest)}`);
    expect(registry.blobs.get(`ns/app@${blob.digest}`)).toEqual(blob.bytes);
    expect(blob.opens).toBe(1);
  });

  it("sends chunks of adopted buffers that end with a chunk", async () => {
    const registry = await startRegistry();
    const bytes = randomBytes(4 * 256 * 1024);
    const blob = testBlob(bytes);
    // Each piece is in a buffer of its own, freed once sent, and every
    // request ends where a piece ends.
    blob.open = () => {
      blob.opens++;
      const pieces: Buffer[] = [];
      for (let i = 0; i < bytes.length; i += 256 * 1024) {
        const piece = Buffer.from(bytes.subarray(i, i + 256 * 1024));
        adopt(piece);
        pieces.push(piece);
      }
      return Readable.from(pieces);
    };

    await clientFor(registry).uploadBlob("ns/app", blob, {
      chunkSize: 512 * 1024,
    });

    expect(registry.of("PATCH")).toHaveLength(2);
    expect(registry.blobs.get(`ns/app@${blob.digest}`)).toEqual(bytes);
  });

  it("raises the chunk size to OCI-Chunk-Min-Length", async () => {
    const registry = await startRegistry();
    registry.minChunkLength = 4096;
    const blob = testBlob(randomBytes(10_000));

    await clientFor(registry).uploadBlob("ns/app", blob, { chunkSize: 1000 });

    expect(registry.of("PATCH").map((r) => r.headers["content-range"])).toEqual(
      ["0-4095", "4096-8191", "8192-9999"],
    );
  });

  it("ignores the minimum without chunkSize", async () => {
    const registry = await startRegistry();
    registry.minChunkLength = 4096;
    const blob = testBlob(randomBytes(10_000));

    await clientFor(registry).uploadBlob("ns/app", blob);

    expect(registry.of("PATCH")).toHaveLength(0);
    expect(registry.blobs.get(`ns/app@${blob.digest}`)).toEqual(blob.bytes);
  });

  it("rejects an upload Location that is not http", async () => {
    const registry = await startRegistry();
    const blob = testBlob(randomBytes(1000));
    registry.intercept = (request) =>
      request.method === "POST"
        ? { status: 202, headers: { location: "file:///etc/passwd" } }
        : undefined;

    const error = await clientFor(registry)
      .uploadBlob("ns/app", blob)
      .catch((caught: unknown) => caught);

    expect(error).toBeInstanceOf(PpaLoadError);
    expect((error as PpaLoadError).message).toContain(
      'a Location that is not an http or https URL: "file:///etc/passwd"',
    );
    expect(registry.of("PUT")).toHaveLength(0);
  });

  it("resumes after 416 from GET Range", async () => {
    const registry = await startRegistry();
    const blob = testBlob(randomBytes(10_000));
    let patches = 0;
    registry.intercept = (request) => {
      if (request.method !== "PATCH" || ++patches !== 2) return undefined;
      // The registry kept 500 bytes of the second chunk.
      const id = "session-1";
      registry.uploads.set(
        id,
        Buffer.concat([
          registry.uploads.get(id)!,
          request.body.subarray(0, 500),
        ]),
      );
      return { status: 416, headers: { range: "0-3499" } };
    };

    await clientFor(registry).uploadBlob("ns/app", blob, { chunkSize: 3000 });

    expect(registry.of("PATCH").map((r) => r.headers["content-range"])).toEqual(
      ["0-2999", "3000-5999", "3500-6499", "6500-9499", "9500-9999"],
    );
    expect(registry.of("GET", "/blobs/uploads/")).toHaveLength(1);
    expect(registry.blobs.get(`ns/app@${blob.digest}`)).toEqual(blob.bytes);
    // Going back to byte 3500 reads the blob again from its first byte.
    expect(blob.opens).toBe(2);
  });

  it("asks for the offset after an unreadable Range", async () => {
    const registry = await startRegistry();
    const blob = testBlob(randomBytes(10_000));
    let patches = 0;
    registry.intercept = (request) => {
      if (request.method !== "PATCH" || ++patches !== 1) return undefined;
      // The registry kept the chunk but responded with a Range of its own form.
      registry.uploads.set("session-1", request.body);
      return { status: 202, headers: { range: "bytes 0-2999/*" } };
    };

    await clientFor(registry).uploadBlob("ns/app", blob, { chunkSize: 3000 });

    expect(registry.of("GET", "/blobs/uploads/")).toHaveLength(1);
    expect(registry.of("PATCH").map((r) => r.headers["content-range"])).toEqual(
      ["0-2999", "3000-5999", "6000-8999", "9000-9999"],
    );
    expect(registry.blobs.get(`ns/app@${blob.digest}`)).toEqual(blob.bytes);
  });

  it("rejects an offset past the end of the blob", async () => {
    const registry = await startRegistry();
    const blob = testBlob(randomBytes(10_000));
    registry.intercept = (request) => {
      if (request.method === "PATCH") return { status: 416 };
      if (request.method === "GET" && request.url.includes("/uploads/")) {
        return { status: 204, headers: { range: "0-52428799" } };
      }
      return undefined;
    };

    const error = await clientFor(registry)
      .uploadBlob("ns/app", blob, { chunkSize: 3000 })
      .catch((caught: unknown) => caught);

    expect((error as PpaLoadError).message).toContain(
      "reported holding bytes 0-52428799 of blob",
    );
    expect(registry.of("PUT")).toHaveLength(0);
  });

  it("reopens the blob after lost bytes", async () => {
    const registry = await startRegistry();
    const blob = testBlob(randomBytes(10_000));
    let patches = 0;
    registry.intercept = (request) => {
      if (request.method !== "PATCH" || ++patches !== 3) return undefined;
      const id = "session-1";
      registry.uploads.set(id, registry.uploads.get(id)!.subarray(0, 1000));
      return { status: 416 };
    };

    await clientFor(registry).uploadBlob("ns/app", blob, { chunkSize: 3000 });

    expect(registry.of("PATCH").map((r) => r.headers["content-range"])).toEqual(
      [
        "0-2999",
        "3000-5999",
        "6000-8999",
        "1000-3999",
        "4000-6999",
        "7000-9999",
      ],
    );
    expect(blob.opens).toBe(2);
    expect(registry.blobs.get(`ns/app@${blob.digest}`)).toEqual(blob.bytes);
  });

  it("gives up on stalled chunks", async () => {
    const registry = await startRegistry();
    const blob = testBlob(randomBytes(5000));
    registry.intercept = (request) =>
      request.method === "PATCH" && request.headers["content-range"] !== "0-999"
        ? { status: 416 }
        : undefined;

    const error = await clientFor(registry)
      .uploadBlob("ns/app", blob, { chunkSize: 1000 })
      .catch((e: unknown) => e);

    expect(error).toBeInstanceOf(PpaLoadError);
    expect((error as PpaLoadError).message).toContain("made no progress");
    expect((error as PpaLoadError).hint).toContain("--chunk-size");
    expect(registry.cancelled).toEqual(["session-1"]);
  });
});

describe("RegistryClient.uploadBlob retries", () => {
  it("waits for Retry-After after 429", async () => {
    const registry = await startRegistry();
    const blob = testBlob(randomBytes(2000));
    let puts = 0;
    registry.intercept = (request) =>
      request.method === "PUT" && ++puts === 1
        ? {
            status: 429,
            headers: { "retry-after": "1" },
            body: errorBody("TOOMANYREQUESTS", "slow down"),
          }
        : undefined;
    const retries: RetryInfo[] = [];
    const started = Date.now();

    await clientFor(registry, {
      onRetry: (info) => retries.push(info),
    }).uploadBlob("ns/app", blob);

    expect(Date.now() - started).toBeGreaterThanOrEqual(950);
    expect(retries).toHaveLength(1);
    expect(retries[0].status).toBe(429);
    expect(retries[0].delayMs).toBe(1000);
    expect(registry.of("PUT")).toHaveLength(2);
    expect(blob.opens).toBe(2);
    expect(registry.blobs.get(`ns/app@${blob.digest}`)).toEqual(blob.bytes);
  });

  it("stops retrying 503, then cancels", async () => {
    const registry = await startRegistry();
    const blob = testBlob(randomBytes(2000));
    registry.intercept = (request) =>
      request.method === "PATCH"
        ? { status: 503, body: "<h1>Service Unavailable</h1>" }
        : undefined;

    const error = await clientFor(registry, {
      retry: { maxAttempts: 3, baseDelayMs: 5 },
    })
      .uploadBlob("ns/app", blob, { chunkSize: 1000 })
      .catch((e: unknown) => e);

    expect(error).toBeInstanceOf(RegistryError);
    expect((error as RegistryError).status).toBe(503);
    expect((error as RegistryError).message).toContain(
      `uploading blob ${blob.digest}`,
    );
    expect(registry.of("PATCH")).toHaveLength(3);
    expect(registry.cancelled).toEqual(["session-1"]);
  });

  it("restarts an unknown upload session", async () => {
    const registry = await startRegistry();
    const blob = testBlob(randomBytes(3000));
    registry.intercept = (request) => {
      if (request.method === "PATCH" && request.url.includes("session-1")) {
        registry.uploads.delete("session-1");
        return {
          status: 404,
          body: errorBody("BLOB_UPLOAD_UNKNOWN", "blob upload unknown"),
        };
      }
      return undefined;
    };
    const retries: RetryInfo[] = [];

    await clientFor(registry, {
      onRetry: (info) => retries.push(info),
    }).uploadBlob("ns/app", blob, { chunkSize: 1000 });

    expect(registry.of("POST")).toHaveLength(2);
    expect(retries.map((r) => r.status)).toEqual([404]);
    expect(registry.blobs.get(`ns/app@${blob.digest}`)).toEqual(blob.bytes);
  });

  it("cancels the session on abort", async () => {
    const registry = await startRegistry();
    const blob = testBlob(randomBytes(2000));
    registry.intercept = (request) =>
      request.method === "PUT"
        ? { status: 503, headers: { "retry-after": "30" } }
        : undefined;
    const controller = new AbortController();
    setTimeout(() => controller.abort(), 200);

    const error = await clientFor(registry)
      .uploadBlob("ns/app", blob, { signal: controller.signal })
      .catch((e: unknown) => e);

    expect(error).toBeInstanceOf(PpaLoadError);
    expect((error as PpaLoadError).code).toBe("ABORTED");
    expect(registry.cancelled).toEqual(["session-1"]);
  });
});

describe("RegistryClient.uploadBlob errors", () => {
  const nginx413 =
    "<html>\r\n<head><title>413 Request Entity Too Large</title></head>\r\n<body>\r\n<center><h1>413 Request Entity Too Large</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n";

  it("reports blob and request size on 413", async () => {
    const registry = await startRegistry();
    const blob = testBlob(randomBytes(3 * 1024 * 1024));
    registry.interceptHead = (request) =>
      request.method === "PUT"
        ? {
            status: 413,
            headers: { "content-type": "text/html" },
            body: nginx413,
          }
        : undefined;

    const error = await clientFor(registry)
      .uploadBlob("ns/app", blob)
      .catch((e: unknown) => e);

    expect(error).toBeInstanceOf(RegistryError);
    const { message, hint } = error as RegistryError;
    expect(message).toContain(blob.digest);
    expect(message).toContain("of 3145728 bytes (3.0 MiB) to ns/app");
    expect(message).toContain("in a request of 3145728 bytes");
    expect(message).toContain("413 Request Entity Too Large");
    expect(hint).toContain("raise the proxy's body-size limit");
    expect(hint).toContain(
      "upload in chunks with --chunk-size below 3145728 bytes",
    );
    expect(registry.cancelled).toEqual(["session-1"]);
  });

  it("reports chunk size on PATCH 413", async () => {
    const registry = await startRegistry();
    const blob = testBlob(randomBytes(4000));
    registry.interceptHead = (request) =>
      request.method === "PATCH" ? { status: 413, body: nginx413 } : undefined;

    const error = await clientFor(registry)
      .uploadBlob("ns/app", blob, { chunkSize: 2048 })
      .catch((e: unknown) => e);

    expect(error).toBeInstanceOf(RegistryError);
    expect((error as RegistryError).message).toContain(
      "in a request of 2048 bytes",
    );
    expect((error as RegistryError).hint).toContain(
      "set --chunk-size below 2048 bytes",
    );
    expect(registry.cancelled).toEqual(["session-1"]);
  });

  it("blames the proxy when chunks hit the minimum", async () => {
    const registry = await startRegistry();
    registry.minChunkLength = 4096;
    const blob = testBlob(randomBytes(10_000));
    registry.interceptHead = (request) =>
      request.method === "PATCH" ? { status: 413, body: nginx413 } : undefined;

    const error = await clientFor(registry)
      .uploadBlob("ns/app", blob, { chunkSize: 1000 })
      .catch((e: unknown) => e);

    expect(error).toBeInstanceOf(RegistryError);
    expect((error as RegistryError).message).toContain(
      "in a request of 4096 bytes",
    );
    expect((error as RegistryError).hint).toContain(
      "requires chunks of at least 4096 bytes",
    );
    expect((error as RegistryError).hint).not.toContain("--chunk-size");
  });

  it("rejects a different stored digest", async () => {
    const registry = await startRegistry();
    const blob = testBlob(randomBytes(1000));
    const other = sha256(Buffer.from("other"));
    registry.intercept = (request) =>
      request.method === "PUT"
        ? { status: 201, headers: { "docker-content-digest": other } }
        : undefined;

    const error = await clientFor(registry)
      .uploadBlob("ns/app", blob)
      .catch((e: unknown) => e);

    expect(error).toBeInstanceOf(PpaLoadError);
    expect((error as PpaLoadError).message).toContain(blob.digest);
    expect((error as PpaLoadError).message).toContain(
      `under the digest ${other}`,
    );
  });

  it("stops chunks that mismatch the digest", async () => {
    const registry = await startRegistry();
    const blob = testBlob(randomBytes(3000), sha256(Buffer.from("x")));

    const error = await clientFor(registry)
      .uploadBlob("ns/app", blob, { chunkSize: 1000 })
      .catch((e: unknown) => e);

    expect(error).toBeInstanceOf(PpaLoadError);
    expect((error as PpaLoadError).message).toContain(
      `hash to ${sha256(blob.bytes)}`,
    );
    expect(registry.of("PUT")).toHaveLength(0);
    expect(registry.cancelled).toEqual(["session-1"]);
  });

  it("stops a PUT that mismatches the digest", async () => {
    const registry = await startRegistry();
    const blob = testBlob(randomBytes(3000), sha256(Buffer.from("x")));

    const error = await clientFor(registry)
      .uploadBlob("ns/app", blob)
      .catch((e: unknown) => e);

    expect(error).toBeInstanceOf(PpaLoadError);
    expect((error as PpaLoadError).message).toContain(
      `hash to ${sha256(blob.bytes)}`,
    );
    expect(registry.blobs.size).toBe(0);
    expect(registry.cancelled).toEqual(["session-1"]);
  });

  it("stops a PUT of a short blob", async () => {
    const registry = await startRegistry();
    const bytes = randomBytes(3000);
    const blob: TestBlob = { ...testBlob(bytes), size: 4000 };

    const error = await clientFor(registry)
      .uploadBlob("ns/app", blob)
      .catch((e: unknown) => e);

    expect(error).toBeInstanceOf(PpaLoadError);
    expect((error as PpaLoadError).message).toContain(
      "should be 4000 bytes, but 3000 bytes were read",
    );
    expect(registry.cancelled).toEqual(["session-1"]);
  });

  it("suspects a proxy on DIGEST_INVALID", async () => {
    const registry = await startRegistry();
    const blob = testBlob(randomBytes(1000));
    registry.intercept = (request) =>
      request.method === "PUT"
        ? {
            status: 400,
            body: errorBody("DIGEST_INVALID", "provided digest did not match"),
          }
        : undefined;

    const error = await clientFor(registry)
      .uploadBlob("ns/app", blob)
      .catch((e: unknown) => e);

    expect(error).toBeInstanceOf(RegistryError);
    expect((error as RegistryError).has("DIGEST_INVALID")).toBe(true);
    expect((error as RegistryError).hint).toContain("such as a proxy");
    expect(registry.cancelled).toEqual(["session-1"]);
  });

  it("names the fix per error code", async () => {
    const registry = await startRegistry();
    const blob = testBlob(randomBytes(100));
    const cases = [
      { status: 403, code: "DENIED", hint: "permissions" },
      { status: 400, code: "NAME_INVALID", hint: "--namespace" },
      { status: 403, code: "DENIED", message: "quota exceeded", hint: "quota" },
      { status: 429, code: "TOOMANYREQUESTS", hint: "rate limiting" },
    ];
    for (const entry of cases) {
      registry.intercept = (request) =>
        request.method === "POST"
          ? {
              status: entry.status,
              body: errorBody(entry.code, entry.message ?? "rejected"),
            }
          : undefined;

      const error = await clientFor(registry, { retry: { maxAttempts: 1 } })
        .uploadBlob("ns/app", blob)
        .catch((e: unknown) => e);

      expect(error, entry.code).toBeInstanceOf(RegistryError);
      expect((error as RegistryError).has(entry.code), entry.code).toBe(true);
      expect((error as RegistryError).hint, entry.code).toContain(entry.hint);
    }
  });
});

describe("RegistryClient.uploadBlob authentication", () => {
  it("refreshes a revoked bearer token", async () => {
    const registry = await startRegistry();
    registry.bearerTokens = new Set();
    const blob = testBlob(randomBytes(4000));
    let puts = 0;
    registry.interceptHead = (request) => {
      // The token that opened the session is revoked before the PUT.
      if (request.method === "PUT" && ++puts === 1) {
        registry.bearerTokens!.clear();
      }
      return undefined;
    };
    const client = clientFor(registry);

    await client.uploadBlob("ns/app", blob);

    const attempts = registry.of("PUT");
    expect(attempts).toHaveLength(2);
    expect(attempts[1].headers.authorization).toBe("Bearer token-2");
    expect(attempts[0].headers.authorization).toBe("Bearer token-1");
    expect(attempts[1].body).toEqual(blob.bytes);
    expect(registry.tokensIssued).toBe(2);
    expect(blob.opens).toBe(2);
    expect(registry.blobs.get(`ns/app@${blob.digest}`)).toEqual(blob.bytes);
  });

  it("resends a chunk after 401", async () => {
    const registry = await startRegistry();
    registry.bearerTokens = new Set();
    const blob = testBlob(randomBytes(3000));
    let patches = 0;
    registry.interceptHead = (request) => {
      if (request.method === "PATCH" && ++patches === 2) {
        registry.bearerTokens!.clear();
      }
      return undefined;
    };

    await clientFor(registry).uploadBlob("ns/app", blob, { chunkSize: 1000 });

    const ranges = registry
      .of("PATCH")
      .filter((r) => r.body.length > 0)
      .map((r) => r.headers["content-range"]);
    expect(ranges).toEqual(["0-999", "1000-1999", "1000-1999", "2000-2999"]);
    expect(blob.opens).toBe(2);
    expect(registry.blobs.get(`ns/app@${blob.digest}`)).toEqual(blob.bytes);
  });

  it("keeps credentials from other origins", async () => {
    const registry = await startRegistry();
    const storage = await startRegistry();
    const authorization = `Basic ${Buffer.from("user:secret").toString("base64")}`;
    registry.basicAuthorization = authorization;
    registry.intercept = (request) => {
      if (request.method !== "POST") return undefined;
      const id = storage.openSession();
      return {
        status: 202,
        headers: {
          location: `${storage.origin}/v2/ns/app/blobs/uploads/${id}`,
        },
      };
    };
    const blob = testBlob(randomBytes(2000));

    await clientFor(registry, {
      credentials: { username: "user", password: "secret", source: "test" },
    }).uploadBlob("ns/app", blob, { chunkSize: 1000 });

    expect(registry.of("POST").at(-1)?.headers.authorization).toBe(
      authorization,
    );
    expect(storage.requests.length).toBeGreaterThan(0);
    for (const request of storage.requests) {
      expect(request.headers.authorization).toBeUndefined();
    }
    expect(storage.blobs.get(`ns/app@${blob.digest}`)).toEqual(blob.bytes);
  });
});

describe("RegistryClient.uploadBlob resumes", () => {
  let folder: string;
  beforeAll(async () => {
    folder = await mkdtemp(join(tmpdir(), "ppa-load-journal-"));
  });
  afterAll(async () => {
    await rm(folder, { recursive: true, force: true });
  });

  /** Uploads until the second chunk arrives, then cancels, as Ctrl-C does. */
  async function interruptedUpload(
    registry: FakeRegistry,
    blob: TestBlob,
    file: string,
  ): Promise<void> {
    const controller = new AbortController();
    let patches = 0;
    registry.intercept = (request) => {
      if (request.method === "PATCH" && ++patches === 2) controller.abort();
      return undefined;
    };
    const journal = await UploadJournal.open(file);
    const upload = clientFor(registry, { journal }).uploadBlob("ns/app", blob, {
      chunkSize: 3000,
      signal: controller.signal,
    });
    await expect(upload).rejects.toThrow(/cancelled/);
    registry.intercept = undefined;
  }

  it("names a journal path that is a folder", async () => {
    const file = join(folder, "folder.json");
    await mkdir(file);
    const warnings: string[] = [];

    const journal = await UploadJournal.open(file, (message) =>
      warnings.push(message),
    );

    expect(journal.entries()).toEqual([]);
    expect(warnings).toEqual([
      `${file} is a folder, so chunked uploads cannot be resumed by a later run; remove or rename that folder`,
    ]);
  });

  it("keeps the session of a cancelled upload", async () => {
    const registry = await startRegistry();
    const blob = testBlob(randomBytes(10_000));
    const file = join(folder, "keep.json");

    await interruptedUpload(registry, blob, file);

    expect(registry.cancelled).toEqual([]);
    const saved = JSON.parse(await readFile(file, "utf8"));
    expect(saved.uploads).toHaveLength(1);
    expect(saved.uploads[0].offset).toBe(6000);
    expect(saved.uploads[0].digest).toBe(blob.digest);
  });

  it("sends only the rest in a later run", async () => {
    const registry = await startRegistry();
    const blob = testBlob(randomBytes(10_000));
    const file = join(folder, "rest.json");
    await interruptedUpload(registry, blob, file);
    registry.requests.length = 0;
    const resumes: ResumeInfo[] = [];

    const journal = await UploadJournal.open(file);
    await clientFor(registry, {
      journal,
      onResume: (info) => resumes.push(info),
    }).uploadBlob("ns/app", blob);

    expect(resumes).toEqual([
      expect.objectContaining({ outcome: "resumed", offset: 6000 }),
    ]);
    expect(registry.of("POST")).toHaveLength(0);
    expect(registry.of("PATCH").map((r) => r.headers["content-range"])).toEqual(
      ["6000-9999"],
    );
    expect(registry.blobs.get(`ns/app@${blob.digest}`)).toEqual(blob.bytes);
    await expect(readFile(file)).rejects.toThrow(/ENOENT/);
  });

  it("starts over when the session is gone", async () => {
    const registry = await startRegistry();
    const blob = testBlob(randomBytes(10_000));
    const file = join(folder, "gone.json");
    await interruptedUpload(registry, blob, file);
    registry.uploads.clear();
    const resumes: ResumeInfo[] = [];

    const journal = await UploadJournal.open(file);
    await clientFor(registry, {
      journal,
      onResume: (info) => resumes.push(info),
    }).uploadBlob("ns/app", blob, { chunkSize: 3000 });

    expect(resumes).toEqual([
      expect.objectContaining({ outcome: "expired", offset: 6000 }),
    ]);
    expect(registry.blobs.get(`ns/app@${blob.digest}`)).toEqual(blob.bytes);
    await expect(readFile(file)).rejects.toThrow(/ENOENT/);
  });

  it("cancels the session of a failed upload", async () => {
    const registry = await startRegistry();
    const blob = testBlob(randomBytes(10_000));
    const file = join(folder, "failed.json");
    let patches = 0;
    registry.intercept = (request) =>
      request.method === "PATCH" && ++patches === 2
        ? { status: 403, body: errorBody("DENIED", "no") }
        : undefined;

    const journal = await UploadJournal.open(file);
    const upload = clientFor(registry, { journal }).uploadBlob("ns/app", blob, {
      chunkSize: 3000,
    });

    await expect(upload).rejects.toThrow(RegistryError);
    expect(registry.cancelled).toEqual(["session-1"]);
    await expect(readFile(file)).rejects.toThrow(/ENOENT/);
  });

  it("cancels only sessions of a week ago", async () => {
    const registry = await startRegistry();
    const blob = testBlob(randomBytes(10_000));
    const file = join(folder, "stale.json");
    await interruptedUpload(registry, blob, file);

    const journal = await UploadJournal.open(file);
    const client = clientFor(registry, { journal });
    await client.cancelRecordedUploads();
    expect(registry.cancelled).toEqual([]);

    await client.cancelRecordedUploads(-1000);

    expect(registry.cancelled).toEqual(["session-1"]);
    expect(journal.entries()).toEqual([]);
    await expect(readFile(file)).rejects.toThrow(/ENOENT/);
  });

  it("uploads large blobs in chunks by default", async () => {
    const registry = await startRegistry();
    const size = autoChunkThreshold;
    const blob: BlobSource = {
      digest: sha256(Buffer.alloc(size)),
      size,
      mediaType: "application/octet-stream",
      open: () => Readable.from(zeroes(size)),
    };

    await clientFor(registry).uploadBlob("ns/app", blob);

    expect(registry.of("PATCH")).toHaveLength(size / autoChunkSize);
    expect(registry.blobs.get(`ns/app@${blob.digest}`)?.length).toBe(size);
  });

  it("sends a blob in one PUT with chunk size 0", async () => {
    const registry = await startRegistry();
    const blob = testBlob(randomBytes(10_000));

    await clientFor(registry).uploadBlob("ns/app", blob, { chunkSize: 0 });

    expect(registry.of("PATCH")).toHaveLength(0);
    expect(registry.blobs.get(`ns/app@${blob.digest}`)).toEqual(blob.bytes);
  });
});

function* zeroes(size: number): Generator<Buffer> {
  const piece = Buffer.alloc(4 * 1024 * 1024);
  for (let sent = 0; sent < size; sent += piece.length) {
    yield piece.subarray(0, Math.min(piece.length, size - sent));
  }
}

describe("RegistryClient hostile responses", () => {
  async function server(
    handler: http.RequestListener,
  ): Promise<{ host: string; close: () => Promise<void> }> {
    const instance = http.createServer(handler);
    await new Promise<void>((resolve) =>
      instance.listen(0, "127.0.0.1", resolve),
    );
    return {
      host: `127.0.0.1:${(instance.address() as net.AddressInfo).port}`,
      close: async () => {
        instance.closeAllConnections();
        await new Promise((resolve) => instance.close(resolve));
      },
    };
  }

  it("times out a body that trickles in", async () => {
    const trickling = await server((req, res) => {
      if (req.url === "/v2/") {
        res.writeHead(200);
        res.end();
        return;
      }
      res.writeHead(200, { "content-length": "1000" });
      const timer = setInterval(() => res.write(" "), 50);
      res.on("close", () => clearInterval(timer));
    });
    try {
      const client = new RegistryClient({
        registry: trickling.host,
        env: {},
        idleTimeoutMs: 200,
        retry: { maxAttempts: 1 },
      });

      const error = await client
        .getManifest("ns/app", "1.0")
        .catch((caught: unknown) => caught);

      expect(String(error)).toMatch(/took more than 0 s to send its response/);
    } finally {
      await trickling.close();
    }
  });

  it("times out a body that stalls after the headers", async () => {
    const stalling = await server((req, res) => {
      if (req.url === "/v2/") {
        res.writeHead(200);
        res.end();
        return;
      }
      res.writeHead(200, { "content-length": "1000" });
      res.write("{");
    });
    try {
      const client = new RegistryClient({
        registry: stalling.host,
        env: {},
        idleTimeoutMs: 200,
      });

      const error = await client
        .getManifest("ns/app", "1.0")
        .catch((caught: unknown) => caught);

      expect(String(error)).toMatch(/timed out: .* no data for 0 s/);
    } finally {
      await stalling.close();
    }
  });

  it("drops an error body that is too large", async () => {
    const endless = await server((_req, res) => {
      res.writeHead(400, { "content-type": "application/json" });
      const piece = Buffer.alloc(1024 * 1024, 0x20);
      let sent = 0;
      const pump = () => {
        while (sent < 64 && res.write(piece)) sent++;
        if (sent < 64) res.once("drain", pump);
        else res.end();
      };
      pump();
    });
    try {
      const client = new RegistryClient({ registry: endless.host, env: {} });

      const error = await client.ping().catch((caught: unknown) => caught);

      // The error body is dropped past the limit; the status still shows.
      expect(String(error)).toMatch(/GET .*\/v2\/ failed: 400/);
    } finally {
      await endless.close();
    }
  });

  it("sends credentials to no other port after a redirect", async () => {
    const seen: (string | undefined)[] = [];
    const other = await server((req, res) => {
      seen.push(req.headers.authorization);
      res.writeHead(200);
      res.end("{}");
    });
    const registry = await server((req, res) => {
      if (!req.headers.authorization) {
        res.writeHead(401, { "www-authenticate": 'Basic realm="r"' });
        res.end();
        return;
      }
      res.writeHead(307, { location: `http://${other.host}/v2/` });
      res.end();
    });
    try {
      const client = new RegistryClient({
        registry: registry.host,
        env: {},
        credentials: {
          username: "u",
          password: "secret",
          source: "--username",
        },
      });

      await client.ping();

      expect(seen.length).toBeGreaterThan(0);
      expect(seen.every((header) => header === undefined)).toBe(true);
    } finally {
      await registry.close();
      await other.close();
    }
  });
});

describe("RegistryClient connection failures", () => {
  it("suggests chunks when uploads are dropped", async () => {
    const registry = await startRegistry();
    // A proxy that cuts long uploads closes the connection mid-body.
    registry.server.on("request", (req, res) => {
      if (req.method === "PUT") res.socket?.destroy();
    });
    const blob = testBlob(randomBytes(64 * 1024));

    const error = await clientFor(registry)
      .uploadBlob("ns/app", blob)
      .catch((caught: unknown) => caught);

    expect(error).toBeInstanceOf(PpaLoadError);
    expect((error as PpaLoadError).hint).toMatch(
      /closed while the upload was in flight.*--chunk-size/,
    );
  });

  it("suggests --insecure for a plain HTTP server", async () => {
    const registry = await startRegistry();

    const error = await clientFor(registry, { scheme: "https" })
      .ping()
      .catch((caught: unknown) => caught);

    expect(error).toBeInstanceOf(PpaLoadError);
    expect((error as PpaLoadError).hint).toMatch(
      /answered in plain HTTP where HTTPS was expected; add --insecure/,
    );
    expect((error as PpaLoadError).message).toMatch(
      /: the TLS handshake failed because the server answered in plain HTTP$/,
    );
  });
});

describe("RegistryClient idle timeout", () => {
  it("fails a request that gets no response", async () => {
    const server = http.createServer(() => undefined);
    await new Promise<void>((resolve) =>
      server.listen(0, "127.0.0.1", resolve),
    );
    const port = (server.address() as net.AddressInfo).port;
    try {
      const client = new RegistryClient({
        registry: `127.0.0.1:${port}`,
        env: {},
        idleTimeoutMs: 200,
      });

      const error = await client.ping().catch((caught: unknown) => caught);

      expect(error).toBeInstanceOf(PpaLoadError);
      expect((error as Error).message).toMatch(
        /GET http:\/\/127\.0\.0\.1:\d+\/v2\/ timed out: .* no data for 0 s/,
      );
      expect((error as PpaLoadError).hint).toMatch(/run the import again/);
    } finally {
      server.closeAllConnections();
      await new Promise((resolve) => server.close(resolve));
    }
  });

  it("keeps a slow upload alive while bytes move", async () => {
    const registry = await startRegistry();
    const bytes = randomBytes(64 * 1024);
    const blob: BlobSource = {
      digest: sha256(bytes),
      size: bytes.length,
      mediaType: "application/octet-stream",
      // Eight pieces 100 ms apart: slower than the timeout as a whole.
      open: () =>
        Readable.from(
          (async function* () {
            for (let i = 0; i < 8; i++) {
              await new Promise((resolve) => setTimeout(resolve, 100));
              yield bytes.subarray(i * 8192, (i + 1) * 8192);
            }
          })(),
        ),
    };

    await clientFor(registry, { idleTimeoutMs: 300 }).uploadBlob(
      "ns/app",
      blob,
    );

    expect(registry.blobs.get(`ns/app@${blob.digest}`)).toEqual(bytes);
  });
});

describe("RegistryTarget", () => {
  it("describes the registry", async () => {
    const registry = await startRegistry();
    const target = new RegistryTarget(clientFor(registry));

    await target.check();

    expect(target.description).toBe(`registry http://${registry.host}`);
    expect(target.isRemote).toBe(true);
  });

  it("reports exists, mounted and uploaded", async () => {
    const registry = await startRegistry();
    const target = new RegistryTarget(clientFor(registry), { chunkSize: 1000 });
    const blob = testBlob(randomBytes(2500));

    const first = await target.putBlob("ns/a", blob, { mountFrom: ["ns/b"] });
    const again = await target.putBlob("ns/a", blob);
    const mounted = await target.putBlob("ns/c", blob, {
      mountFrom: ["ns/b", "ns/a"],
    });

    expect(first).toBe("uploaded");
    expect(again).toBe("exists");
    expect(mounted).toBe("mounted");
    expect(registry.of("PATCH")).toHaveLength(3);
    // The declined mounts from ns/b opened sessions that were cancelled.
    expect(registry.cancelled).toEqual(["session-1", "session-3"]);
    expect(registry.blobs.get(`ns/c@${blob.digest}`)).toEqual(blob.bytes);
  });

  it("puts manifests and reads tag digests", async () => {
    const registry = await startRegistry();
    const target = new RegistryTarget(clientFor(registry));
    const body = Buffer.from('{"schemaVersion":2}');
    const mediaType = "application/vnd.oci.image.manifest.v1+json";

    const digest = await target.putManifest("ns/a", "1.0", mediaType, body);

    expect(digest).toBe(sha256(body));
    expect(
      registry.of("PUT", "/manifests/1.0")[0].headers["content-type"],
    ).toBe(mediaType);
    expect(await target.getTagDigest("ns/a", "1.0")).toBe(digest);
    expect(await target.getTagDigest("ns/a", "2.0")).toBeUndefined();
  });
});

describe("parseRetryAfter", () => {
  it("reads seconds and HTTP dates", () => {
    const now = Date.parse("2024-01-01T00:00:00Z");

    expect(parseRetryAfter("3", now)).toBe(3000);
    expect(parseRetryAfter("Mon, 01 Jan 2024 00:00:10 GMT", now)).toBe(10_000);
    expect(parseRetryAfter("Sun, 31 Dec 2023 23:59:00 GMT", now)).toBe(0);
    expect(parseRetryAfter("soon", now)).toBeUndefined();
    expect(parseRetryAfter(null, now)).toBeUndefined();
  });
});

describe("proxyFor", () => {
  const env = {
    HTTPS_PROXY: "http://proxy.example:3128",
    HTTP_PROXY: "proxy.example:8080",
    NO_PROXY: [
      "example.com",
      " .internal.example",
      "*.wild.example",
      "10.0.0.0/8",
      "192.168.1.5",
      "192.168.1.6:5000",
      "[2001:db8::1]:443",
      "registry.example:5000",
      "fd00::/8",
    ].join(","),
  };
  const settings = proxySettings(env);
  const cases: [string, string | undefined][] = [
    ["https://example.com/v2/", undefined],
    ["https://sub.example.com/v2/", undefined],
    ["https://EXAMPLE.COM/v2/", undefined],
    ["https://notexample.com/v2/", "http://proxy.example:3128/"],
    ["https://internal.example/v2/", "http://proxy.example:3128/"],
    ["https://a.internal.example/v2/", undefined],
    ["https://wild.example/v2/", "http://proxy.example:3128/"],
    ["https://a.wild.example/v2/", undefined],
    ["https://10.1.2.3/v2/", undefined],
    ["https://11.0.0.1/v2/", "http://proxy.example:3128/"],
    ["https://192.168.1.5:5000/v2/", undefined],
    ["https://192.168.1.6:5000/v2/", undefined],
    ["https://192.168.1.6/v2/", "http://proxy.example:3128/"],
    ["https://[2001:db8::1]/v2/", undefined],
    ["https://[2001:db8::1]:5000/v2/", "http://proxy.example:3128/"],
    ["https://[fd00::5]/v2/", undefined],
    ["https://registry.example:5000/v2/", undefined],
    ["https://registry.example/v2/", "http://proxy.example:3128/"],
    ["https://localhost:5000/v2/", undefined],
    ["https://127.0.0.2/v2/", undefined],
    ["https://[::1]:5000/v2/", undefined],
    ["http://example.org/v2/", "http://proxy.example:8080/"],
  ];

  for (const [url, expected] of cases) {
    it(`returns ${expected ?? "no proxy"} for ${url}`, () => {
      expect(proxyFor(new URL(url), settings)?.href).toBe(expected);
    });
  }

  it("bypasses every host for NO_PROXY=*", () => {
    const all = proxySettings({ ...env, NO_PROXY: "*" });

    expect(proxyFor(new URL("https://registry.example/"), all)).toBeUndefined();
    expect(proxyFor(new URL("http://10.1.2.3/"), all)).toBeUndefined();
  });

  it("prefers upper case and never falls back to HTTP_PROXY", () => {
    const both = proxySettings({
      HTTPS_PROXY: "http://upper.example:1",
      https_proxy: "http://lower.example:2",
      no_proxy: "lower-case.example",
    });
    const lowerOnly = proxySettings({ https_proxy: "http://lower.example:2" });
    const httpOnly = proxySettings({ HTTP_PROXY: "http://plain.example:3" });

    expect(proxyFor(new URL("https://r.example/"), both)?.host).toBe(
      "upper.example:1",
    );
    expect(
      proxyFor(new URL("https://lower-case.example/"), both),
    ).toBeUndefined();
    expect(proxyFor(new URL("https://r.example/"), lowerOnly)?.host).toBe(
      "lower.example:2",
    );
    expect(proxyFor(new URL("https://r.example/"), httpOnly)).toBeUndefined();
  });

  it("rejects a SOCKS proxy", () => {
    const socks = proxySettings({ HTTPS_PROXY: "socks5://127.0.0.1:1080" });

    expect(() => proxyFor(new URL("https://r.example/"), socks)).toThrow(
      /supports only http:\/\/ and https:\/\/ proxies/,
    );
  });
});

/** An HTTP proxy that sends every request and tunnel to 127.0.0.1, whatever host it names. */
class FakeProxy {
  readonly tunnels: string[] = [];
  readonly forwarded: string[] = [];
  readonly authorizations: (string | undefined)[] = [];
  /** When set, requests without `Proxy-Authorization: <value>` get 407. */
  requiredAuthorization?: string;
  readonly server = http.createServer((req, res) => this.#forward(req, res));
  readonly #sockets = new Set<net.Socket>();

  constructor(readonly allowedPorts: number[]) {
    this.server.on("connect", (req, socket, head) =>
      this.#tunnel(req, socket as net.Socket, head),
    );
  }

  async start(): Promise<this> {
    await new Promise<void>((resolve) =>
      this.server.listen(0, "127.0.0.1", resolve),
    );
    started.push(this);
    return this;
  }

  get url(): string {
    return `http://127.0.0.1:${(this.server.address() as net.AddressInfo).port}`;
  }

  async close(): Promise<void> {
    for (const socket of this.#sockets) socket.destroy();
    this.server.closeAllConnections();
    await new Promise((resolve) => this.server.close(resolve));
  }

  #allowed(header: string | undefined): boolean {
    this.authorizations.push(header);
    return !this.requiredAuthorization || header === this.requiredAuthorization;
  }

  #tunnel(req: http.IncomingMessage, socket: net.Socket, head: Buffer) {
    this.tunnels.push(req.url ?? "");
    this.#sockets.add(socket);
    socket.on("error", () => undefined);
    if (!this.#allowed(req.headers["proxy-authorization"])) {
      socket.end(
        "HTTP/1.1 407 Proxy Authentication Required\r\nProxy-Authenticate: Basic\r\n\r\n",
      );
      return;
    }
    const port = Number((req.url ?? "").split(":").pop());
    if (!this.allowedPorts.includes(port)) {
      socket.end("HTTP/1.1 403 Forbidden\r\n\r\n");
      return;
    }
    const upstream = net.connect(port, "127.0.0.1", () => {
      socket.write("HTTP/1.1 200 Connection Established\r\n\r\n");
      upstream.write(head);
      upstream.pipe(socket);
      socket.pipe(upstream);
    });
    this.#sockets.add(upstream);
    upstream.on("error", () => socket.destroy());
    socket.on("close", () => upstream.destroy());
  }

  #forward(req: http.IncomingMessage, res: http.ServerResponse) {
    this.forwarded.push(req.url ?? "");
    if (!this.#allowed(req.headers["proxy-authorization"])) {
      res.writeHead(407, { "proxy-authenticate": "Basic" }).end();
      return;
    }
    const target = new URL(req.url ?? "");
    if (!this.allowedPorts.includes(Number(target.port))) {
      res.writeHead(403).end();
      return;
    }
    const headers = { ...req.headers };
    delete headers["proxy-authorization"];
    const upstream = http.request(
      {
        host: "127.0.0.1",
        port: Number(target.port),
        method: req.method,
        path: target.pathname + target.search,
        headers,
      },
      (answer) => {
        res.writeHead(answer.statusCode ?? 502, answer.headers);
        answer.pipe(res);
      },
    );
    upstream.on("error", () => res.destroy());
    req.pipe(upstream);
  }
}

describe("TLS and proxies", () => {
  let folder: string;
  let key: string;
  let cert: string;

  beforeAll(async () => {
    folder = await mkdtemp(join(tmpdir(), "ppa-load-tls-"));
    execFileSync(
      "openssl",
      [
        "req",
        "-x509",
        "-newkey",
        "ec",
        "-pkeyopt",
        "ec_paramgen_curve:prime256v1",
        "-nodes",
        "-keyout",
        join(folder, "key.pem"),
        "-out",
        join(folder, "cert.pem"),
        "-days",
        "1",
        "-subj",
        "/CN=ppa-load test registry",
        "-addext",
        "subjectAltName=DNS:localhost,DNS:registry.test,IP:127.0.0.1",
      ],
      { stdio: "pipe" },
    );
    key = await readFile(join(folder, "key.pem"), "utf8");
    cert = await readFile(join(folder, "cert.pem"), "utf8");
  });

  afterAll(async () => {
    await rm(folder, { recursive: true, force: true });
  });

  it("rejects a self-signed certificate without caCert", async () => {
    const registry = await startRegistry({ key, cert });
    const client = new RegistryClient({
      registry: `localhost:${registry.port}`,
      scheme: "https",
      env: {},
    });

    const error = await client.ping().catch((e: unknown) => e);

    expect(error).toBeInstanceOf(PpaLoadError);
    expect((error as PpaLoadError).message).toContain("cannot reach");
    expect((error as PpaLoadError).hint).toContain("--ca-cert");
    expect(registry.requests).toHaveLength(0);
  });

  it("sends no credentials after a redirect's 401", async () => {
    const registry = await startRegistry({ key, cert });
    registry.basicAuthorization = `Basic ${Buffer.from("user:secret").toString("base64")}`;
    const seen: (string | undefined)[] = [];
    const redirector = await plainServers.start((request, response) => {
      seen.push(request.headers.authorization);
      response.writeHead(307, { location: `${registry.origin}${request.url}` });
      response.end();
    });
    const client = new RegistryClient({
      registry: new URL(redirector.url).host,
      caCert: cert,
      credentials: { username: "user", password: "secret", source: "test" },
      env: {},
    });

    const error = await client.ping().catch((caught: unknown) => caught);

    expect(error).toBeInstanceOf(RegistryError);
    expect((error as RegistryError).status).toBe(401);
    expect(seen.length).toBeGreaterThan(0);
    expect(seen.every((value) => value === undefined)).toBe(true);
    client.close();
  });

  it("switches a loopback registry to https when it asks", async () => {
    const registry = await startRegistry({ key, cert });
    // One port for both protocols, as Go's HTTPS servers respond to plain HTTP
    // with a 400 that names the mistake.
    const plain = http.createServer((_request, response) => {
      response.writeHead(400, { "content-type": "text/plain" });
      response.end("Client sent an HTTP request to an HTTPS server.\n");
    });
    const front = net.createServer((socket) => {
      socket.once("readable", () => {
        const first: Buffer | null = socket.read(1);
        if (first) socket.unshift(first);
        // 0x16 starts a TLS handshake record.
        const target = first?.[0] === 0x16 ? registry.server : plain;
        target.emit("connection", socket);
      });
    });
    await new Promise<void>((resolve) => front.listen(0, "127.0.0.1", resolve));
    started.push({
      close: () =>
        new Promise<void>((resolve) => {
          plain.closeAllConnections();
          front.close(() => resolve());
        }),
    });
    const port = (front.address() as net.AddressInfo).port;
    const client = new RegistryClient({
      registry: `localhost:${port}`,
      caCert: cert,
      env: {},
    });

    expect(client.baseUrl).toBe(`http://localhost:${port}`);
    await client.ping();

    expect(client.baseUrl).toBe(`https://localhost:${port}`);
    await client.uploadBlob("ns/app", testBlob(randomBytes(100)));
    expect(registry.blobs.size).toBe(1);
    client.close();
  });

  it("trusts caCert as string or buffer", async () => {
    const registry = await startRegistry({ key, cert });
    for (const caCert of [cert, Buffer.from(cert)]) {
      const client = new RegistryClient({
        registry: `localhost:${registry.port}`,
        scheme: "https",
        caCert,
        env: {},
      });

      await client.ping();
      await client.uploadBlob("ns/app", testBlob(randomBytes(100)));
      client.close();
    }

    expect(registry.blobs.size).toBe(2);
  });

  it("tunnels https through CONNECT", async () => {
    const registry = await startRegistry({ key, cert });
    const proxy = await new FakeProxy([registry.port]).start();
    const proxyCredentials = `Basic ${Buffer.from("proxy-user:p@ss").toString("base64")}`;
    proxy.requiredAuthorization = proxyCredentials;
    const client = new RegistryClient({
      registry: `registry.test:${registry.port}`,
      caCert: cert,
      env: {
        HTTPS_PROXY: proxy.url.replace("//", "//proxy-user:p%40ss@"),
        NO_PROXY: "other.test",
      },
    });
    const blob = testBlob(randomBytes(5000));

    await client.ping();
    await client.uploadBlob("ns/app", blob, { chunkSize: 2000 });

    expect(proxy.tunnels.length).toBeGreaterThan(0);
    for (const tunnel of proxy.tunnels) {
      expect(tunnel).toBe(`registry.test:${registry.port}`);
    }
    expect(proxy.authorizations.every((a) => a === proxyCredentials)).toBe(
      true,
    );
    expect(registry.requests[0].headers.host).toBe(
      `registry.test:${registry.port}`,
    );
    expect(registry.blobs.get(`ns/app@${blob.digest}`)).toEqual(blob.bytes);
    client.close();
  });

  it("reports a proxy that rejects CONNECT", async () => {
    const registry = await startRegistry({ key, cert });
    const proxy = await new FakeProxy([registry.port]).start();
    proxy.requiredAuthorization = "Basic secret";
    const client = new RegistryClient({
      registry: `registry.test:${registry.port}`,
      caCert: cert,
      env: { HTTPS_PROXY: proxy.url },
    });

    const error = await client.ping().catch((e: unknown) => e);

    expect(error).toBeInstanceOf(PpaLoadError);
    expect((error as PpaLoadError).message).toContain(
      "407 Proxy Authentication Required",
    );
    expect((error as PpaLoadError).hint).toContain(`proxy ${proxy.url}`);
    expect((error as PpaLoadError).hint).toContain("NO_PROXY");
  });

  it("sends absolute-form requests to the proxy", async () => {
    const registry = await startRegistry();
    const proxy = await new FakeProxy([registry.port]).start();
    const client = new RegistryClient({
      registry: `registry.test:${registry.port}`,
      scheme: "http",
      env: { http_proxy: proxy.url },
    });
    const blob = testBlob(randomBytes(3000));

    await client.uploadBlob("ns/app", blob, { chunkSize: 1000 });

    expect(proxy.tunnels).toEqual([]);
    expect(proxy.forwarded[0]).toBe(
      `http://registry.test:${registry.port}/v2/ns/app/blobs/uploads/`,
    );
    expect(
      proxy.forwarded.every((u) => u.startsWith("http://registry.test:")),
    ).toBe(true);
    expect(registry.blobs.get(`ns/app@${blob.digest}`)).toEqual(blob.bytes);
    client.close();
  });

  it("connects to loopback registries directly", async () => {
    const registry = await startRegistry({ key, cert });
    const proxy = await new FakeProxy([registry.port]).start();
    const client = new RegistryClient({
      registry: `localhost:${registry.port}`,
      scheme: "https",
      caCert: cert,
      env: { HTTPS_PROXY: proxy.url },
    });

    await client.ping();

    expect(proxy.tunnels).toEqual([]);
    expect(registry.requests).toHaveLength(1);
    client.close();
  });
});
