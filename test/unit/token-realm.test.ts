import { describe, expect, it } from "vitest";

import { plainHttpRealmWarning } from "../../src/registry/auth.js";
import type { Credentials } from "../../src/registry/credentials.js";

const password: Credentials = {
  username: "user",
  password: "secret-value",
  source: "--username",
};
const identityToken: Credentials = {
  identityToken: "token-value",
  source: "/home/me/.docker/config.json (auths)",
};

describe("plainHttpRealmWarning", () => {
  it("warns about a plain-HTTP realm on another host", () => {
    const warning = plainHttpRealmWarning(
      "http://auth.example.test/token",
      "https://registry.example.test",
      password,
    );

    expect(warning).toBe(
      "sending the credentials from --username over plain HTTP to the token service at http://auth.example.test, which the registry named in its WWW-Authenticate header; anyone on the network path can read them",
    );
    expect(warning).not.toContain("secret-value");
  });

  it("warns about an identity token too", () => {
    const warning = plainHttpRealmWarning(
      "http://auth.example.test:8080/token",
      "http://registry.example.test:5000",
      identityToken,
    );

    expect(warning).toContain(
      "from /home/me/.docker/config.json (auths) over plain HTTP to the token service at http://auth.example.test:8080,",
    );
    expect(warning).not.toContain("token-value");
  });

  it.each([
    ["an HTTPS realm", "https://auth.example.test/token"],
    ["127.0.0.1", "http://127.0.0.1:5001/token"],
    ["localhost", "http://localhost:5001/token"],
    ["::1", "http://[::1]:5001/token"],
    ["the registry's own origin", "http://registry.example.test:5000/token"],
    ["a realm that is not a URL", "Registry Realm"],
  ])("stays quiet for %s", (_, realm) => {
    expect(
      plainHttpRealmWarning(
        realm,
        "http://registry.example.test:5000",
        password,
      ),
    ).toBeUndefined();
  });

  it("stays quiet without credentials", () => {
    expect(
      plainHttpRealmWarning(
        "http://auth.example.test/token",
        "https://registry.example.test",
        undefined,
      ),
    ).toBeUndefined();
  });
});
