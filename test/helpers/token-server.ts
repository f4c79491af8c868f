/**
 * A token service on 127.0.0.1 as the distribution token specification
 * describes it (`GET REALM?service=…&scope=…` with basic credentials,
 * returning `{"token": …}`), and the check a registry makes of the bearer
 * tokens it issued. Paired with a FaultProxy rule, it puts token
 * authentication in front of an open test registry.
 */
import { randomBytes } from "node:crypto";
import * as http from "node:http";
import type { AddressInfo } from "node:net";

import type { FaultRule, ProxiedRequest } from "./fault-proxy.js";
import { repositoryOf } from "./fault-proxy.js";

/** One request to the token endpoint. */
export interface TokenRequest {
  /** `service` parameter, or null when the client sent none. */
  service: string | null;
  /** Every `scope` parameter, in order. */
  scopes: string[];
  /** Whether the request carried the expected basic credentials. */
  authorized: boolean;
}

export interface TokenServerOptions {
  username: string;
  password: string;
  /** `service` of the challenge, which leaves it out when undefined. */
  service?: string;
}

export class TokenServer {
  readonly requests: TokenRequest[] = [];
  readonly #options: TokenServerOptions;
  /** Scopes granted to each token, as `repository:NAME:ACTION` strings. */
  readonly #grants = new Map<string, Set<string>>();
  readonly #server = http.createServer((req, res) => this.#handle(req, res));

  constructor(options: TokenServerOptions) {
    this.#options = options;
  }

  async start(): Promise<this> {
    await new Promise<void>((resolve) =>
      this.#server.listen(0, "127.0.0.1", resolve),
    );
    return this;
  }

  /** URL of the token endpoint, the `realm` of the challenge. */
  get realm(): string {
    const { port } = this.#server.address() as AddressInfo;
    return `http://127.0.0.1:${port}/token`;
  }

  async close(): Promise<void> {
    this.#server.closeAllConnections();
    await new Promise((resolve) => this.#server.close(resolve));
  }

  /**
   * Returns a proxy rule that responds with 401 and a bearer challenge to every
   * registry request whose token does not grant what the request needs.
   * `realm` overrides the challenge's realm, e.g. with an address where
   * nothing listens.
   */
  challengeRule(realm = this.realm): FaultRule {
    return {
      match: (request) => !this.#allows(request),
      fault: (request) => {
        const scope = neededScopes(request)[0];
        const params = [`realm="${realm}"`];
        if (this.#options.service !== undefined) {
          params.push(`service="${this.#options.service}"`);
        }
        if (scope) params.push(`scope="${scope}"`);
        return {
          kind: "answer",
          status: 401,
          headers: {
            "content-type": "application/json",
            "www-authenticate": `Bearer ${params.join(",")}`,
          },
          body: JSON.stringify({
            errors: [
              {
                code: "UNAUTHORIZED",
                message: "authentication required",
              },
            ],
          }),
        };
      },
    };
  }

  #allows(request: ProxiedRequest): boolean {
    const header = request.headers.authorization ?? "";
    const token = /^Bearer (.+)$/.exec(header)?.[1];
    const granted = token ? this.#grants.get(token) : undefined;
    if (!granted) return false;
    return neededScopes(request).every((scope) => granted.has(scope));
  }

  #handle(req: http.IncomingMessage, res: http.ServerResponse): void {
    const url = new URL(req.url ?? "/", "http://token");
    const expected = `Basic ${Buffer.from(`${this.#options.username}:${this.#options.password}`).toString("base64")}`;
    const record: TokenRequest = {
      service: url.searchParams.get("service"),
      scopes: url.searchParams.getAll("scope"),
      authorized: req.headers.authorization === expected,
    };
    this.requests.push(record);
    if (url.pathname !== "/token") {
      res.writeHead(404).end();
      return;
    }
    if (!record.authorized) {
      res
        .writeHead(401, { "content-type": "application/json" })
        .end(JSON.stringify({ details: "incorrect username or password" }));
      return;
    }
    const token = randomBytes(16).toString("hex");
    this.#grants.set(token, new Set(record.scopes.flatMap(splitScope)));
    res
      .writeHead(200, { "content-type": "application/json" })
      .end(JSON.stringify({ token, expires_in: 300 }));
  }
}

/** Splits `repository:NAME:pull,push` into one scope per action. */
export function splitScope(scope: string): string[] {
  const match = /^repository:(.+):([a-z,*]+)$/.exec(scope);
  if (!match) return [];
  return match[2]
    .split(",")
    .map((action) => `repository:${match[1]}:${action}`);
}

/**
 * Returns the scopes a registry request needs, one action each: pull to
 * read a repository, pull and push to write it (as distribution requires), and
 * pull on the source of a mount.
 * The API root `/v2/` needs a valid token and no scope.
 */
function neededScopes(request: ProxiedRequest): string[] {
  const repository = repositoryOf(request.path);
  if (!repository) return [];
  const read = request.method === "GET" || request.method === "HEAD";
  const scopes = [`repository:${repository}:pull`];
  if (!read) scopes.push(`repository:${repository}:push`);
  const from = new URL(request.path, "http://registry").searchParams.get(
    "from",
  );
  if (from) scopes.push(`repository:${from}:pull`);
  return scopes;
}
