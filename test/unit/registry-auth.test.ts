import { describe, expect, it } from "vitest";

import { parseChallenge } from "../../src/registry/auth.js";
import {
  decodeErrorBody,
  redactUrl,
  RegistryError,
} from "../../src/registry/errors.js";

describe("parseChallenge", () => {
  it("reads a bearer challenge with realm, service and scope", () => {
    expect(
      parseChallenge(
        'Bearer realm="https://auth.example/token",service="registry.example",scope="repository:a/b:pull"',
      ),
    ).toEqual({
      scheme: "bearer",
      params: {
        realm: "https://auth.example/token",
        service: "registry.example",
        scope: "repository:a/b:pull",
      },
    });
  });

  it("reads a bearer challenge without a service", () => {
    expect(
      parseChallenge('Bearer realm="https://auth.example/token"')?.params,
    ).toEqual({
      realm: "https://auth.example/token",
    });
  });

  it("reads a basic challenge whose realm is not a URL", () => {
    expect(parseChallenge('Basic realm="Registry Realm"')).toEqual({
      scheme: "basic",
      params: { realm: "Registry Realm" },
    });
  });

  it("picks the bearer challenge of two", () => {
    expect(
      parseChallenge(
        'Basic realm="Registry Realm", Bearer realm="https://auth.example/token",service="reg"',
      ),
    ).toEqual({
      scheme: "bearer",
      params: { realm: "https://auth.example/token", service: "reg" },
    });
  });

  it("keeps a comma inside a quoted value", () => {
    expect(
      parseChallenge('Bearer realm="https://a.example/t",scope="a,b"')?.params,
    ).toEqual({ realm: "https://a.example/t", scope: "a,b" });
  });

  it("reads unquoted values", () => {
    expect(
      parseChallenge("Bearer realm=https://a.example/t, service=reg")?.params,
    ).toEqual({
      realm: "https://a.example/t",
      service: "reg",
    });
  });
});

describe("decodeErrorBody", () => {
  it("reads the errors list of the distribution spec", () => {
    const body = JSON.stringify({
      errors: [
        {
          code: "NAME_INVALID",
          message: "invalid repository name",
          detail: { name: "X" },
        },
      ],
    });

    expect(decodeErrorBody(body)).toEqual([
      {
        code: "NAME_INVALID",
        message: "invalid repository name",
        detail: { name: "X" },
      },
    ]);
  });

  it("returns nothing for an HTML body from a proxy", () => {
    expect(
      decodeErrorBody("<html><body>413 Request Entity Too Large</body></html>"),
    ).toEqual([]);
  });
});

describe("RegistryError", () => {
  it("leads with method and URL and gives a hint for DENIED", () => {
    const error = new RegistryError({
      method: "PUT",
      url: "https://r.example/v2/ns/app/manifests/1",
      status: 403,
      errors: [
        {
          code: "DENIED",
          message: "requested access to the resource is denied",
        },
      ],
    });

    expect(error.message).toBe(
      "PUT https://r.example/v2/ns/app/manifests/1 failed: 403, DENIED: requested access to the resource is denied",
    );
    expect(error.hint).toMatch(/permissions/);
    expect(error.retryable).toBe(false);
  });

  it("marks 503 as retryable and quotes the start of a non-JSON body", () => {
    const error = new RegistryError({
      method: "GET",
      url: "https://r.example/v2/",
      status: 503,
      errors: [],
      body: "<h1>Service Unavailable</h1>",
    });

    expect(error.retryable).toBe(true);
    expect(error.message).toContain("<h1>Service Unavailable</h1>");
  });
});

describe("redactUrl", () => {
  it("removes user info and token parameters", () => {
    expect(
      redactUrl("https://user:pw@r.example/token?service=x&access_token=abc"),
    ).toBe("https://r.example/token?service=x&access_token=REDACTED");
  });

  it("shortens distribution's upload state", () => {
    expect(
      redactUrl(
        `https://r.example/v2/a/blobs/uploads/u?_state=${"x".repeat(250)}`,
      ),
    ).toBe("https://r.example/v2/a/blobs/uploads/u?_state=...");
  });
});
