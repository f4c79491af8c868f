import { createHash } from "node:crypto";
import fetch, { type RequestInit, type Response } from "node-fetch";

import { PpaLoadError, errorMessage } from "../errors.js";
import {
  type Challenge,
  basicHeader,
  fetchToken,
  parseChallenge,
} from "./auth.js";
import type { Credentials } from "./credentials.js";
import { RegistryError, decodeErrorBody, redactUrl } from "./errors.js";
import { manifestAccept } from "./media-types.js";

export interface RegistryClientOptions {
  /** `HOST[:PORT]` of the registry. */
  registry: string;
  /** Defaults to `http` for loopback hosts and `https` for all others. */
  scheme?: "http" | "https";
  credentials?: Credentials;
  /** Called after each request, for verbose output. Never given secrets. */
  onRequest?: (info: { method: string; url: string; status: number }) => void;
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

interface RequestOptions {
  method?: string;
  /** Token scopes the request needs, e.g. `repository:ns/app:pull,push`. */
  scopes: string[];
  headers?: Record<string, string>;
  body?: Buffer | string;
}

/** Whether a registry host is on this machine, where Docker allows plain HTTP. */
export function isLoopbackRegistry(registry: string): boolean {
  const host = registry.replace(/:\d+$/, "").replace(/^\[|\]$/g, "");
  return (
    host === "localhost" || host === "::1" || /^127\.\d+\.\d+\.\d+$/.test(host)
  );
}

export function sha256Digest(body: Buffer | string): string {
  return `sha256:${createHash("sha256").update(body).digest("hex")}`;
}

/**
 * A client of the OCI distribution API (the Docker registry HTTP API v2),
 * with basic and bearer-token authentication. Tokens are cached per scope
 * set and fetched again when they expire or the registry rejects them.
 */
export class RegistryClient {
  readonly registry: string;
  readonly baseUrl: string;
  readonly #credentials?: Credentials;
  readonly #onRequest?: RegistryClientOptions["onRequest"];
  #challenge: Challenge | undefined;
  readonly #tokens = new Map<string, { token: string; expiresAt: number }>();

  constructor(options: RegistryClientOptions) {
    this.registry = options.registry;
    const scheme =
      options.scheme ??
      (isLoopbackRegistry(options.registry) ? "http" : "https");
    this.baseUrl = `${scheme}://${options.registry}`;
    this.#credentials = options.credentials;
    this.#onRequest = options.onRequest;
  }

  /** Checks that the registry answers the API and accepts the credentials. */
  async ping(): Promise<void> {
    const response = await this.#request("/v2/", { scopes: [] });
    await this.#expect(response, [200], "GET", "/v2/");
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
    const body = Buffer.from(await response.arrayBuffer());
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
      scopes: [`repository:${repository}:pull,push`],
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
    const location = response.headers.get("location");
    if (location) {
      await this.#request(this.#resolve(location), {
        method: "DELETE",
        scopes: [`repository:${repository}:pull,push`],
      }).catch(() => undefined);
    }
    return false;
  }

  /** Uploads a blob held in memory in one request (POST, then PUT with the digest). */
  async pushBlob(repository: string, body: Buffer): Promise<string> {
    const digest = sha256Digest(body);
    if (await this.hasBlob(repository, digest)) return digest;
    const scopes = [`repository:${repository}:pull,push`];
    const start = `/v2/${repository}/blobs/uploads/`;
    const opened = await this.#request(start, { method: "POST", scopes });
    await this.#expect(opened, [202], "POST", start);
    const location = opened.headers.get("location");
    if (!location) {
      throw new PpaLoadError(
        "REGISTRY",
        `${this.registry} opened an upload without a Location header`,
      );
    }
    const url = new URL(this.#resolve(location), this.baseUrl);
    url.searchParams.set("digest", digest);
    const target = url.pathname + url.search;
    const response = await this.#request(target, {
      method: "PUT",
      scopes,
      headers: { "content-type": "application/octet-stream" },
      body,
    });
    await this.#expect(response, [201], "PUT", url.pathname);
    return digest;
  }

  /** Makes a Location header relative to the registry, as the spec allows both. */
  #resolve(location: string): string {
    const url = new URL(location, this.baseUrl);
    if (url.origin !== new URL(this.baseUrl).origin) return url.toString();
    return url.pathname + url.search;
  }

  async #expect(
    response: Response,
    statuses: number[],
    method: string,
    path: string,
  ): Promise<void> {
    if (statuses.includes(response.status)) return;
    const body = method === "HEAD" ? "" : await response.text().catch(() => "");
    throw new RegistryError({
      method,
      url: redactUrl(new URL(path, this.baseUrl).toString()),
      status: response.status,
      errors: decodeErrorBody(body),
      body,
      hint: response.status === 401 ? this.#unauthorizedHint() : undefined,
    });
  }

  #unauthorizedHint(): string {
    if (this.#credentials) {
      return `${this.registry} rejected the credentials from ${this.#credentials.source}; check them, or log in again with docker login ${this.registry}`;
    }
    return `log in with docker login ${this.registry}, or give --username and --password-stdin`;
  }

  async #authorization(scopes: string[]): Promise<string | undefined> {
    const challenge = this.#challenge;
    if (!challenge) return undefined;
    if (challenge.scheme === "basic") return basicHeader(this.#credentials);
    if (challenge.scheme !== "bearer") return undefined;
    const key = scopes.join(" ");
    let cached = this.#tokens.get(key);
    if (!cached || cached.expiresAt <= Date.now()) {
      cached = await fetchToken(challenge, scopes, this.#credentials);
      this.#tokens.set(key, cached);
    }
    return `Bearer ${cached.token}`;
  }

  async #request(path: string, options: RequestOptions): Promise<Response> {
    const url = /^https?:/.test(path) ? path : `${this.baseUrl}${path}`;
    const method = options.method ?? "GET";
    let response = await this.#send(url, method, options);
    if (response.status !== 401) return response;

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
    // A bearer token may lack a scope the request needs; ask for a new one.
    this.#tokens.delete(options.scopes.join(" "));
    if (!isNewChallenge && challenge.scheme === "basic") return response;
    this.#challenge = challenge;
    await response.arrayBuffer().catch(() => undefined);
    response = await this.#send(url, method, options);
    return response;
  }

  async #send(
    url: string,
    method: string,
    options: RequestOptions,
  ): Promise<Response> {
    const headers: Record<string, string> = {
      "user-agent": "ppa-load",
      ...options.headers,
    };
    const authorization = await this.#authorization(options.scopes);
    if (authorization) headers.authorization = authorization;
    const init: RequestInit = {
      method,
      headers,
      body: options.body,
      redirect: "follow",
    };
    let response: Response;
    try {
      response = await fetch(url, init);
    } catch (error) {
      throw new PpaLoadError(
        "REGISTRY",
        `cannot reach ${this.registry} (${method} ${redactUrl(url)}): ${errorMessage(error)}`,
        {
          cause: error,
          hint: url.startsWith("https:")
            ? "check the registry address; for a registry that speaks plain HTTP, add --insecure"
            : "check the registry address and that it is running",
        },
      );
    }
    this.#onRequest?.({ method, url: redactUrl(url), status: response.status });
    return response;
  }
}
