import Docker from "dockerode";
import { Readable } from "node:stream";
import { describe, expect, it } from "vitest";

import { PpaLoadError } from "../../src/errors.js";
import { DockerEngine } from "../../src/publish/docker-engine.js";

/**
 * Returns an engine whose pushes report `lines`, the JSON progress messages
 * of the Engine API's push endpoint. Nothing connects to a daemon.
 */
function engineThatPushes(lines: object[]): DockerEngine {
  const docker = new Docker({ socketPath: "/nonexistent/docker.sock" });
  const image = {
    push: async () =>
      Readable.from(lines.map((line) => `${JSON.stringify(line)}\r\n`)),
  };
  docker.getImage = (() => image) as unknown as Docker["getImage"];
  return new DockerEngine(docker);
}

async function pushError(lines: object[]): Promise<PpaLoadError> {
  const error = await engineThatPushes(lines)
    .push(
      "registry.example.test:5000/team/app",
      "1.0",
      "registry.example.test:5000",
    )
    .catch((e: unknown) => e);
  expect(error).toBeInstanceOf(PpaLoadError);
  return error as PpaLoadError;
}

function failure(message: string): object[] {
  return [
    {
      status:
        "The push refers to repository [registry.example.test:5000/team/app]",
    },
    { errorDetail: { message }, error: message },
  ];
}

describe("DockerEngine.push", () => {
  it("explains insecure-registries for a plain-HTTP registry", async () => {
    const error = await pushError(
      failure(
        'Get "https://registry.example.test:5000/v2/": http: server gave HTTP response to HTTPS client',
      ),
    );

    expect(error.code).toBe("DOCKER");
    expect(error.message).toBe(
      'the Docker Engine could not push registry.example.test:5000/team/app:1.0: Get "https://registry.example.test:5000/v2/": http: server gave HTTP response to HTTPS client',
    );
    expect(error.hint).toContain(
      'Add "registry.example.test:5000" there and restart the engine',
    );
    expect(error.hint).toContain('"insecure-registries"');
    expect(error.hint).toContain("/etc/docker/daemon.json");
    expect(error.hint).toContain(
      "--insecure changes only the requests of ppa-load",
    );
  });

  it("explains insecure-registries after a failed TLS handshake", async () => {
    const error = await pushError(
      failure(
        'Head "https://registry.example.test:5000/v2/team/app/blobs/sha256:0": tls: first record does not look like a TLS handshake',
      ),
    );

    expect(error.hint).toContain('"insecure-registries"');
  });

  it("names certs.d for an untrusted certificate", async () => {
    const error = await pushError(
      failure(
        'Get "https://registry.example.test:5000/v2/": tls: failed to verify certificate: x509: certificate signed by unknown authority',
      ),
    );

    expect(error.hint).toContain(
      "/etc/docker/certs.d/registry.example.test:5000/ca.crt",
    );
    expect(error.hint).toContain(
      "--ca-cert changes only the requests of ppa-load",
    );
  });

  it("returns the digest of a push", async () => {
    const digest = `sha256:${"a".repeat(64)}`;

    const pushed = await engineThatPushes([
      { status: "1.0: digest: ... size: 528" },
      { aux: { Tag: "1.0", Digest: digest, Size: 528 } },
    ]).push(
      "registry.example.test:5000/team/app",
      "1.0",
      "registry.example.test:5000",
    );

    expect(pushed).toEqual({ digest, size: 528 });
  });
});
