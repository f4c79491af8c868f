import { createHash, randomBytes } from "node:crypto";
import { Readable } from "node:stream";
import { describe, expect, it } from "vitest";

import type { BlobSource } from "../../src/blobs/blob.js";
import { RegistryTarget } from "../../src/publish/registry-target.js";
import { RegistryClient } from "../../src/registry/client.js";
import type { Credentials } from "../../src/registry/credentials.js";
import { MediaType } from "../../src/registry/media-types.js";
import { services, uniqueNamespace } from "../helpers/environment.js";
import { RegistryReader } from "../helpers/registry.js";

const env = services();

const configMediaType = "application/vnd.docker.container.image.v1+json";
const layerMediaType = "application/vnd.docker.image.rootfs.diff.tar.gzip";

function sha256(bytes: Buffer): string {
  return `sha256:${createHash("sha256").update(bytes).digest("hex")}`;
}

/** Returns a blob in memory that streams in pieces of 64 KiB, like a file. */
function memoryBlob(bytes: Buffer, mediaType: string): BlobSource {
  return {
    digest: sha256(bytes),
    size: bytes.length,
    mediaType,
    open: () => {
      const pieces: Buffer[] = [];
      for (let i = 0; i < bytes.length; i += 64 * 1024) {
        pieces.push(bytes.subarray(i, i + 64 * 1024));
      }
      return Readable.from(pieces);
    },
  };
}

function descriptor(blob: BlobSource) {
  return { mediaType: blob.mediaType, size: blob.size, digest: blob.digest };
}

/** Reads a blob's bytes with plain fetch, independently of the client under test. */
async function readBlob(
  registry: string,
  auth: { user: string; password: string } | undefined,
  repository: string,
  digest: string,
): Promise<Buffer> {
  const headers: Record<string, string> = {};
  if (auth) {
    headers.authorization = `Basic ${Buffer.from(`${auth.user}:${auth.password}`).toString("base64")}`;
  }
  const response = await fetch(
    `http://${registry}/v2/${repository}/blobs/${digest}`,
    { headers },
  );
  if (!response.ok) {
    throw new Error(`GET blob ${repository}@${digest}: ${response.status}`);
  }
  return Buffer.from(await response.arrayBuffer());
}

const registries = [
  {
    name: "an open registry",
    registry: () => env!.registry,
    auth: () => undefined,
  },
  {
    name: "a registry with htpasswd auth",
    registry: () => env!.authRegistry,
    auth: () => ({ user: env!.authUser, password: env!.authPassword }),
  },
];

for (const setup of registries) {
  describe.skipIf(!env)(`direct upload to ${setup.name}`, () => {
    it("uploads, mounts and pushes a schema 2 manifest", async () => {
      const registry = setup.registry();
      const auth = setup.auth();
      const credentials: Credentials | undefined = auth && {
        username: auth.user,
        password: auth.password,
        source: "--username",
      };
      const client = new RegistryClient({ registry, credentials, env: {} });
      const whole = new RegistryTarget(client);
      const chunked = new RegistryTarget(client, { chunkSize: 1024 * 1024 });
      const namespace = uniqueNamespace("upload");
      const repository = `${namespace}/app`;
      const copy = `${namespace}/copy`;

      const first = memoryBlob(randomBytes(4 * 1024 * 1024), layerMediaType);
      const second = memoryBlob(
        randomBytes(3 * 1024 * 1024 + 123),
        layerMediaType,
      );
      const configJson = {
        architecture: "amd64",
        os: "linux",
        rootfs: { type: "layers", diff_ids: [first.digest, second.digest] },
      };
      const config = memoryBlob(
        Buffer.from(JSON.stringify(configJson)),
        configMediaType,
      );
      const manifest = {
        schemaVersion: 2,
        mediaType: MediaType.dockerManifest,
        config: descriptor(config),
        layers: [descriptor(first), descriptor(second)],
      };
      const body = Buffer.from(JSON.stringify(manifest, null, 2));

      expect(await whole.putBlob(repository, first)).toBe("uploaded");
      expect(await chunked.putBlob(repository, second)).toBe("uploaded");
      expect(await chunked.putBlob(repository, config)).toBe("uploaded");
      expect(await whole.putBlob(repository, first)).toBe("exists");
      const digest = await whole.putManifest(
        repository,
        "1.0",
        MediaType.dockerManifest,
        body,
      );
      for (const blob of [config, first, second]) {
        const outcome = await whole.putBlob(copy, blob, {
          mountFrom: [repository],
        });
        expect(outcome, blob.digest).toBe("mounted");
      }
      await whole.putManifest(copy, "1.0", MediaType.dockerManifest, body);
      client.close();

      const reader = new RegistryReader(registry, auth);
      const stored = await reader.manifest(repository, "1.0");
      expect(stored?.digest).toBe(digest);
      expect(stored?.digest).toBe(sha256(body));
      expect(stored?.mediaType).toBe(MediaType.dockerManifest);
      expect(stored?.json).toEqual(manifest);
      expect(await whole.getTagDigest(repository, "1.0")).toBe(digest);
      expect((await reader.manifest(copy, "1.0"))?.digest).toBe(digest);
      expect(await reader.configOf(copy, "1.0")).toEqual(configJson);
      for (const blob of [first, second]) {
        const bytes = await readBlob(registry, auth, copy, blob.digest);
        expect(bytes.length, blob.digest).toBe(blob.size);
        expect(sha256(bytes), blob.digest).toBe(blob.digest);
      }
    });

    it("uploads chunks smaller than stream pieces", async () => {
      const registry = setup.registry();
      const auth = setup.auth();
      const client = new RegistryClient({
        registry,
        credentials: auth && {
          username: auth.user,
          password: auth.password,
          source: "--username",
        },
        env: {},
      });
      const repository = `${uniqueNamespace("chunks")}/app`;
      const blob = memoryBlob(randomBytes(200_000), layerMediaType);

      await client.uploadBlob(repository, blob, { chunkSize: 50_000 });
      client.close();

      const bytes = await readBlob(registry, auth, repository, blob.digest);
      expect(sha256(bytes)).toBe(blob.digest);
    });
  });
}
