import { spawnSync } from "node:child_process";
import type { IncomingMessage, ServerResponse } from "node:http";
import { Readable } from "node:stream";
import { gzipSync } from "node:zlib";
import { afterEach, describe, expect, it } from "vitest";

import {
  HttpHeaders,
  HttpResponse,
  httpRequest,
  redirectOf,
} from "../../src/registry/http.js";
import { TestServers } from "../helpers/http-server.js";

interface Received {
  method: string;
  url: string;
  headers: IncomingMessage["headers"];
  body: Buffer;
}

const servers = new TestServers();

afterEach(() => servers.closeAll());

/** Starts a server that records each request's body, then runs `reply`. */
async function serve(
  reply: (response: ServerResponse, received: Received) => void,
): Promise<{ url: string; received: Received[] }> {
  const received: Received[] = [];
  const { url } = await servers.start((request, response) => {
    const parts: Buffer[] = [];
    request.on("data", (chunk: Buffer) => parts.push(chunk));
    request.on("end", () => {
      const entry = {
        method: request.method ?? "",
        url: request.url ?? "",
        headers: request.headers,
        body: Buffer.concat(parts),
      };
      received.push(entry);
      reply(response, entry);
    });
  });
  return { url, received };
}

describe("httpRequest", () => {
  it("returns status, headers and body", async () => {
    const { url } = await serve((response) => {
      response.writeHead(201, "Made", { "Docker-Content-Digest": "sha256:1" });
      response.end("done");
    });

    const response = await httpRequest(`${url}/v2/`);

    expect(response.status).toBe(201);
    expect(response.statusText).toBe("Made");
    expect(response.ok).toBe(true);
    expect(response.headers.get("docker-content-digest")).toBe("sha256:1");
    expect(await response.text()).toBe("done");
  });

  it("joins a repeated header with commas", async () => {
    const { url } = await serve((response) => {
      response.setHeader("WWW-Authenticate", [
        'Bearer realm="https://a/token"',
        'Basic realm="b"',
      ]);
      response.writeHead(401);
      response.end();
    });

    const response = await httpRequest(url);

    expect(response.headers.get("www-authenticate")).toBe(
      'Bearer realm="https://a/token", Basic realm="b"',
    );
  });

  it("asks for an uncompressed response", async () => {
    const { url, received } = await serve((response) => response.end());

    await httpRequest(url);

    expect(received[0].headers["accept-encoding"]).toBe("identity");
  });

  it("keeps the first of two Location headers", async () => {
    const { url } = await serve((response) => {
      response.setHeader("Location", ["/first", "/second"]);
      response.writeHead(202);
      response.end();
    });

    const response = await httpRequest(url);

    expect(response.headers.get("location")).toBe("/first");
  });

  it("keeps the first of two digest headers", async () => {
    const { url } = await serve((response) => {
      response.setHeader("Docker-Content-Digest", ["sha256:1", "sha256:1"]);
      response.writeHead(201);
      response.end();
    });

    const response = await httpRequest(url);

    expect(response.headers.get("docker-content-digest")).toBe("sha256:1");
  });

  it("decodes a gzip body sent unasked", async () => {
    const { url } = await serve((response) => {
      response.writeHead(400, { "content-encoding": "gzip" });
      response.end(gzipSync("plain words"));
    });

    const response = await httpRequest(url);

    expect(await response.text()).toBe("plain words");
  });

  it("cuts off a discarded body that keeps coming", async () => {
    const { url } = await serve((response) => {
      response.writeHead(500);
      response.write(Buffer.alloc(200 * 1024));
    });
    const response = await httpRequest(url);
    const started = Date.now();

    await response.discard(64 * 1024, 5000);

    expect(Date.now() - started).toBeLessThan(2000);
  });

  it("reads only the start of a long error body", async () => {
    const { url } = await serve((response) => {
      response.writeHead(500);
      response.write("x".repeat(100_000));
    });
    const response = await httpRequest(url);

    const text = await response.textStart(1000, 5000);

    expect(text).toBe("x".repeat(1000));
  });

  it("sends a buffer with its length", async () => {
    const { url, received } = await serve((response) => response.end());

    await httpRequest(url, { method: "PATCH", body: Buffer.from("abc") });

    expect(received[0].headers["content-length"]).toBe("3");
    expect(received[0].body.toString()).toBe("abc");
  });

  it("sends content-length 0 for a PUT without body", async () => {
    const { url, received } = await serve((response) => response.end());

    await httpRequest(url, { method: "PUT" });

    expect(received[0].method).toBe("PUT");
    expect(received[0].headers["content-length"]).toBe("0");
  });

  it("streams a body in chunked encoding", async () => {
    const { url, received } = await serve((response) => response.end());

    await httpRequest(url, {
      method: "PUT",
      body: Readable.from([Buffer.from("ab"), Buffer.from("cd")]),
    });

    expect(received[0].headers["transfer-encoding"]).toBe("chunked");
    expect(received[0].body.toString()).toBe("abcd");
  });

  it("sends form parameters url-encoded", async () => {
    const { url, received } = await serve((response) => response.end());

    await httpRequest(url, {
      method: "POST",
      body: new URLSearchParams({ scope: "repository:a/b:pull" }),
    });

    expect(received[0].headers["content-type"]).toBe(
      "application/x-www-form-urlencoded;charset=UTF-8",
    );
    expect(received[0].body.toString()).toBe("scope=repository%3Aa%2Fb%3Apull");
  });

  it("returns a redirect without following it", async () => {
    const { url, received } = await serve((response) => {
      response.writeHead(307, { location: "/elsewhere" });
      response.end();
    });

    const response = await httpRequest(url);

    expect(response.status).toBe(307);
    expect(response.headers.get("location")).toBe("/elsewhere");
    expect(received).toHaveLength(1);
  });

  it("rejects with the system error code", async () => {
    const { url, server } = await servers.start((_request, response) =>
      response.end(),
    );
    await servers.close(server);

    await expect(httpRequest(`${url}/`)).rejects.toMatchObject({
      code: "ECONNREFUSED",
    });
  });

  it("fails the body when aborted after the headers", async () => {
    const { url } = await serve((response) => {
      response.writeHead(200);
      response.write("partial");
    });
    const controller = new AbortController();

    const response = await httpRequest(url, { signal: controller.signal });
    controller.abort();

    await expect(response.text()).rejects.toMatchObject({ name: "AbortError" });
  });

  it("rejects a URL that is not http or https", async () => {
    await expect(httpRequest("file:///etc/passwd")).rejects.toThrow(
      "cannot send a request to file: URLs",
    );
  });
});

describe("redirectOf", () => {
  const from = new URL("http://r.example/v2/a");

  function response(status: number, location?: string): HttpResponse {
    const headers = new HttpHeaders(location ? [["location", location]] : []);
    return new HttpResponse(null, { status, headers });
  }

  it.each([
    [303, "PUT", "GET", true],
    [302, "POST", "GET", true],
    [302, "GET", "GET", false],
    [307, "POST", "POST", false],
    [308, "PATCH", "PATCH", false],
  ])("turns %i after %s into %s", (status, method, next, dropsBody) => {
    const redirect = redirectOf(response(status, "/b"), from, method);

    expect(redirect?.method).toBe(next);
    expect(redirect?.dropsBody).toBe(dropsBody);
    expect(redirect?.url?.href).toBe("http://r.example/b");
  });

  it("leaves a URL out for other schemes", () => {
    const redirect = redirectOf(response(302, "file:///etc"), from, "GET");

    expect(redirect?.location).toBe("file:///etc");
    expect(redirect?.url).toBeUndefined();
  });

  it("returns nothing without a Location", () => {
    expect(redirectOf(response(302), from, "GET")).toBeUndefined();
    expect(redirectOf(response(200, "/b"), from, "GET")).toBeUndefined();
  });
});

describe("HttpHeaders", () => {
  it("looks names up in any case", () => {
    const headers = new HttpHeaders([["Content-Type", "text/plain"]]);

    expect(headers.get("content-type")).toBe("text/plain");
    expect(headers.has("CONTENT-TYPE")).toBe(true);
    expect(headers.get("location")).toBeNull();
  });
});

describe("modules loaded", () => {
  it("loads neither Node.js's fetch nor TLS until an https request", () => {
    const library = new URL("../../dist/index.js", import.meta.url).href;
    const result = spawnSync(
      process.execPath,
      [
        "--input-type=module",
        "-e",
        `await import(${JSON.stringify(library)});
        console.log(process.moduleLoadList.filter((name) => /undici|NativeModule (tls|https)$/.test(name)).join());`,
      ],
      { encoding: "utf8" },
    );
    expect(result.stderr).toBe("");
    expect(result.stdout.trim()).toBe("");
  });
});
