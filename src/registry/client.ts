import { createHash } from "node:crypto";
import { Readable, Transform, type TransformCallback } from "node:stream";
import { setTimeout as sleep } from "node:timers/promises";
import {
  type HttpRequestInit,
  HttpResponse,
  httpRequest,
  redirectOf,
} from "./http.js";

import type { BlobSource } from "../blobs/blob.js";
import { retain, release } from "../chunk-memory.js";
import { PpaLoadError, errorMessage } from "../errors.js";
import {
  type Challenge,
  basicHeader,
  fetchToken,
  parseChallenge,
  plainHttpRealmWarning,
} from "./auth.js";
import type { Credentials } from "./credentials.js";
import { RegistryError, decodeErrorBody, redactUrl } from "./errors.js";
import { manifestAccept } from "./media-types.js";
import { Transport, isLoopbackHost } from "./transport.js";
import type { UploadJournal } from "./upload-journal.js";

export interface RetryOptions {
  /** Times a request is sent at most, the first time included. Default 5. */
  maxAttempts?: number;
  /** Wait in milliseconds before the first retry when the registry sends no `Retry-After`; it doubles with each retry. Default 1000. */
  baseDelayMs?: number;
  /** Maximum wait in milliseconds, which also caps a longer `Retry-After`. Default 30000. */
  maxDelayMs?: number;
}

export interface RetryInfo {
  method: string;
  url: string;
  /** Status of the response that caused the retry. */
  status: number;
  /** Number of the attempt that failed, from 1. */
  attempt: number;
  delayMs: number;
}

export interface RegistryClientOptions {
  /** `HOST[:PORT]` of the registry. */
  registry: string;
  /**
   * Defaults to `https`, and for loopback hosts to `http` until `ping`
   * finds that the registry speaks HTTPS.
   */
  scheme?: "http" | "https";
  credentials?: Credentials;
  /** PEM certificates of a private CA (`--ca-cert`), trusted in addition to Node's default CAs. */
  caCert?: string | Buffer;
  /**
   * Environment that `HTTPS_PROXY`, `HTTP_PROXY` and `NO_PROXY` are read
   * from; `process.env` by default. src/registry/transport.ts gives the rules.
   */
  env?: NodeJS.ProcessEnv;
  /** Retries of requests that receive 429, 500, 502, 503 or 504. */
  retry?: RetryOptions;
  /** Called after each request, for verbose output. Never given secrets. */
  onRequest?: (info: { method: string; url: string; status: number }) => void;
  /** Called before a request or an upload session is tried again. */
  onRetry?: (info: RetryInfo) => void;
  /**
   * Record of chunked uploads in progress. With it, an upload continues the
   * recorded session of its blob from the offset the registry reports, and
   * an interrupted upload keeps its session for a later run.
   */
  journal?: UploadJournal;
  /** Called with a warning for the user, e.g. credentials about to go over plain HTTP. */
  onWarning?: (message: string) => void;
  /** Called when an upload looks up a session from the journal. */
  onResume?: (info: ResumeInfo) => void;
  /**
   * Milliseconds a request may go without sending or receiving a byte
   * before it fails as timed out. Default 120000.
   */
  idleTimeoutMs?: number;
}

export interface ResumeInfo {
  repository: string;
  digest: string;
  size: number;
  /**
   * `resumed` when the registry still held the session, with `offset` the
   * bytes it holds; `expired` when it no longer did, so the upload starts over.
   */
  outcome: "resumed" | "expired";
  offset: number;
}

export interface UploadOptions {
  /**
   * Upload in PATCH requests of this many bytes, or more when the registry
   * sets a larger minimum with `OCI-Chunk-Min-Length`. 0 sends every blob in
   * one PUT. By default, blobs of `autoChunkThreshold` bytes or more go in
   * chunks of `autoChunkSize`, so that an interrupted upload can resume, and
   * smaller blobs in one PUT.
   */
  chunkSize?: number;
  signal?: AbortSignal;
  /**
   * Called as the body goes out, with the number of the blob's bytes from
   * its first byte that have been handed to the connection. It can go back
   * when part of the blob is sent again.
   */
  onProgress?: (bytesSent: number) => void;
}

export interface ManifestResult {
  mediaType: string;
  digest: string;
  body: Buffer;
}

export interface ManifestDescriptor {
  mediaType: string;
  digest: string;
  size: number;
}

/** A request body stream that records why reading the blob failed. */
/**
 * A request body stream. `failure` records why its source could not be
 * read, and `ready`, when present, prepares the source before the request
 * starts, so that the preparing does not count against the idle timeout.
 */
type BodyStream = Readable & {
  readonly failure?: Error;
  ready?(): Promise<void>;
};

interface RequestOptions {
  method?: string;
  /** Token scopes the request needs, e.g. `repository:ns/app:pull,push`. */
  scopes: string[];
  headers?: Record<string, string>;
  /**
   * A buffer or string is sent as is. A function opens a new stream for each
   * send, because a retry or a refreshed token sends the body again.
   */
  body?: Buffer | string | (() => BodyStream);
  signal?: AbortSignal;
  /** Whether 429, 500, 502, 503 and 504 are retried; true by default. */
  retry?: boolean;
  /** Called with the size of each piece of the body as it goes out. */
  onBodyBytes?: (bytes: number) => void;
  /** Largest response body accepted; `defaultMaxResponseBytes` unless given. */
  maxResponseBytes?: number;
}

/** An upload session that the registry opened with a POST. */
interface UploadSession {
  repository: string;
  blob: BlobSource;
  /** Absolute URL from the latest `Location` header. */
  url: string;
  /** `Docker-Upload-UUID` or `Blob-Upload-Session-ID`, for messages. */
  id?: string;
  /** `OCI-Chunk-Min-Length` of the POST response, or 0. */
  minChunkLength: number;
  /** Whether the registry stored the blob, after which a DELETE would be wrong. */
  completed: boolean;
  /** Bytes the registry acknowledged so far. */
  acknowledged: number;
  signal?: AbortSignal;
  onProgress?: (bytesSent: number) => void;
}

/**
 * Statuses that the client retries. The distribution spec calls 502, 503 and
 * 504 temporary and other 5xx terminal, and 429 reports rate limiting.
 * Registries also return 500 when their storage back end fails for a
 * moment, so 500 is retried too, within the same bound.
 */
const retryStatuses = new Set([429, 500, 502, 503, 504]);

/** Maximum upload sessions per blob. The spec requires a new session when the registry reports one as unknown (404). */
const maxUploadSessions = 3;

/** Chunk requests in a row that may fail to move the upload forward before it is given up. */
const maxStalledChunks = 3;

/** Size from which blobs are uploaded in chunks when no chunk size is set. */
export const autoChunkThreshold = 128 * 1024 * 1024;

/**
 * Chunk size of blobs of `autoChunkThreshold` bytes or more when no chunk
 * size is set. Chunks stream from the blob, so the size sets no memory use.
 * A small chunk loses little when an upload is cut, and finishes within the
 * grace given on Ctrl-C at 1 MB/s.
 */
export const autoChunkSize = 8 * 1024 * 1024;

/**
 * Time a chunk in flight may take to finish after the upload is cancelled.
 * A registry such as distribution 2.8 drops the whole session when a chunk
 * stops halfway, so finishing it keeps the session for a later run.
 */
const cancelGraceMs = 10_000;

/** Largest response body read, except for blobs: manifests, tokens and error bodies are far smaller. */
const defaultMaxResponseBytes = 16 * 1024 * 1024;

/** Redirects followed per request, as many as browsers allow. */
const maxRedirects = 20;

/** Slice of a buffer body handed to the socket at a time, so that each slice restarts the idle timer. */
const bodySliceSize = 1024 * 1024;

/** Whether a registry host is on this machine, where Docker allows plain HTTP. */
export function isLoopbackRegistry(registry: string): boolean {
  const host = registry.replace(/:\d+$/, "").replace(/^\[|\]$/g, "");
  return isLoopbackHost(host.toLowerCase());
}

export function sha256Digest(body: Buffer | string): string {
  return `sha256:${createHash("sha256").update(body).digest("hex")}`;
}

/**
 * Returns the delay that a `Retry-After` header requests, in milliseconds: a number
 * of seconds or an HTTP date (RFC 9110, section 10.2.3). Undefined when the
 * header is missing or invalid.
 */
export function parseRetryAfter(
  value: string | null,
  now = Date.now(),
): number | undefined {
  if (!value) return undefined;
  const trimmed = value.trim();
  if (/^\d+$/.test(trimmed)) return Number(trimmed) * 1000;
  const date = Date.parse(trimmed);
  if (Number.isNaN(date)) return undefined;
  return Math.max(0, date - now);
}

function formatSize(bytes: number): string {
  const mebibytes = bytes / (1024 * 1024);
  return mebibytes >= 1
    ? `${bytes} bytes (${mebibytes.toFixed(1)} MiB)`
    : `${bytes} bytes`;
}

function pushScopes(repository: string): string[] {
  return [`repository:${repository}:pull,push`];
}

/** Appends `digest=` to an upload URL and keeps its query string byte for byte. */
function withDigest(url: string, digest: string): string {
  const parsed = new URL(url);
  const separator = parsed.search ? "&" : "?";
  return `${parsed.origin}${parsed.pathname}${parsed.search}${separator}digest=${encodeURIComponent(digest)}`;
}

/**
 * Returns the end of a `Range: 0-END` upload header (`bytes=0-END` in older
 * spec versions), or undefined when the header is missing or invalid.
 */
function rangeEnd(response: HttpResponse): number | undefined {
  const value = response.headers.get("range");
  const match = value ? /^(?:bytes=)?0-(\d+)$/.exec(value.trim()) : null;
  return match ? Number(match[1]) : undefined;
}

async function discard(response: HttpResponse): Promise<void> {
  await response.discard();
}

function cancelled(registry: string, what = "upload"): PpaLoadError {
  return new PpaLoadError(
    "ABORTED",
    `the ${what} to ${registry} was cancelled`,
  );
}

function checkChunkSize(chunkSize: number | undefined): void {
  if (chunkSize === undefined) return;
  if (!Number.isSafeInteger(chunkSize) || chunkSize < 0) {
    throw new PpaLoadError(
      "USAGE",
      `invalid chunk size "${chunkSize}": use a whole number of bytes, or 0 for one request per blob`,
    );
  }
}

/** Returns the chunk size for a blob, or undefined for one PUT. */
function chunkSizeFor(blob: BlobSource, chunkSize: number | undefined) {
  if (chunkSize === 0) return undefined;
  if (chunkSize !== undefined) return chunkSize;
  return blob.size >= autoChunkThreshold ? autoChunkSize : undefined;
}

/**
 * Returns a signal that aborts `graceMs` after `signal` does, and a function
 * that stops watching `signal`.
 */
function delayedSignal(
  signal: AbortSignal | undefined,
  graceMs: number,
): { signal: AbortSignal | undefined; dispose: () => void } {
  if (!signal) return { signal: undefined, dispose: () => undefined };
  const controller = new AbortController();
  let timer: NodeJS.Timeout | undefined;
  const start = () => {
    timer = setTimeout(() => controller.abort(signal.reason), graceMs);
  };
  if (signal.aborted) start();
  else signal.addEventListener("abort", start, { once: true });
  return {
    signal: controller.signal,
    dispose: () => {
      signal.removeEventListener("abort", start);
      clearTimeout(timer);
    },
  };
}

/**
 * Tells whether an error, or one of its causes, is a failed connection
 * (reset, refused, broken pipe, timed out, aborted, or closed mid-response)
 * rather than an answer of the registry.
 */
export function isConnectionError(error: unknown): boolean {
  const codes = new Set([
    "ECONNRESET",
    "ECONNREFUSED",
    "EPIPE",
    "ETIMEDOUT",
    "ECONNABORTED",
  ]);
  for (let cause = error; cause instanceof Error; cause = cause.cause) {
    const code = (cause as NodeJS.ErrnoException).code;
    if (code && codes.has(code)) return true;
    if (/socket hang up|premature close/i.test(cause.message)) return true;
  }
  return false;
}

/**
 * A client of the OCI distribution API (the Docker registry HTTP API v2),
 * with basic and bearer-token authentication. Tokens are cached per scope
 * set and fetched again when they expire or the registry rejects them.
 */
export class RegistryClient {
  readonly registry: string;
  #baseUrl: string;
  #origin: string;
  /** Whether the scheme is the plain-HTTP default of a loopback host, which `ping` may change. */
  #loopbackDefault: boolean;
  readonly #credentials?: Credentials;
  readonly #transport: Transport;
  readonly #retry: Required<RetryOptions>;
  readonly #onRequest?: RegistryClientOptions["onRequest"];
  readonly #onRetry?: RegistryClientOptions["onRetry"];
  readonly #journal?: UploadJournal;
  readonly #onResume?: RegistryClientOptions["onResume"];
  readonly #onWarning?: RegistryClientOptions["onWarning"];
  readonly #idleTimeoutMs: number;
  #challenge: Challenge | undefined;
  /** The URL that sent each response, after redirects. */
  readonly #responseUrls = new WeakMap<HttpResponse, URL>();
  readonly #tokens = new Map<string, { token: string; expiresAt: number }>();

  constructor(options: RegistryClientOptions) {
    this.registry = options.registry;
    this.#loopbackDefault =
      options.scheme === undefined && isLoopbackRegistry(options.registry);
    const scheme = options.scheme ?? (this.#loopbackDefault ? "http" : "https");
    this.#baseUrl = `${scheme}://${options.registry}`;
    this.#origin = new URL(this.#baseUrl).origin;
    this.#credentials = options.credentials;
    this.#transport = new Transport({
      caCert: options.caCert,
      env: options.env,
    });
    this.#retry = {
      maxAttempts: options.retry?.maxAttempts ?? 5,
      baseDelayMs: options.retry?.baseDelayMs ?? 1000,
      maxDelayMs: options.retry?.maxDelayMs ?? 30_000,
    };
    this.#onRequest = options.onRequest;
    this.#onRetry = options.onRetry;
    this.#journal = options.journal;
    this.#onResume = options.onResume;
    this.#onWarning = options.onWarning;
    this.#idleTimeoutMs = options.idleTimeoutMs ?? 120_000;
  }

  /** Closes the pooled connections. The client can still send requests afterwards. */
  close(): void {
    this.#transport.destroy();
  }

  /** `SCHEME://HOST[:PORT]` of the registry. */
  get baseUrl(): string {
    return this.#baseUrl;
  }

  /**
   * Checks that the registry serves the API and accepts the credentials. A
   * loopback registry is tried with plain HTTP first, and with HTTPS when
   * its response shows that the port speaks HTTPS. Docker also tries both
   * schemes for these hosts.
   */
  async ping(signal?: AbortSignal): Promise<void> {
    try {
      const response = await this.#request("/v2/", { scopes: [], signal });
      await this.#expect(response, [200], "GET", "/v2/");
    } catch (error) {
      if (
        !this.#loopbackDefault ||
        !(error instanceof RegistryError) ||
        error.status !== 400 ||
        !error.speaksHttps
      ) {
        throw error;
      }
      this.#loopbackDefault = false;
      this.#baseUrl = `https://${this.registry}`;
      this.#origin = new URL(this.#baseUrl).origin;
      const response = await this.#request("/v2/", { scopes: [], signal });
      await this.#expect(response, [200], "GET", "/v2/");
    }
  }

  async getManifest(
    repository: string,
    reference: string,
  ): Promise<ManifestResult> {
    const path = `/v2/${repository}/manifests/${reference}`;
    const response = await this.#request(path, {
      scopes: [`repository:${repository}:pull`],
      headers: { accept: manifestAccept },
    });
    await this.#expect(response, [200], "GET", path);
    const body = await response.buffer();
    const mediaType = (response.headers.get("content-type") ?? "")
      .split(";")[0]
      .trim();
    return { mediaType, digest: sha256Digest(body), body };
  }

  /** Returns the descriptor of a manifest, or undefined when it does not exist. */
  async headManifest(
    repository: string,
    reference: string,
  ): Promise<ManifestDescriptor | undefined> {
    const path = `/v2/${repository}/manifests/${reference}`;
    const response = await this.#request(path, {
      method: "HEAD",
      scopes: [`repository:${repository}:pull`],
      headers: { accept: manifestAccept },
    });
    if (response.status === 404) return undefined;
    await this.#expect(response, [200], "HEAD", path);
    const digest = response.headers.get("docker-content-digest");
    if (!digest) {
      // Some registries omit the digest on HEAD; the body gives it.
      const manifest = await this.getManifest(repository, reference);
      return {
        mediaType: manifest.mediaType,
        digest: manifest.digest,
        size: manifest.body.length,
      };
    }
    return {
      mediaType: (response.headers.get("content-type") ?? "")
        .split(";")[0]
        .trim(),
      digest,
      size: Number(response.headers.get("content-length") ?? 0),
    };
  }

  /** Uploads a manifest under a tag or digest and returns its digest. */
  async putManifest(
    repository: string,
    reference: string,
    body: Buffer,
    mediaType: string,
  ): Promise<string> {
    const path = `/v2/${repository}/manifests/${reference}`;
    const response = await this.#request(path, {
      method: "PUT",
      scopes: pushScopes(repository),
      headers: { "content-type": mediaType },
      body,
    });
    await this.#expect(response, [201], "PUT", path);
    const digest = sha256Digest(body);
    const answered = response.headers.get("docker-content-digest");
    if (answered && answered !== digest) {
      throw new PpaLoadError(
        "REGISTRY",
        `${this.registry} stored the manifest for ${repository}:${reference} as ${answered}, but its bytes hash to ${digest}`,
      );
    }
    return digest;
  }

  /**
   * Opens a blob's bytes as a stream. Registries may answer with a redirect
   * to their storage, which is followed.
   */
  async getBlob(
    repository: string,
    digest: string,
  ): Promise<NodeJS.ReadableStream> {
    const path = `/v2/${repository}/blobs/${digest}`;
    const response = await this.#request(path, {
      scopes: [`repository:${repository}:pull`],
      maxResponseBytes: Number.POSITIVE_INFINITY,
    });
    await this.#expect(response, [200], "GET", path);
    if (!response.body) {
      throw new PpaLoadError(
        "REGISTRY",
        `${this.registry} answered GET ${path} without a body`,
      );
    }
    return response.body;
  }

  async hasBlob(repository: string, digest: string): Promise<boolean> {
    const path = `/v2/${repository}/blobs/${digest}`;
    const response = await this.#request(path, {
      method: "HEAD",
      scopes: [`repository:${repository}:pull`],
    });
    if (response.status === 404) return false;
    await this.#expect(response, [200], "HEAD", path);
    return true;
  }

  /**
   * Mounts a blob from another repository of the same registry. Returns false
   * when the registry declined to mount, in which case it has opened an
   * upload session that this call cancels.
   */
  async mountBlob(
    repository: string,
    digest: string,
    fromRepository: string,
  ): Promise<boolean> {
    const path = `/v2/${repository}/blobs/uploads/?mount=${encodeURIComponent(digest)}&from=${encodeURIComponent(fromRepository)}`;
    const response = await this.#request(path, {
      method: "POST",
      scopes: [
        `repository:${repository}:pull,push`,
        `repository:${fromRepository}:pull`,
      ],
    });
    await this.#expect(response, [201, 202], "POST", path);
    if (response.status === 201) return true;
    await discard(response);
    const location = response.headers.get("location");
    if (location) {
      await this.#request(new URL(location, this.#baseUrl + path).href, {
        method: "DELETE",
        scopes: pushScopes(repository),
        retry: false,
      })
        .then(discard)
        .catch(() => undefined);
    }
    return false;
  }

  /**
   * Uploads a blob held in memory unless the repository has it, and returns
   * its digest.
   */
  async pushBlob(repository: string, body: Buffer): Promise<string> {
    const digest = sha256Digest(body);
    if (await this.hasBlob(repository, digest)) return digest;
    await this.uploadBlob(repository, {
      digest,
      size: body.length,
      mediaType: "application/octet-stream",
      open: () => Readable.from([body]),
    });
    return digest;
  }

  /**
   * Uploads a blob: POST opens an upload session, then one PUT carries the
   * whole blob, or PATCH requests carry it in chunks and an empty PUT closes
   * the session (see UploadOptions.chunkSize).
   *
   * Each step follows the `Location` the registry returned last. After a 416
   * the chunk is sent again from the offset that a GET on the session
   * reports. Responses 429, 500, 502, 503 and 504 are retried after `Retry-After`
   * or a growing wait. A 401 that rejects a bearer token fetches a new token
   * and sends the body again from its first byte. A session that the registry
   * reports as unknown (404) is started over. The blob's bytes are checked
   * against its size and digest as they are read, and the digest that the
   * registry reports must match.
   *
   * With a journal, each acknowledged chunk is recorded, and an upload first
   * requests the size of the recorded session from the registry and sends
   * only the rest. A cancelled or disconnected upload with acknowledged
   * chunks keeps its session for that; any other failure cancels the session
   * with a DELETE.
   */
  async uploadBlob(
    repository: string,
    blob: BlobSource,
    options: UploadOptions = {},
  ): Promise<void> {
    checkChunkSize(options.chunkSize);
    for (let attempt = 1; ; attempt++) {
      try {
        await this.#uploadInSession(repository, blob, options);
        return;
      } catch (error) {
        const unknownSession =
          error instanceof RegistryError &&
          error.status === 404 &&
          error.method !== "POST" &&
          (error.errors.length === 0 || error.has("BLOB_UPLOAD_UNKNOWN"));
        if (!unknownSession || attempt >= maxUploadSessions) throw error;
        this.#onRetry?.({
          method: error.method,
          url: error.url,
          status: error.status,
          attempt,
          delayMs: 0,
        });
      }
    }
  }

  async #uploadInSession(
    repository: string,
    blob: BlobSource,
    options: UploadOptions,
  ): Promise<void> {
    const chunkSize = chunkSizeFor(blob, options.chunkSize);
    const resumed = await this.#resumeSession(repository, blob, options.signal);
    const session =
      resumed?.session ??
      (await this.#startUpload(repository, blob, options.signal));
    session.onProgress = options.onProgress;
    try {
      // The spec's minimum applies to every chunk but the last. One PUT of the
      // whole blob is a single, final chunk, so the minimum does not apply.
      // A resumed session sends the rest as chunks, because only a PATCH
      // states where its bytes start.
      const response =
        chunkSize === undefined && !resumed
          ? await this.#putWhole(session)
          : await this.#putChunks(
              session,
              Math.max(chunkSize ?? blob.size, session.minChunkLength, 1),
              resumed?.offset ?? 0,
            );
      this.#checkStoredDigest(session, response);
    } catch (error) {
      if (!session.completed) {
        const keep =
          session.acknowledged > 0 &&
          this.#journal !== undefined &&
          (options.signal?.aborted === true || isConnectionError(error));
        if (!keep) {
          await this.#cancelUpload(session);
          await this.#journal?.remove(this.registry, repository, blob.digest);
        }
      }
      throw error;
    }
    await this.#journal?.remove(this.registry, repository, blob.digest);
  }

  /**
   * Opens the journal's session of the blob again and returns it with the
   * number of bytes the registry holds, or undefined when there is no
   * session or the registry no longer has it.
   */
  async #resumeSession(
    repository: string,
    blob: BlobSource,
    signal: AbortSignal | undefined,
  ): Promise<{ session: UploadSession; offset: number } | undefined> {
    const entry = this.#journal?.find(this.registry, repository, blob.digest);
    if (!entry) return undefined;
    const session: UploadSession = {
      repository,
      blob,
      url: entry.url,
      minChunkLength: 0,
      completed: false,
      acknowledged: entry.offset,
      signal,
    };
    let offset: number | undefined;
    try {
      const response = await this.#request(entry.url, {
        scopes: pushScopes(repository),
        signal,
      });
      await discard(response);
      if (response.status === 204 || response.status === 200) {
        this.#follow(session, response, entry.url);
        const end = rangeEnd(response);
        // "0-0" is ambiguous (nothing, or one byte), so it counts as nothing.
        offset = end === undefined || end === 0 ? undefined : end + 1;
      }
    } catch (error) {
      if (signal?.aborted) throw error;
      offset = undefined;
    }
    if (offset === undefined || offset > blob.size) {
      await this.#journal!.remove(this.registry, repository, blob.digest);
      this.#onResume?.({
        repository,
        digest: blob.digest,
        size: blob.size,
        outcome: "expired",
        offset: entry.offset,
      });
      return undefined;
    }
    session.acknowledged = offset;
    this.#onResume?.({
      repository,
      digest: blob.digest,
      size: blob.size,
      outcome: "resumed",
      offset,
    });
    return { session, offset };
  }

  async #startUpload(
    repository: string,
    blob: BlobSource,
    signal: AbortSignal | undefined,
  ): Promise<UploadSession> {
    if (signal?.aborted) throw cancelled(this.registry);
    const url = `${this.#baseUrl}/v2/${repository}/blobs/uploads/`;
    const response = await this.#request(url, {
      method: "POST",
      scopes: pushScopes(repository),
      signal,
    });
    const session: UploadSession = {
      repository,
      blob,
      url,
      minChunkLength: 0,
      completed: false,
      acknowledged: 0,
      signal,
    };
    if (response.status !== 202) {
      throw await this.#uploadFailure(response, session, "POST", url, 0);
    }
    await discard(response);
    if (!response.headers.get("location")) {
      throw new PpaLoadError(
        "REGISTRY",
        `${this.registry} opened an upload in ${repository} without a Location header`,
        {
          hint: "the registry or a proxy in front of it breaks the distribution API; check the --registry address",
        },
      );
    }
    this.#follow(session, response, url);
    const minimum = Number(response.headers.get("oci-chunk-min-length"));
    if (Number.isSafeInteger(minimum) && minimum > 0) {
      session.minChunkLength = minimum;
    }
    return session;
  }

  /** Moves the session to the response's `Location`, resolved against the request URL (RFC 9110, section 10.2.2). */
  #follow(session: UploadSession, response: HttpResponse, requestUrl: string) {
    const location = response.headers.get("location");
    if (location) {
      let next: URL | undefined;
      try {
        next = new URL(location, requestUrl);
      } catch {
        next = undefined;
      }
      if (next?.protocol !== "http:" && next?.protocol !== "https:") {
        throw new PpaLoadError(
          "REGISTRY",
          `${this.registry} gave the upload of blob ${session.blob.digest} in ${session.repository} a Location that is not an http or https URL: ${JSON.stringify(location.slice(0, 200))}`,
          {
            hint: "the registry or a proxy in front of it breaks the distribution API; check the --registry address and the registry's http.host setting",
          },
        );
      }
      session.url = next.href;
    }
    session.id =
      response.headers.get("docker-upload-uuid") ??
      response.headers.get("blob-upload-session-id") ??
      session.id;
  }

  /** Sends the whole blob in the PUT that closes the session. */
  async #putWhole(session: UploadSession): Promise<HttpResponse> {
    const { blob } = session;
    const url = withDigest(session.url, blob.digest);
    let body: BlobStream | undefined;
    let sent = 0;
    const response = await this.#request(url, {
      method: "PUT",
      scopes: pushScopes(session.repository),
      headers: {
        "content-type": "application/octet-stream",
        "content-length": String(blob.size),
      },
      body: () => {
        sent = 0;
        return (body = new BlobStream(blob));
      },
      signal: session.signal,
      onBodyBytes: (bytes) => session.onProgress?.((sent += bytes)),
    });
    // A failed read or check of the blob explains whatever status the
    // registry returned, so it is reported first.
    if (body?.failure) throw body.failure;
    if (response.status !== 201 && response.status !== 204) {
      throw await this.#uploadFailure(response, session, "PUT", url, blob.size);
    }
    session.completed = true;
    return response;
  }

  /**
   * Sends the blob from byte `start` in PATCH requests of `chunkSize` bytes,
   * then closes the session with an empty PUT. A chunk in flight when the
   * upload is cancelled gets `cancelGraceMs` to finish.
   */
  async #putChunks(
    session: UploadSession,
    chunkSize: number,
    start: number,
  ): Promise<HttpResponse> {
    const { blob } = session;
    const scopes = pushScopes(session.repository);
    const reader = new BlobReader(blob);
    const chunkSignal = delayedSignal(session.signal, cancelGraceMs);
    try {
      let offset = start;
      let furthest = start;
      let stalled = 0;
      while (offset < blob.size) {
        if (session.signal?.aborted) throw cancelled(this.registry);
        const length = Math.min(chunkSize, blob.size - offset);
        const url = session.url;
        const first = offset;
        const last = offset + length - 1;
        let sent = offset;
        let body: BodyStream | undefined;
        const response = await this.#request(url, {
          method: "PATCH",
          scopes,
          headers: {
            "content-type": "application/octet-stream",
            "content-length": String(length),
            "content-range": `${offset}-${last}`,
          },
          body: () => {
            sent = first;
            return (body = reader.slice(first, length));
          },
          signal: chunkSignal.signal,
          onBodyBytes: (bytes) => session.onProgress?.((sent += bytes)),
        });
        // A failed read or check of the blob explains whatever status the
        // registry returned, so it is reported first.
        if (body?.failure) throw body.failure;
        let next: number;
        if (response.status === 202 || response.status === 204) {
          await discard(response);
          this.#follow(session, response, url);
          next = await this.#acknowledgedOffset(
            session,
            response,
            offset,
            last,
          );
        } else if (response.status === 416) {
          await discard(response);
          this.#follow(session, response, url);
          next = await this.#uploadOffset(session);
        } else {
          throw await this.#uploadFailure(
            response,
            session,
            "PATCH",
            url,
            length,
          );
        }
        session.acknowledged = next;
        if (next > 0 && next < blob.size) {
          await this.#journal?.record({
            registry: this.registry,
            repository: session.repository,
            digest: blob.digest,
            size: blob.size,
            url: session.url,
            offset: next,
          });
        }
        // Progress counts only past the furthest offset reached, so a
        // registry whose acknowledgements go back and forth still stops.
        stalled = next > furthest ? 0 : stalled + 1;
        furthest = Math.max(furthest, next);
        if (stalled >= maxStalledChunks) {
          throw new PpaLoadError(
            "REGISTRY",
            `${this.registry} made no progress on blob ${blob.digest} past byte ${next} in ${maxStalledChunks} PATCH requests in a row (upload ${session.id ?? redactUrl(session.url)})`,
            {
              hint: "run the import again without --chunk-size, or with a larger value",
            },
          );
        }
        offset = next;
      }
      // Reads what the registry took without this reader, so that the size
      // and digest checks see every byte before the session is closed.
      await reader.finish();
    } finally {
      chunkSignal.dispose();
      reader.close();
    }

    const url = withDigest(session.url, blob.digest);
    const response = await this.#request(url, {
      method: "PUT",
      scopes,
      signal: session.signal,
    });
    if (response.status !== 201 && response.status !== 204) {
      throw await this.#uploadFailure(response, session, "PUT", url, 0);
    }
    session.completed = true;
    return response;
  }

  /** Returns the offset after the bytes that a PATCH response acknowledges. */
  async #acknowledgedOffset(
    session: UploadSession,
    response: HttpResponse,
    offset: number,
    last: number,
  ): Promise<number> {
    // Without a Range header, the registry took the whole chunk. With one
    // that cannot be read, it is asked how much it holds.
    if (!response.headers.has("range")) return last + 1;
    const end = rangeEnd(response);
    if (end === undefined) return this.#uploadOffset(session);
    if (end > last) {
      throw new PpaLoadError(
        "REGISTRY",
        `${this.registry} acknowledged bytes 0-${end} of blob ${session.blob.digest}, but only bytes up to ${last} were sent`,
        {
          hint: "the registry breaks the distribution API; run the import again without --chunk-size",
        },
      );
    }
    // "0-0" is also how registries report an empty upload, which is what it
    // means when the chunk did not start at byte 0.
    return end === 0 && offset > 0 ? 0 : end + 1;
  }

  /** Returns how many bytes the session holds, from a GET on its URL. */
  async #uploadOffset(session: UploadSession): Promise<number> {
    const url = session.url;
    const response = await this.#request(url, {
      scopes: pushScopes(session.repository),
      signal: session.signal,
    });
    if (response.status !== 204 && response.status !== 200) {
      throw await this.#uploadFailure(response, session, "GET", url, 0);
    }
    await discard(response);
    this.#follow(session, response, url);
    const end = rangeEnd(response);
    if (end === undefined) {
      throw new PpaLoadError(
        "REGISTRY",
        `${this.registry} did not report how much of blob ${session.blob.digest} it holds: its response to GET ${redactUrl(url)} has no valid Range header`,
        { hint: "run the import again without --chunk-size" },
      );
    }
    if (end + 1 > session.blob.size) {
      throw new PpaLoadError(
        "REGISTRY",
        `${this.registry} reported holding bytes 0-${end} of blob ${session.blob.digest}, which has only ${session.blob.size} bytes (response to GET ${redactUrl(url)})`,
        {
          hint: "the registry breaks the distribution API; run the import again without --chunk-size",
        },
      );
    }
    // NOTE: "0-0" means no bytes or one byte; it is read as no bytes. After
    // one byte the registry rejects the resent chunk, and the stall check
    // ends the upload.
    return end === 0 ? 0 : end + 1;
  }

  #checkStoredDigest(session: UploadSession, response: HttpResponse): void {
    const stored = response.headers.get("docker-content-digest");
    if (stored && stored !== session.blob.digest) {
      throw new PpaLoadError(
        "REGISTRY",
        `${this.registry} stored blob ${session.blob.digest} in ${session.repository} under the digest ${stored}`,
        {
          hint: "the registry or a proxy changed the uploaded bytes; run the import again",
        },
      );
    }
  }

  /**
   * Cancels the journal's upload sessions on this registry that no run has
   * touched for `olderThanMs` (a week by default, when distribution purges
   * them anyway), and removes them from the journal. Newer sessions may belong to another
   * import that shares the output folder, or to its next run.
   */
  async cancelRecordedUploads(
    olderThanMs = 7 * 24 * 60 * 60 * 1000,
  ): Promise<void> {
    const cutoff = Date.now() - olderThanMs;
    for (const entry of this.#journal?.entries() ?? []) {
      if (entry.registry !== this.registry) continue;
      if (Date.parse(entry.updated) > cutoff) continue;
      await this.#request(entry.url, {
        method: "DELETE",
        scopes: pushScopes(entry.repository),
        retry: false,
      })
        .then(discard)
        .catch(() => undefined);
      await this.#journal!.remove(
        entry.registry,
        entry.repository,
        entry.digest,
      );
    }
  }

  /** Cancels an upload session. The spec says to ignore failures of the DELETE. */
  async #cancelUpload(session: UploadSession): Promise<void> {
    await this.#request(session.url, {
      method: "DELETE",
      scopes: pushScopes(session.repository),
      retry: false,
    })
      .then(discard)
      .catch(() => undefined);
  }

  /** Builds the error for a failed upload step, with the blob in the message. */
  async #uploadFailure(
    response: HttpResponse,
    session: UploadSession,
    method: string,
    url: string,
    requestSize: number,
  ): Promise<RegistryError> {
    const { blob } = session;
    const body = await response.text().catch(() => "");
    const errors = decodeErrorBody(body);
    const codes = new Set(errors.map((e) => e.code));
    let context = `uploading blob ${blob.digest} of ${formatSize(blob.size)} to ${session.repository}`;
    let hint: string | undefined;
    if (response.status === 413) {
      context += ` in a request of ${formatSize(requestSize)}`;
      hint = `a proxy in front of ${this.registry}, or the registry itself, rejected a request body of ${formatSize(requestSize)}; `;
      if (method !== "PATCH") {
        hint += `raise the proxy's body-size limit (client_max_body_size in nginx), or upload in chunks with --chunk-size below ${requestSize} bytes`;
      } else if (session.minChunkLength >= requestSize) {
        hint += `the registry requires chunks of at least ${session.minChunkLength} bytes (OCI-Chunk-Min-Length), so raise the proxy's body-size limit (client_max_body_size in nginx)`;
      } else {
        hint += `raise the proxy's body-size limit (client_max_body_size in nginx), or set --chunk-size below ${requestSize} bytes`;
      }
    } else if (codes.has("DIGEST_INVALID")) {
      hint = `the bytes read here hash to ${blob.digest}, so something between this machine and ${this.registry}, such as a proxy, changed them; run the import again`;
    } else if (response.status === 401) {
      hint = this.#unauthorizedHint();
    }
    return new RegistryError({
      method,
      url: redactUrl(url),
      status: response.status,
      errors,
      body,
      hint,
      context,
    });
  }

  async #expect(
    response: HttpResponse,
    statuses: number[],
    method: string,
    path: string,
  ): Promise<void> {
    if (statuses.includes(response.status)) return;
    const body = method === "HEAD" ? "" : await response.text().catch(() => "");
    throw new RegistryError({
      method,
      url: redactUrl(new URL(path, this.#baseUrl).toString()),
      status: response.status,
      errors: decodeErrorBody(body),
      body,
      hint: response.status === 401 ? this.#unauthorizedHint() : undefined,
    });
  }

  #unauthorizedHint(): string {
    if (this.#credentials?.source === "--username") {
      return `${this.registry} rejected the user and password given with --username and --password-stdin; check them`;
    }
    if (this.#credentials) {
      return `${this.registry} rejected the credentials from ${this.#credentials.source}; check them, or log in again with docker login ${this.registry}`;
    }
    return `log in with docker login ${this.registry}, or give --username and --password-stdin`;
  }

  async #authorization(
    scopes: string[],
    signal?: AbortSignal,
  ): Promise<string | undefined> {
    const challenge = this.#challenge;
    if (!challenge) return undefined;
    if (challenge.scheme === "basic") return basicHeader(this.#credentials);
    if (challenge.scheme !== "bearer") return undefined;
    const key = scopes.join(" ");
    let cached = this.#tokens.get(key);
    if (!cached || cached.expiresAt <= Date.now()) {
      cached = await fetchToken(challenge, scopes, this.#credentials, {
        transport: this.#transport,
        timeoutMs: 2 * this.#idleTimeoutMs,
        signal,
      });
      this.#tokens.set(key, cached);
    }
    return `Bearer ${cached.token}`;
  }

  /** Sends a request, retrying 429, 500, 502, 503 and 504 a bounded number of times. */
  async #request(path: string, options: RequestOptions): Promise<HttpResponse> {
    const url = /^https?:/.test(path) ? path : `${this.#baseUrl}${path}`;
    const method = options.method ?? "GET";
    const maxAttempts = options.retry === false ? 1 : this.#retry.maxAttempts;
    for (let attempt = 1; ; attempt++) {
      const response = await this.#authenticatedRequest(url, method, options);
      if (!retryStatuses.has(response.status) || attempt >= maxAttempts) {
        return response;
      }
      const delayMs = Math.min(
        parseRetryAfter(response.headers.get("retry-after")) ??
          this.#retry.baseDelayMs * 2 ** (attempt - 1),
        this.#retry.maxDelayMs,
      );
      await discard(response);
      this.#onRetry?.({
        method,
        url: redactUrl(url),
        status: response.status,
        attempt,
        delayMs,
      });
      try {
        await sleep(delayMs, undefined, { signal: options.signal });
      } catch {
        throw cancelled(this.registry);
      }
    }
  }

  /** Sends a request, and once more with new credentials after a 401 from the registry. */
  async #authenticatedRequest(
    url: string,
    method: string,
    options: RequestOptions,
  ): Promise<HttpResponse> {
    let response = await this.#send(url, method, options);
    // Credentials go only to the registry's own origin, never to another host
    // that a Location header names. A 401 after a redirect comes from the
    // redirect's target, so it is not the registry's own challenge.
    const answeredBy = this.#responseUrls.get(response) ?? new URL(url);
    if (response.status !== 401 || answeredBy.origin !== this.#origin) {
      return response;
    }

    const header = response.headers.get("www-authenticate");
    const challenge = header ? parseChallenge(header) : undefined;
    if (!challenge) return response;
    const isNewChallenge =
      !this.#challenge ||
      this.#challenge.scheme !== challenge.scheme ||
      this.#challenge.params.realm !== challenge.params.realm;
    if (challenge.scheme === "basic" && !this.#credentials) {
      throw new RegistryError({
        method,
        url: redactUrl(url),
        status: 401,
        errors: [
          {
            code: "UNAUTHORIZED",
            message: `${this.registry} requires credentials`,
          },
        ],
        hint: this.#unauthorizedHint(),
      });
    }
    // A bearer token may lack a scope the request needs, or may have been
    // revoked before it expired; ask for a new one.
    this.#tokens.delete(options.scopes.join(" "));
    if (!isNewChallenge && challenge.scheme === "basic") return response;
    if (isNewChallenge && challenge.scheme === "bearer") {
      const warning = plainHttpRealmWarning(
        challenge.params.realm ?? "",
        this.#baseUrl,
        this.#credentials,
      );
      if (warning) this.#onWarning?.(warning);
    }
    this.#challenge = challenge;
    await discard(response);
    response = await this.#send(url, method, options);
    return response;
  }

  /**
   * Sends a request and follows up to `maxRedirects` redirects. Credentials
   * go only to the registry's own origin (scheme, host and port), so a
   * redirect to storage elsewhere, even on another port of the same host,
   * gets none.
   */
  async #send(
    url: string,
    method: string,
    options: RequestOptions,
  ): Promise<HttpResponse> {
    let target = new URL(url);
    let currentMethod = method;
    let current = options;
    for (let redirects = 0; ; redirects++) {
      const response = await this.#sendOnce(target, currentMethod, current);
      const redirect = redirectOf(response, target, currentMethod);
      if (!redirect) {
        this.#responseUrls.set(response, target);
        return response;
      }
      await discard(response);
      if (redirects >= maxRedirects) {
        throw new PpaLoadError(
          "REGISTRY",
          `${this.registry} redirected ${currentMethod} ${redactUrl(url)} more than ${maxRedirects} times`,
          {
            hint: "the registry or a proxy in front of it redirects in a loop; check the --registry address",
          },
        );
      }
      if (!redirect.url) {
        throw new PpaLoadError(
          "REGISTRY",
          `${this.registry} redirected ${currentMethod} ${redactUrl(target.href)} to a location that is not an http or https URL`,
          {
            hint: "the registry or a proxy in front of it is misconfigured; check the --registry address",
          },
        );
      }
      if (redirect.dropsBody) {
        current = { ...current, body: undefined, headers: {} };
      }
      currentMethod = redirect.method;
      target = redirect.url;
    }
  }

  /**
   * Returns the response with a body that fails when it stays silent for
   * the idle timeout, or grows past `maxResponseBytes`, so that a stalled
   * or endless body cannot hang the import or fill memory.
   */
  #guardBody(
    response: HttpResponse,
    target: URL,
    method: string,
    options: RequestOptions,
    timer: NodeJS.Timeout,
    setOnIdle: (fail: () => void) => void,
  ): HttpResponse {
    const source = response.body;
    if (!source) {
      clearTimeout(timer);
      return response;
    }
    const limit = options.maxResponseBytes ?? defaultMaxResponseBytes;
    const registry = this.registry;
    let received = 0;
    const guarded = new Transform({
      transform(chunk: Buffer, _encoding, callback) {
        timer.refresh();
        received += chunk.length;
        if (received > limit) {
          callback(
            new PpaLoadError(
              "REGISTRY",
              `${registry} sent more than ${formatSize(limit)} in its response to ${method} ${redactUrl(target.href)}`,
              {
                hint: "the registry or a proxy in front of it sent an unexpected response; check the --registry address",
              },
            ),
          );
          return;
        }
        callback(null, chunk);
      },
    });
    setOnIdle(() => guarded.destroy(this.#timedOut(target, method)));
    // A body that trickles in restarts the idle timer with each byte, so
    // every body but a blob's also has a deadline for the whole of it.
    const deadline = Number.isFinite(limit)
      ? setTimeout(
          () => guarded.destroy(this.#tooSlow(target, method)),
          2 * this.#idleTimeoutMs,
        )
      : undefined;
    deadline?.unref();
    // Readers of the body receive its errors. A body that is never read must
    // not turn them into an uncaught exception.
    guarded.on("error", () => undefined);
    source.on("error", (error) =>
      guarded.destroy(
        error instanceof PpaLoadError
          ? error
          : new PpaLoadError(
              "REGISTRY",
              `the response of ${this.registry} to ${method} ${redactUrl(target.href)} broke off: ${errorMessage(error)}`,
              {
                cause: error,
                hint: "check that the registry and any proxy in front of it are healthy, then run the import again",
              },
            ),
      ),
    );
    guarded.on("close", () => {
      clearTimeout(timer);
      clearTimeout(deadline);
    });
    (source as Readable).pipe(guarded);
    return new HttpResponse(guarded, {
      status: response.status,
      statusText: response.statusText,
      headers: response.headers,
    });
  }

  /** Sends one request, without following a redirect. */
  async #sendOnce(
    target: URL,
    method: string,
    options: RequestOptions,
  ): Promise<HttpResponse> {
    const url = target.href;
    // Resolving the agent first reports a bad proxy variable as it is.
    this.#transport.agentFor(target);
    const headers: Record<string, string> = {
      "user-agent": "ppa-load",
      ...options.headers,
    };
    if (target.origin === this.#origin) {
      const authorization = await this.#authorization(
        options.scopes,
        options.signal,
      );
      if (authorization) headers.authorization = authorization;
    }
    const stream =
      typeof options.body === "function" ? options.body() : undefined;
    if (stream?.ready) {
      try {
        await stream.ready();
      } catch (error) {
        stream.destroy();
        throw stream.failure ?? error;
      }
    }
    // An error of the body stream also ends the request; this listener keeps
    // it from being reported as unhandled when the response came first.
    stream?.on("error", () => undefined);
    // The idle timer restarts whenever the socket takes another piece of
    // the body, so a large upload on a slow link does not time out.
    const idle = new AbortController();
    // Before the headers arrive the timer aborts the request; after, it
    // fails the response body, whose reading has no deadline of its own.
    let onIdle = () => idle.abort();
    const timer = setTimeout(() => onIdle(), this.#idleTimeoutMs);
    // An open socket keeps the process alive while a request waits. The
    // timer alone must not, e.g. for a body that is never read.
    timer.unref();
    const onBodyBytes = options.onBodyBytes;
    const touch = new Transform({
      transform(chunk: Buffer, _encoding, callback) {
        timer.refresh();
        onBodyBytes?.(chunk.length);
        callback(null, chunk);
      },
    });
    let body: Readable | Buffer | string | undefined;
    if (stream) {
      stream.on("error", (error) => touch.destroy(error));
      body = stream.pipe(touch);
    } else if (
      Buffer.isBuffer(options.body) &&
      (options.body.length > bodySliceSize || onBodyBytes)
    ) {
      headers["content-length"] = String(options.body.length);
      body = Readable.from(slices(options.body, bodySliceSize)).pipe(touch);
    } else {
      body = options.body as Buffer | string | undefined;
    }
    const signal = options.signal
      ? AbortSignal.any([options.signal, idle.signal])
      : idle.signal;
    const init: HttpRequestInit = {
      method,
      headers,
      body,
      // httpRequest returns redirects; #send follows them and decides where
      // credentials go.
      agent: (requested: URL) => this.#transport.agentFor(requested),
      signal,
    };
    let response: HttpResponse;
    try {
      response = await httpRequest(url, init);
    } catch (error) {
      clearTimeout(timer);
      stream?.destroy();
      if (stream?.failure) throw stream.failure;
      if (options.signal?.aborted) {
        throw cancelled(
          this.registry,
          method === "GET" || method === "HEAD"
            ? `${method} request`
            : "upload",
        );
      }
      if (idle.signal.aborted) throw this.#timedOut(target, method);
      throw this.#unreachable(target, method, error);
    }
    this.#onRequest?.({ method, url: redactUrl(url), status: response.status });
    response = this.#guardBody(
      response,
      target,
      method,
      options,
      timer,
      (fail) => {
        onIdle = fail;
      },
    );
    if (stream && !stream.readableEnded) {
      // The registry responded before it read the whole body, so sending the
      // rest would be wasted. The Range of an early PATCH response gives how
      // much arrived. The response is read first, because stopping the body
      // ends the connection.
      const answer = await response.buffer().catch(() => Buffer.alloc(0));
      clearTimeout(timer);
      stream.destroy();
      touch.destroy();
      response = new HttpResponse(answer, {
        status: response.status,
        statusText: response.statusText,
        headers: response.headers,
      });
    }
    return response;
  }

  #timedOut(target: URL, method: string): PpaLoadError {
    const seconds = Math.round(this.#idleTimeoutMs / 1000);
    // ETIMEDOUT marks it as a connection failure, which callers retry.
    const cause = Object.assign(new Error(`no data moved for ${seconds} s`), {
      code: "ETIMEDOUT",
    });
    return new PpaLoadError(
      "REGISTRY",
      `${method} ${redactUrl(target.href)} timed out: ${this.registry} sent and took no data for ${seconds} s`,
      {
        cause,
        hint: "check that the registry and any proxy in front of it are healthy, then run the import again; it continues where it stopped",
      },
    );
  }

  #tooSlow(target: URL, method: string): PpaLoadError {
    const seconds = Math.round((2 * this.#idleTimeoutMs) / 1000);
    // ETIMEDOUT marks it as a connection failure, which callers retry.
    const cause = Object.assign(
      new Error(`the response took more than ${seconds} s`),
      { code: "ETIMEDOUT" },
    );
    return new PpaLoadError(
      "REGISTRY",
      `${method} ${redactUrl(target.href)} timed out: ${this.registry} took more than ${seconds} s to send its response`,
      {
        cause,
        hint: "check that the registry and any proxy in front of it are healthy; the limit is twice --request-timeout",
      },
    );
  }

  #unreachable(target: URL, method: string, error: unknown): PpaLoadError {
    const code = (error as { code?: unknown }).code;
    const certificateProblem =
      (typeof code === "string" && /CERT|SELF_SIGNED|ALTNAME/.test(code)) ||
      /certificate/i.test(errorMessage(error));
    const proxy = this.#transport.proxyFor(target);
    const plainHttpServer =
      code === "ERR_SSL_WRONG_VERSION_NUMBER" ||
      /wrong version number/i.test(errorMessage(error));
    const droppedUpload =
      (method === "PUT" || method === "PATCH") &&
      isConnectionError(error) &&
      code !== "ECONNREFUSED";
    if (typeof code === "string" && code.startsWith("HPE_")) {
      return new PpaLoadError(
        "REGISTRY",
        `${target.host} answered ${method} ${redactUrl(target.href)} with a response that is not valid HTTP: ${errorMessage(error)}`,
        {
          cause: error,
          hint: "check the --registry address and any proxy in front of the registry; the server there does not speak HTTP correctly",
        },
      );
    }
    let hint: string;
    if (plainHttpServer) {
      hint = `${target.host} answered in plain HTTP where HTTPS was expected; add --insecure if the registry speaks plain HTTP`;
    } else if (droppedUpload) {
      hint = `the connection closed while the upload was in flight, although ${this.registry} answered other requests; a proxy or load balancer in front of it may limit the size or duration of a request, so upload in chunks with --chunk-size (e.g. 16MiB) or raise that limit`;
    } else if (certificateProblem) {
      hint = `if a private CA signed the certificate of ${target.host}, give its PEM file with --ca-cert`;
    } else if (proxy) {
      hint = `the request went through the proxy ${redactUrl(proxy.href)}; check that the proxy is running and lets ${target.host} through, or add ${target.hostname} to NO_PROXY`;
    } else if (target.protocol === "https:") {
      hint =
        "check the registry address; for a registry that speaks plain HTTP, add --insecure";
    } else {
      hint = "check the registry address and that it is running";
    }
    // OpenSSL's text for this case spans lines and names internal routines.
    const reason = plainHttpServer
      ? "the TLS handshake failed because the server answered in plain HTTP"
      : errorMessage(error)
          .replace(/\s*\n\s*/g, " ")
          .trim();
    return new PpaLoadError(
      "REGISTRY",
      `cannot reach ${this.registry} (${method} ${redactUrl(target.href)}): ${reason}`,
      { cause: error, hint },
    );
  }
}

function* slices(buffer: Buffer, size: number): Generator<Buffer> {
  for (let start = 0; start < buffer.length; start += size) {
    yield buffer.subarray(start, start + size);
  }
}

const noBytes = Buffer.alloc(0);

/**
 * A stream of a blob's bytes that fails, and records why, when the bytes
 * cannot be read or do not match the blob's size or digest.
 */
class BlobStream extends Transform {
  readonly #blob: BlobSource;
  readonly #hash = createHash("sha256");
  #bytes = 0;
  failure: PpaLoadError | undefined;

  constructor(blob: BlobSource) {
    super();
    this.#blob = blob;
    let source: Readable;
    try {
      source = blob.open();
    } catch (error) {
      process.nextTick(() => this.destroy(this.#fail(readError(blob, error))));
      return;
    }
    source.on("error", (error) =>
      this.destroy(this.#fail(readError(blob, error))),
    );
    this.on("close", () => source.destroy());
    source.pipe(this);
  }

  override _transform(
    chunk: Buffer,
    _encoding: BufferEncoding,
    callback: TransformCallback,
  ): void {
    this.#bytes += chunk.length;
    if (this.#bytes > this.#blob.size) {
      callback(
        this.#fail(sizeError(this.#blob, `more than ${this.#blob.size}`)),
      );
      return;
    }
    this.#hash.update(chunk);
    callback(null, chunk);
  }

  override _flush(callback: TransformCallback): void {
    if (this.#bytes !== this.#blob.size) {
      callback(this.#fail(sizeError(this.#blob, String(this.#bytes))));
      return;
    }
    const digest = `sha256:${this.#hash.digest("hex")}`;
    if (digest !== this.#blob.digest) {
      callback(
        this.#fail(
          new PpaLoadError(
            "REGISTRY",
            `the bytes of blob ${this.#blob.digest} hash to ${digest}, so they do not match the blob's digest`,
            {
              hint: "the blob's source changed or was damaged after its digest was computed; run the import again",
            },
          ),
        ),
      );
      return;
    }
    callback();
  }

  #fail(error: PpaLoadError): PpaLoadError {
    this.failure ??= error;
    return this.failure;
  }
}

function readError(blob: BlobSource, error: unknown): PpaLoadError {
  return new PpaLoadError(
    "REGISTRY",
    `cannot read blob ${blob.digest}: ${errorMessage(error)}`,
    { cause: error },
  );
}

function sizeError(blob: BlobSource, read: string): PpaLoadError {
  return new PpaLoadError(
    "REGISTRY",
    `blob ${blob.digest} should be ${blob.size} bytes, but ${read} bytes were read`,
    {
      hint: "the blob's source changed or was damaged after its size was taken; run the import again",
    },
  );
}

/**
 * Reads a blob front to back in slices, for chunked uploads. Each slice is a
 * stream, so a chunk is never held in memory whole. Going back to an earlier
 * offset (a retried chunk, or a registry that kept only part of one) reads
 * the blob again from its first byte. Every byte passes through a
 * `BlobStream`, so the reader fails when the blob does not match its size or
 * digest.
 */
class BlobReader {
  readonly #blob: BlobSource;
  #stream: BlobStream | undefined;
  #chunks: AsyncIterator<Buffer> | undefined;
  /** Bytes read from the stream but not yet returned or skipped. */
  #pending: Buffer = noBytes;
  /** Offset in the blob of the first pending byte. */
  #position = 0;
  /** Number of the newest slice. Only that slice may read. */
  #newest = 0;
  /** Settles when the read in progress does, so that reads never overlap. */
  #lock: Promise<unknown> = Promise.resolve();

  constructor(blob: BlobSource) {
    this.#blob = blob;
  }

  /**
   * Returns a stream of `length` bytes from `offset` on. Opening a slice
   * stops the slices opened before it, because they would take its bytes.
   */
  slice(offset: number, length: number): BlobSlice {
    const number = ++this.#newest;
    const check = () => {
      if (number !== this.#newest) {
        throw new Error("a newer slice of the blob replaced this one");
      }
    };
    let started = false;
    let remaining = length;
    const start = async () => {
      check();
      if (started) return;
      started = true;
      if (!this.#chunks || offset < this.#position) this.#open();
      await this.#advance(offset - this.#position);
    };
    return new BlobSlice(
      () => this.#exclusive(start),
      () =>
        this.#exclusive(async () => {
          await start();
          check();
          if (remaining === 0) return null;
          await this.#fill();
          check();
          const piece = this.#pending.subarray(0, remaining);
          // The piece is released once sent, the chunk once all of it is.
          retain(piece);
          this.#consume(piece.length);
          remaining -= piece.length;
          return piece;
        }),
    );
  }

  /** Runs `task` once the reads before it have settled. */
  #exclusive<T>(task: () => Promise<T>): Promise<T> {
    const result = this.#lock.then(task, task);
    this.#lock = result.catch(() => undefined);
    return result;
  }

  /** Reads the blob to its end, so that the size and digest checks run. */
  async finish(): Promise<void> {
    this.#newest += 1;
    if (!this.#chunks) this.#open();
    this.#consume(this.#pending.length);
    for (
      let next = await this.#chunks!.next();
      !next.done;
      next = await this.#chunks!.next()
    ) {
      // The bytes only pass through the checks.
      release(next.value);
    }
  }

  close(): void {
    this.#newest += 1;
    this.#stream?.destroy();
    this.#consume(this.#pending.length);
  }

  #open(): void {
    this.#stream?.destroy();
    this.#stream = new BlobStream(this.#blob);
    // A check can fail before the first read starts the iterator, whose
    // listener would otherwise be missing. The iterator and `failure` still
    // report the error.
    this.#stream.on("error", () => undefined);
    this.#chunks = this.#stream[Symbol.asyncIterator]();
    this.#consume(this.#pending.length);
    this.#position = 0;
  }

  async #advance(count: number): Promise<void> {
    while (count > 0) {
      await this.#fill();
      const skipped = Math.min(count, this.#pending.length);
      this.#consume(skipped);
      count -= skipped;
    }
  }

  /** Makes sure at least one byte is pending. */
  async #fill(): Promise<void> {
    if (this.#pending.length > 0) return;
    const next = await this.#chunks!.next();
    if (next.done) {
      throw sizeError(this.#blob, String(this.#position));
    }
    this.#pending = next.value;
  }

  /** Moves past `count` pending bytes, and releases the chunk once all of it is passed. */
  #consume(count: number): void {
    const chunk = this.#pending;
    this.#position += count;
    if (count < chunk.length) {
      this.#pending = chunk.subarray(count);
      return;
    }
    // Not an empty view of the chunk: its buffer is freed once the last piece
    // is sent, and a view of a freed buffer cannot be cut again.
    this.#pending = noBytes;
    if (chunk.length > 0) release(chunk);
  }
}

/**
 * A stream of part of a blob, pulled piece by piece from a `BlobReader`.
 * `failure` records why the blob could not be read.
 */
class BlobSlice extends Readable {
  readonly #start: () => Promise<void>;
  readonly #next: () => Promise<Buffer | null>;
  failure: Error | undefined;

  constructor(start: () => Promise<void>, next: () => Promise<Buffer | null>) {
    super();
    this.#start = start;
    this.#next = next;
  }

  /** Moves the reader to the slice's first byte, reading the blob up to it. */
  async ready(): Promise<void> {
    try {
      await this.#start();
    } catch (error) {
      this.failure = error as Error;
      throw error;
    }
  }

  override _read(): void {
    this.#next().then(
      (piece) => this.push(piece),
      (error: Error) => {
        this.failure = error;
        this.destroy(error);
      },
    );
  }
}
