import { type HttpResponse, httpRequest, redirectOf } from "./http.js";

import { PpaLoadError, cancelledError, errorMessage } from "../errors.js";
import { formatSeconds } from "../text.js";
import type { Credentials } from "./credentials.js";
import { redactUrl } from "./errors.js";
import { type Transport, isLoopbackHost } from "./transport.js";

export interface Challenge {
  scheme: string;
  params: Record<string, string>;
}

/**
 * Parses a `WWW-Authenticate` header, e.g.
 * `Bearer realm="https://auth.example/token",service="registry"`, and returns
 * its bearer challenge, else its first. A header may list several
 * challenges (RFC 9110, section 11.6.1), and two headers arrive joined with
 * ", ".
 */
export function parseChallenge(header: string): Challenge | undefined {
  const challenges = parseChallenges(header);
  return (
    challenges.find((challenge) => challenge.scheme === "bearer") ??
    challenges[0]
  );
}

/** Parses every challenge of a `WWW-Authenticate` header, in order. */
export function parseChallenges(header: string): Challenge[] {
  const challenges: Challenge[] = [];
  const scheme = /\s*,?\s*([A-Za-z][A-Za-z0-9!#$%&'*+.^_`|~-]*)/y;
  const param =
    /\s*,?\s*([A-Za-z_][A-Za-z0-9_-]*)\s*=\s*(?:"((?:[^"\\]|\\.)*)"|([^\s,]*))/y;
  let current: Challenge | undefined;
  let index = 0;
  while (index < header.length) {
    param.lastIndex = index;
    const pair = current ? param.exec(header) : null;
    if (pair && current) {
      current.params[pair[1].toLowerCase()] = (pair[2] ?? pair[3]).replace(
        /\\(.)/g,
        "$1",
      );
      index = param.lastIndex;
      continue;
    }
    scheme.lastIndex = index;
    const name = scheme.exec(header);
    if (!name) break;
    current = { scheme: name[1].toLowerCase(), params: {} };
    challenges.push(current);
    index = scheme.lastIndex;
  }
  return challenges;
}

export function basicHeader(
  credentials: Credentials | undefined,
): string | undefined {
  if (!credentials || !("username" in credentials)) return undefined;
  const pair = `${credentials.username}:${credentials.password}`;
  return `Basic ${Buffer.from(pair).toString("base64")}`;
}

/**
 * Returns a warning for a token realm that would receive `credentials` in
 * the clear: a plain-HTTP URL on a host that is not on loopback, other than
 * the registry's own origin (`registryBaseUrl`, whose plain HTTP the caller
 * warns about already). Returns undefined for any other realm, and without
 * credentials.
 */
export function plainHttpRealmWarning(
  realm: string,
  registryBaseUrl: string,
  credentials: Credentials | undefined,
): string | undefined {
  if (!credentials) return undefined;
  let url: URL;
  try {
    url = new URL(realm);
  } catch {
    return undefined;
  }
  const host = url.hostname.replace(/^\[|\]$/g, "").toLowerCase();
  if (url.protocol !== "http:" || isLoopbackHost(host)) return undefined;
  if (url.origin === new URL(registryBaseUrl).origin) return undefined;
  return `sending the credentials from ${credentials.source} over plain HTTP to the token service at ${url.origin}, which the registry named in its WWW-Authenticate header; anyone on the network path can read them`;
}

/**
 * Fetches a bearer token from the realm of a challenge for the given scopes,
 * as the distribution token specification describes: GET with basic
 * credentials, or POST with a refresh token for an identity token.
 * `transport` supplies the CA certificates and proxy of the registry client.
 */
export async function fetchToken(
  challenge: Challenge,
  scopes: string[],
  credentials: Credentials | undefined,
  options: {
    transport?: Transport;
    /** Time the request may take in all, redirects and body included. Default 240000. */
    timeoutMs?: number;
    /** Cancels the request, e.g. on Ctrl-C. */
    signal?: AbortSignal;
  } = {},
): Promise<{ token: string; expiresAt: number }> {
  const realm = challenge.params.realm;
  if (!realm) {
    throw new PpaLoadError(
      "REGISTRY",
      "the registry asked for a bearer token but named no realm to get it from",
    );
  }
  let url: URL;
  try {
    url = new URL(realm);
  } catch {
    throw new PpaLoadError(
      "REGISTRY",
      `the registry's token realm "${realm}" is not a URL`,
    );
  }

  const service = challenge.params.service;
  const transport = options.transport;
  // Resolving the agent first reports a bad proxy variable as it is.
  transport?.agentFor(url);
  const agent = transport
    ? (target: URL) => transport.agentFor(target)
    : undefined;
  let request: { method: string; body?: URLSearchParams };
  if (credentials && "identityToken" in credentials) {
    const form = new URLSearchParams({
      grant_type: "refresh_token",
      refresh_token: credentials.identityToken,
      client_id: "ppa-load",
      scope: scopes.join(" "),
    });
    if (service) form.set("service", service);
    request = { method: "POST", body: form };
  } else {
    if (service) url.searchParams.set("service", service);
    for (const scope of scopes) url.searchParams.append("scope", scope);
    request = { method: "GET" };
  }
  const authorization =
    credentials && !("identityToken" in credentials)
      ? basicHeader(credentials)
      : undefined;
  const origin = url.origin;
  const timeoutMs = options.timeoutMs ?? defaultTokenTimeoutMs;
  const timeout = AbortSignal.timeout(timeoutMs);
  const signal = options.signal
    ? AbortSignal.any([timeout, options.signal])
    : timeout;
  const cancelled = options.signal;
  let response: HttpResponse;
  for (let redirects = 0; ; redirects++) {
    try {
      response = await httpRequest(url, {
        method: request.method,
        body: request.body,
        // Credentials go only to the realm's own scheme, host and port.
        headers:
          authorization && url.origin === origin ? { authorization } : {},
        agent,
        signal,
      });
    } catch (error) {
      if (cancelled?.aborted) throw cancelledError(cancelled, error);
      if (signal.aborted) throw tokenTimedOut(url, timeoutMs);
      throw new PpaLoadError(
        "REGISTRY",
        `cannot reach the token service at ${redactUrl(url.toString())}: ${errorMessage(error)}`,
        {
          hint: "the registry sends clients there to log in; check that this machine can reach it",
        },
      );
    }
    const redirect = redirectOf(response, url, request.method);
    if (!redirect) break;
    await response.discard();
    if (redirects >= maxTokenRedirects || !redirect.url) {
      throw new PpaLoadError(
        "REGISTRY",
        `the token service at ${redactUrl(url.toString())} redirected to ${JSON.stringify(redirect.location.slice(0, 200))}, which ppa-load does not follow${redirects >= maxTokenRedirects ? ` after ${maxTokenRedirects} redirects` : ""}`,
        {
          hint: "the realm in the registry's WWW-Authenticate header may point at a login page or a proxy; check the registry's auth settings",
        },
      );
    }
    if (redirect.dropsBody) request = { method: "GET" };
    url = redirect.url;
  }

  if (response.status === 401 || response.status === 403) {
    throw new PpaLoadError(
      "REGISTRY",
      `the token service at ${redactUrl(url.toString())} rejected the credentials (${response.status})`,
      {
        hint: "check the user name and password, or log in again with docker login",
      },
    );
  }
  if (!response.ok) {
    const excerpt = (await response.textStart(4096))
      .replace(/\s+/g, " ")
      .trim()
      .slice(0, 120);
    throw new PpaLoadError(
      "REGISTRY",
      `the token service at ${redactUrl(url.toString())} answered ${response.status}${excerpt ? `: ${excerpt}` : ""}`,
      {
        hint:
          response.status >= 500
            ? "the token service failed; try again later, or ask the registry's operators"
            : "the realm in the registry's WWW-Authenticate header may point at the wrong service; check the registry's auth settings",
      },
    );
  }
  const text = await readTokenBody(response, url).catch((error) => {
    if (cancelled?.aborted) throw cancelledError(cancelled, error);
    throw signal.aborted ? tokenTimedOut(url, timeoutMs) : error;
  });
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    throw new PpaLoadError(
      "REGISTRY",
      `the token service at ${redactUrl(url.toString())} answered with something other than JSON: ${text.replace(/\s+/g, " ").trim().slice(0, 80)}`,
      {
        hint: "the realm in the registry's WWW-Authenticate header may point at a login page or a proxy; check the registry's auth settings",
      },
    );
  }
  const fields =
    body !== null && typeof body === "object"
      ? (body as {
          token?: unknown;
          access_token?: unknown;
          expires_in?: unknown;
        })
      : {};
  const token = fields.token ?? fields.access_token;
  if (typeof token !== "string" || token === "") {
    throw new PpaLoadError(
      "REGISTRY",
      `the token service at ${redactUrl(url.toString())} returned no token: its JSON has no "token" or "access_token" string`,
      {
        hint: "the realm in the registry's WWW-Authenticate header may point at another service; check the registry's auth settings",
      },
    );
  }
  // The token specification's default lifetime is 60 seconds.
  const expiresIn =
    typeof fields.expires_in === "number" &&
    Number.isFinite(fields.expires_in) &&
    fields.expires_in > 0
      ? fields.expires_in
      : 60;
  const lifetime = expiresIn * 1000;
  return { token, expiresAt: Date.now() + lifetime - 5000 };
}

/** Redirects followed per token request. */
const maxTokenRedirects = 10;

/**
 * Time a token request may take in all, redirects and body included, when
 * the caller sets none: twice the registry client's default idle timeout,
 * the limit its other responses that are not blobs get.
 */
const defaultTokenTimeoutMs = 240_000;

function tokenTimedOut(url: URL, timeoutMs: number): PpaLoadError {
  return new PpaLoadError(
    "REGISTRY",
    `the token service at ${redactUrl(url.toString())} did not answer within ${formatSeconds(timeoutMs)}`,
    {
      hint: "check that this machine can reach the token service the registry names; the limit is twice --request-timeout",
    },
  );
}

/** Largest token response read; tokens are a few KiB. */
const maxTokenBodyBytes = 1024 * 1024;

/** Reads a token response's body, failing on one that is too large or stalls. */
async function readTokenBody(
  response: HttpResponse,
  url: URL,
): Promise<string> {
  const parts: Buffer[] = [];
  let size = 0;
  try {
    for await (const chunk of response.body ?? []) {
      size += (chunk as Buffer).length;
      if (size > maxTokenBodyBytes) {
        throw new PpaLoadError(
          "REGISTRY",
          `the token service at ${redactUrl(url.toString())} sent a response of more than ${maxTokenBodyBytes} bytes`,
          {
            hint: "the registry's token service misbehaves; check the --registry address",
          },
        );
      }
      parts.push(chunk as Buffer);
    }
  } catch (error) {
    if (error instanceof PpaLoadError) throw error;
    throw new PpaLoadError(
      "REGISTRY",
      `cannot read the response of the token service at ${redactUrl(url.toString())}: ${errorMessage(error)}`,
      {
        hint: "check that this machine can reach the token service the registry names",
      },
    );
  }
  return Buffer.concat(parts).toString("utf8");
}
