import { chmod, mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterEach, beforeEach, describe, expect, it } from "vitest";

import { PpaLoadError } from "../../src/errors.js";
import { findCredentials } from "../../src/registry/credentials.js";

let dir: string;
let savedPath: string | undefined;

beforeEach(async () => {
  dir = await mkdtemp(join(tmpdir(), "ppa-load-creds-"));
  savedPath = process.env.PATH;
});

afterEach(async () => {
  process.env.PATH = savedPath;
  await rm(dir, { recursive: true, force: true });
});

async function writeConfig(config: unknown): Promise<void> {
  await writeFile(join(dir, "config.json"), JSON.stringify(config));
}

/** Installs a credential helper that answers for one host, as the protocol describes. */
async function installHelper(
  name: string,
  host: string,
  username: string,
  secret: string,
): Promise<void> {
  const script = `#!/bin/sh
read host
if [ "$1" = get ] && [ "$host" = "${host}" ]; then
  printf '{"ServerURL":"%s","Username":"${username}","Secret":"${secret}"}' "$host"
else
  echo "credentials not found in native keychain"; exit 1
fi
`;
  const path = join(dir, `docker-credential-${name}`);
  await writeFile(path, script);
  await chmod(path, 0o755);
  process.env.PATH = `${dir}:${savedPath}`;
}

describe("findCredentials", () => {
  it("returns nothing when there is no config file", async () => {
    expect(await findCredentials("r.example", dir)).toBeUndefined();
  });

  it("decodes a base64 auth entry", async () => {
    await writeConfig({
      auths: {
        "r.example:5000": {
          auth: Buffer.from("alice:s3cr:et").toString("base64"),
        },
      },
    });

    const found = await findCredentials("r.example:5000", dir);

    expect(found).toMatchObject({ username: "alice", password: "s3cr:et" });
  });

  it("finds an entry stored under an https URL", async () => {
    await writeConfig({
      auths: { "https://r.example/v1/": { username: "bob", password: "pw" } },
    });

    expect(await findCredentials("r.example", dir)).toMatchObject({
      username: "bob",
      password: "pw",
    });
  });

  it("returns an identity token as such", async () => {
    await writeConfig({ auths: { "r.example": { identitytoken: "refresh" } } });

    expect(await findCredentials("r.example", dir)).toMatchObject({
      identityToken: "refresh",
    });
  });

  it("asks the credHelpers entry for the host first", async () => {
    await installHelper("fake", "r.example", "helper-user", "helper-secret");
    await writeConfig({
      credHelpers: { "r.example": "fake" },
      auths: { "r.example": { username: "ignored", password: "ignored" } },
    });

    const found = await findCredentials("r.example", dir);

    expect(found).toMatchObject({
      username: "helper-user",
      password: "helper-secret",
    });
    expect(found?.source).toBe("credential helper docker-credential-fake");
  });

  it("falls back from credsStore to auths when the store has no entry", async () => {
    await installHelper("store", "other.example", "x", "y");
    await writeConfig({
      credsStore: "store",
      auths: { "r.example": { username: "carol", password: "pw" } },
    });

    expect(await findCredentials("r.example", dir)).toMatchObject({
      username: "carol",
    });
  });

  it("names the helper that cannot be run", async () => {
    await writeConfig({ credHelpers: { "r.example": "absent-helper" } });

    const error = await findCredentials("r.example", dir).catch(
      (e: unknown) => e,
    );

    expect(error).toBeInstanceOf(PpaLoadError);
    expect((error as PpaLoadError).message).toContain(
      "docker-credential-absent-helper",
    );
    expect((error as PpaLoadError).code).toBe("CREDENTIALS");
  });

  it("names the config file when it is not JSON", async () => {
    await writeFile(join(dir, "config.json"), "{");

    const error = (await findCredentials("r.example", dir).catch(
      (e: unknown) => e,
    )) as PpaLoadError;

    expect(error.message).toContain(join(dir, "config.json"));
    expect(error.hint).toContain("--password-stdin");
  });
});
