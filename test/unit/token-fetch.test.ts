import type { IncomingMessage, ServerResponse } from "node:http";
import { afterEach, describe, expect, it } from "vitest";

import { PpaLoadError } from "../../src/errors.js";
import { fetchToken } from "../../src/registry/auth.js";
import { TestServers } from "../helpers/http-server.js";

const servers = new TestServers();

afterEach(() => servers.closeAll());

/** Starts a token service and returns its base URL and the requests it received. */
async function tokenService(
  reply: (request: IncomingMessage, response: ServerResponse) => void,
): Promise<{ url: string; requests: IncomingMessage[] }> {
  const requests: IncomingMessage[] = [];
  const { url } = await servers.start((request, response) => {
    requests.push(request);
    reply(request, response);
  });
  return { url, requests };
}

const credentials = { username: "user", password: "secret", source: "test" };

function challengeFor(realm: string) {
  return { scheme: "bearer", params: { realm, service: "registry" } };
}

describe("fetchToken", () => {
  it("follows a redirect on the realm's origin with credentials", async () => {
    const service = await tokenService((request, response) => {
      if (request.url?.startsWith("/old")) {
        response.writeHead(302, { location: "/new/token" });
        response.end();
      } else {
        response.end(JSON.stringify({ token: "abc", expires_in: 300 }));
      }
    });

    const token = await fetchToken(
      challengeFor(`${service.url}/old/token`),
      ["repository:a/b:pull"],
      credentials,
    );

    expect(token.token).toBe("abc");
    expect(service.requests.map((r) => r.url?.split("?")[0])).toEqual([
      "/old/token",
      "/new/token",
    ]);
    expect(service.requests[1].headers.authorization).toMatch(/^Basic /);
  });

  it("sends no credentials after a redirect to another port", async () => {
    const other = await tokenService((_request, response) =>
      response.end(JSON.stringify({ token: "abc" })),
    );
    const first = await tokenService((_request, response) => {
      response.writeHead(307, { location: `${other.url}/token` });
      response.end();
    });

    await fetchToken(challengeFor(`${first.url}/token`), [], credentials);

    expect(first.requests[0].headers.authorization).toMatch(/^Basic /);
    expect(other.requests[0].headers.authorization).toBeUndefined();
  });

  it("times out on a silent token service", async () => {
    const service = await tokenService(() => undefined);

    const error = await fetchToken(
      challengeFor(`${service.url}/token`),
      [],
      credentials,
      { timeoutMs: 300 },
    ).catch((caught: unknown) => caught);

    expect(error).toBeInstanceOf(PpaLoadError);
    expect((error as PpaLoadError).message).toContain("did not answer within");
    expect((error as PpaLoadError).hint).toContain("--request-timeout");
  });

  it("stops at once when its signal aborts", async () => {
    const service = await tokenService(() => undefined);
    const controller = new AbortController();
    setTimeout(() => controller.abort(), 50);

    const error = await fetchToken(
      challengeFor(`${service.url}/token`),
      [],
      credentials,
      { timeoutMs: 60_000, signal: controller.signal },
    ).catch((caught: unknown) => caught);

    expect(error).toBeInstanceOf(PpaLoadError);
    expect((error as PpaLoadError).code).toBe("ABORTED");
  });

  it("rejects JSON without a token string", async () => {
    const service = await tokenService((_request, response) =>
      response.end("null"),
    );

    const error = await fetchToken(
      challengeFor(`${service.url}/token`),
      [],
      credentials,
    ).catch((caught: unknown) => caught);

    expect(error).toBeInstanceOf(PpaLoadError);
    expect((error as PpaLoadError).message).toContain(
      'returned no token: its JSON has no "token" or "access_token" string',
    );
  });

  it("quotes the body of a failed token request", async () => {
    const service = await tokenService((_request, response) => {
      response.writeHead(500);
      response.end("database unavailable");
    });

    const error = await fetchToken(
      challengeFor(`${service.url}/token`),
      [],
      credentials,
    ).catch((caught: unknown) => caught);

    expect((error as PpaLoadError).message).toMatch(
      /answered 500: database unavailable$/,
    );
    expect((error as PpaLoadError).hint).toMatch(/try again later/);
  });

  it("uses the default lifetime for an invalid expires_in", async () => {
    const service = await tokenService((_request, response) =>
      response.end(JSON.stringify({ token: "abc", expires_in: "soon" })),
    );
    const before = Date.now();

    const token = await fetchToken(
      challengeFor(`${service.url}/token`),
      [],
      credentials,
    );

    expect(token.expiresAt).toBeGreaterThanOrEqual(before + 55_000);
    expect(token.expiresAt).toBeLessThanOrEqual(Date.now() + 55_000);
  });
});
