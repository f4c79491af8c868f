/**
 * Imports generated archives through a fault-injecting proxy in front of the
 * test registries, then checks what the registry stores and the error text.
 */
import { createCipheriv, createHash } from "node:crypto";
import { mkdtemp, writeFile } from "node:fs/promises";
import * as net from "node:net";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath, pathToFileURL } from "node:url";
import { afterAll, afterEach, beforeAll, describe, expect, it } from "vitest";

import { PpaLoadError } from "../../src/errors.js";
import { importArchive, type ImportOptions } from "../../src/index.js";
import type { ImportResult } from "../../src/events.js";
import {
  dockerSaveTarball,
  ppaArchive,
  type LayerSpec,
} from "../../testdata/generate.js";
import { runCli } from "../helpers/cli.js";
import { services, uniqueNamespace } from "../helpers/environment.js";
import {
  FaultProxy,
  type ProxiedRequest,
  blobDigestOf,
  htmlPage,
  registryError,
  reset,
  repositoryOf,
} from "../helpers/fault-proxy.js";
import { RegistryReader } from "../helpers/registry.js";
import { TokenServer, splitScope } from "../helpers/token-server.js";

const env = services();

/** Deterministic bytes that gzip cannot shrink, so a layer keeps its size on the wire. */
function pseudoRandomBytes(size: number, seed: string): Buffer {
  const key = createHash("sha256").update(seed).digest().subarray(0, 16);
  return createCipheriv("aes-128-ctr", key, Buffer.alloc(16)).update(
    Buffer.alloc(size),
  );
}

interface ArchiveReference {
  /** `NAME:TAG` the manifest publishes. */
  repository: string;
  architecture: string;
  variant?: string;
  layers: LayerSpec[];
}

/**
 * Writes a PPA archive whose manifest.yaml publishes one image `image` over
 * `references`, each from its own legacy docker save tarball, and returns its
 * path. `manifest-last` keeps the import from uploading layers while it reads
 * the archive, so every upload attempt belongs to the publishing step.
 */
async function writeArchive(
  image: string,
  references: ArchiveReference[],
  order: "manifest-first" | "manifest-last" = "manifest-last",
): Promise<string> {
  const lines = ["images:", `  - image: ${image}`, "    references:"];
  const images = references.map((ref, index) => {
    const path = `images/image-${index}.tar`;
    lines.push(
      `      - repository: ${ref.repository}`,
      `        pull-repository: ${ref.repository}`,
      `        archive: ${path}`,
      "        platform:",
      "          os: linux",
      `          architecture: ${ref.architecture}`,
      ...(ref.variant ? [`          variant: ${ref.variant}`] : []),
    );
    const body = dockerSaveTarball(
      [
        {
          repoTags: [ref.repository],
          layers: ref.layers,
          architecture: ref.architecture,
          variant: ref.variant,
        },
      ],
      { format: "legacy" },
    );
    return { path, body };
  });
  const folder = await mkdtemp(join(tmpdir(), "ppa-load-hostile-"));
  const file = join(folder, "archive.tgz");
  await writeFile(
    file,
    ppaArchive({ manifestYaml: `${lines.join("\n")}\n`, images, order }),
  );
  return file;
}

function textLayer(name: string): LayerSpec {
  return { files: { [`opt/${name}/version`]: `${name}\n` } };
}

/** Returns a layer of one file of `size` pseudo-random bytes. */
function randomLayer(size: number, seed: string): LayerSpec {
  return { files: { [`opt/${seed}/data.bin`]: pseudoRandomBytes(size, seed) } };
}

async function outputFolder(): Promise<string> {
  return mkdtemp(join(tmpdir(), "ppa-load-hostile-out-"));
}

/** Formats a request as `METHOD PATH STATUS`, for assertion messages. */
function describeRequest(request: ProxiedRequest): string {
  return `${request.method} ${request.path} ${request.status ?? "reset"}`;
}

/**
 * Returns whether `request` put `digest` into `repository` or found it
 * there: a HEAD that found it, a mount that the registry made, or the PUT
 * that closed its upload.
 */
function placesBlob(
  request: ProxiedRequest,
  repository: string,
  digest: string,
): boolean {
  if (repositoryOf(request.path) !== repository) return false;
  if (blobDigestOf(request) !== digest) return false;
  return (
    (request.method === "HEAD" && request.status === 200) ||
    (request.method === "POST" && request.status === 201) ||
    (request.method === "PUT" && request.status === 201)
  );
}

/** Returns whether `request` put or found the manifest `digest` in `repository`. */
function placesManifest(
  request: ProxiedRequest,
  repository: string,
  digest: string,
): boolean {
  if (repositoryOf(request.path) !== repository) return false;
  if (request.method === "HEAD" || request.method === "GET") {
    return request.status === 200 && request.path.endsWith(`/${digest}`);
  }
  if (request.method !== "PUT" || request.status !== 201 || !request.body) {
    return false;
  }
  return (
    `sha256:${createHash("sha256").update(request.body).digest("hex")}` ===
    digest
  );
}

/**
 * Lists every manifest PUT that went out before what it references was in
 * its repository: an image manifest before one of its blobs, or a manifest
 * list before one of its members. "Before" means the referenced request had
 * not finished when the manifest PUT arrived.
 */
function orderViolations(requests: ProxiedRequest[]): string[] {
  const violations: string[] = [];
  const puts = requests.filter(
    (r) => r.method === "PUT" && r.status === 201 && r.body !== undefined,
  );
  for (const put of puts) {
    const repository = repositoryOf(put.path)!;
    const earlier = requests.filter(
      (r) => r.finished !== undefined && r.finished < put.arrived,
    );
    const manifest = JSON.parse(put.body!.toString("utf8")) as {
      config?: { digest: string };
      layers?: { digest: string }[];
      manifests?: { digest: string }[];
    };
    if (manifest.manifests) {
      for (const { digest } of manifest.manifests) {
        if (!earlier.some((r) => placesManifest(r, repository, digest))) {
          violations.push(
            `${describeRequest(put)} before member ${digest} was in ${repository}`,
          );
        }
      }
      continue;
    }
    const blobs = [manifest.config!, ...(manifest.layers ?? [])];
    for (const { digest } of blobs) {
      if (!earlier.some((r) => placesBlob(r, repository, digest))) {
        violations.push(
          `${describeRequest(put)} before blob ${digest} was in ${repository}`,
        );
      }
    }
  }
  return violations;
}

/** Returns the failures of an import as text, for assertions. */
function failureText(result: ImportResult): string {
  return result.failures
    .map((f) => `${f.item}: ${f.message}\n  hint: ${f.hint ?? ""}`)
    .join("\n");
}

describe.skipIf(!env)(
  "manifest lists whose members are in other repositories",
  () => {
    const reader = new RegistryReader(env?.registry ?? "");
    let proxy: FaultProxy;
    let archive: string;
    const references: ArchiveReference[] = [
      {
        repository: "example/app-amd64:1.0",
        architecture: "amd64",
        layers: [textLayer("base"), textLayer("amd64")],
      },
      {
        repository: "example/app-arm64:1.0",
        architecture: "arm64",
        variant: "v8",
        layers: [textLayer("base"), textLayer("arm64")],
      },
      {
        // Already in the list's repository.
        repository: "example/app:1.0-s390x",
        architecture: "s390x",
        layers: [textLayer("base"), textLayer("s390x")],
      },
    ];

    beforeAll(async () => {
      proxy = await new FaultProxy(env!.registry).start();
      // With the manifest first, the direct path also uploads layers while it
      // reads the archive, and the order check covers those uploads too.
      archive = await writeArchive(
        "example/app:1.0",
        references,
        "manifest-first",
      );
    });

    afterEach(() => proxy.reset());

    afterAll(async () => {
      await proxy.close();
    });

    const paths = [
      { name: "straight to the registry", docker: false },
      { name: "through Docker", docker: true },
    ];

    it.each(paths)("pushes members first, $name", async ({ docker }) => {
      const namespace = uniqueNamespace("list-order");

      const result = await importArchive({
        archive,
        namespace,
        registry: proxy.address,
        docker,
        outputDir: await outputFolder(),
      });

      expect(failureText(result)).toBe("");
      expect(result.lists).toHaveLength(1);
      const listRepository = `${namespace}/example/app`;
      const list = await reader.manifest(listRepository, "1.0");
      expect(list?.digest).toBe(result.lists[0].digest);
      const members = (list?.json.manifests ?? []) as {
        digest: string;
        platform: { architecture: string };
      }[];
      expect(members.map((m) => m.platform.architecture)).toEqual([
        "amd64",
        "arm64",
        "s390x",
      ]);
      for (const member of members) {
        const stored = await reader.manifest(listRepository, member.digest);
        expect(stored?.digest, member.digest).toBe(member.digest);
        for (const layer of stored!.json.layers as { digest: string }[]) {
          expect(
            await reader.hasBlob(listRepository, layer.digest),
            `${listRepository}@${layer.digest}`,
          ).toBe(true);
        }
      }
      for (const ref of references) {
        const [path, tag] = ref.repository.split(":");
        const published = result.published.find(
          (p) => p.target === `${proxy.address}/${namespace}/${path}:${tag}`,
        );
        expect(published, ref.repository).toBeDefined();
        const stored = await reader.manifest(`${namespace}/${path}`, tag);
        expect(stored?.digest, ref.repository).toBe(published!.digest);
      }

      const listPuts = proxy.matching(
        "PUT",
        new RegExp(`^/v2/${listRepository}/manifests/1\\.0$`),
      );
      expect(listPuts.map(describeRequest)).toEqual([
        `PUT /v2/${listRepository}/manifests/1.0 201`,
      ]);
      expect(orderViolations(proxy.requests)).toEqual([]);
      // The check fails when the list goes out before its members.
      const listFirst = proxy.requests.map((r) =>
        r === listPuts[0] ? { ...r, arrived: 0 } : r,
      );
      expect(orderViolations(listFirst)).toHaveLength(3);
    });
  },
);

/**
 * nginx's page for a body over client_max_body_size, behind a style sheet
 * long enough to push the title past the first 200 characters.
 */
const tooLargePage = [
  "<!DOCTYPE html>",
  "<html>",
  "<head>",
  "<style>",
  ...Array.from(
    { length: 200 },
    (_, i) => `.rule-${i} { margin: ${i}px; font-family: sans-serif; }`,
  ),
  "</style>",
  "<title>413 Request Entity Too Large</title>",
  "</head>",
  "<body>",
  "<center><h1>413 Request Entity Too Large</h1></center>",
  "<hr><center>nginx</center>",
  "</body>",
  "</html>",
  "",
].join("\r\n");

describe.skipIf(!env)("proxy that rejects large requests with 413", () => {
  const reader = new RegistryReader(env?.registry ?? "");
  const limit = 1024 * 1024;
  let proxy: FaultProxy;
  let archive: string;

  beforeAll(async () => {
    proxy = await new FaultProxy(env!.registry).start();
    proxy.inject({
      match: (r) => Number(r.headers["content-length"] ?? 0) > limit,
      fault: htmlPage(413, tooLargePage, { early: true }),
    });
    archive = await writeArchive("example/big:1.0", [
      {
        repository: "example/big:1.0",
        architecture: "amd64",
        layers: [randomLayer(4 * 1024 * 1024, "big")],
      },
    ]);
  });

  afterAll(async () => {
    await proxy.close();
  });

  async function importThroughProxy(namespace: string, options: string[]) {
    const cwd = await outputFolder();
    return runCli(
      [
        "--archive",
        archive,
        "--namespace",
        namespace,
        "--registry",
        proxy.address,
        ...options,
      ],
      { cwd },
    );
  }

  it("names the blob, its size and the limit", async () => {
    const namespace = uniqueNamespace("too-large");
    const before = proxy.requests.length;

    const run = await importThroughProxy(namespace, []);

    const rejected = proxy.requests
      .slice(before)
      .filter((r) => r.status === 413);
    expect(rejected).toHaveLength(1);
    const digest = blobDigestOf(rejected[0])!;
    const size = Number(rejected[0].headers["content-length"]);
    expect(size).toBeGreaterThan(4 * 1024 * 1024);
    const output = run.stdout + run.stderr;
    expect(run.code).toBe(1);
    expect(output).toContain(`uploading blob ${digest} of ${size} bytes`);
    expect(output).toContain("413 Request Entity Too Large");
    expect(output).not.toContain("<");
    expect(output).toContain("raise the proxy's body-size limit");
    expect(output).toContain("client_max_body_size");
    expect(output).toContain(`--chunk-size below ${size} bytes`);
    expect(await reader.tags(`${namespace}/example/big`)).toEqual([]);
  });

  it("passes the limit with --chunk-size", async () => {
    const namespace = uniqueNamespace("chunked");
    const before = proxy.requests.length;

    const run = await importThroughProxy(namespace, ["--chunk-size", "512KiB"]);

    expect(run.stderr).not.toMatch(/error|warning/);
    expect(run.code).toBe(0);
    const requests = proxy.requests.slice(before);
    expect(requests.filter((r) => r.status === 413)).toEqual([]);
    const patches = requests.filter((r) => r.method === "PATCH");
    expect(patches.length).toBeGreaterThanOrEqual(8);
    for (const patch of patches) {
      expect(patch.bytesRead).toBeLessThanOrEqual(512 * 1024);
    }
    const manifest = await reader.manifest(`${namespace}/example/big`, "1.0");
    expect(manifest).toBeDefined();
    const [layer] = manifest!.json.layers as { digest: string; size: number }[];
    expect(layer.size).toBeGreaterThan(4 * 1024 * 1024);
    expect(await reader.hasBlob(`${namespace}/example/big`, layer.digest)).toBe(
      true,
    );
  });
});

/** Returns whether a request is a PUT that carries a whole blob over 1 MiB. */
function isLayerPut(request: ProxiedRequest): boolean {
  return (
    request.method === "PUT" &&
    request.path.includes("/blobs/uploads/") &&
    Number(request.headers["content-length"] ?? 0) > 1024 * 1024
  );
}

function isManifestPut(request: ProxiedRequest): boolean {
  return request.method === "PUT" && request.path.includes("/manifests/");
}

/** Returns the milliseconds between the arrivals of consecutive requests. */
function gapsMs(requests: ProxiedRequest[]): number[] {
  return requests
    .slice(1)
    .map((r, i) => r.arrivedAtMs - requests[i].arrivedAtMs);
}

const badGatewayPage =
  "<html>\r\n<head><title>502 Bad Gateway</title></head>\r\n<body>\r\n<center><h1>502 Bad Gateway</h1></center>\r\n<hr><center>nginx</center>\r\n</body>\r\n</html>\r\n";

describe.skipIf(!env)("transient and permanent registry faults", () => {
  const reader = new RegistryReader(env?.registry ?? "");
  let proxy: FaultProxy;
  let archive: string;

  beforeAll(async () => {
    proxy = await new FaultProxy(env!.registry).start();
    archive = await writeArchive("example/faulty:1.0", [
      {
        repository: "example/faulty:1.0",
        architecture: "amd64",
        layers: [randomLayer(4 * 1024 * 1024, "faulty")],
      },
    ]);
  });

  afterEach(() => proxy.reset());

  afterAll(async () => {
    await proxy.close();
  });

  // Waits short enough for a fast test, and a cap that Retry-After can
  // exceed. The defaults are 5 attempts, 1 s and 30 s.
  const retry = { maxAttempts: 3, baseDelayMs: 100, maxDelayMs: 2000 };

  async function importThroughProxy(namespace: string): Promise<ImportResult> {
    return importArchive({
      archive,
      namespace,
      registry: proxy.address,
      outputDir: await outputFolder(),
      retry,
    });
  }

  // The client retries 429, 500, 502, 503 and 504 up to `retry.maxAttempts`
  // times in all, after Retry-After or `retry.baseDelayMs` doubling each
  // time, and never waits longer than `retry.maxDelayMs`. The publisher sends
  // a blob again up to 3 times in all, after 1 s and 2 s, with a warning,
  // when its connection fails.
  const transient = [
    {
      name: "a connection reset mid-body",
      fault: reset(1024 * 1024),
      times: 1,
      minGapsMs: [1000],
      retryWarnings: 1,
    },
    {
      name: "500 from a storage back end",
      fault: registryError(500, "UNKNOWN", "storage back end unavailable"),
      times: 1,
      minGapsMs: [100],
      retryWarnings: 1,
    },
    {
      name: "502 from a proxy",
      fault: htmlPage(502, badGatewayPage),
      times: 1,
      minGapsMs: [100],
      retryWarnings: 1,
    },
    {
      name: "503 twice, backing off",
      fault: registryError(503, "UNAVAILABLE", "service unavailable"),
      times: 2,
      minGapsMs: [100, 200],
      retryWarnings: 2,
    },
    {
      name: "429 with Retry-After",
      fault: registryError(429, "TOOMANYREQUESTS", "slow down", {
        "retry-after": "1",
      }),
      times: 1,
      minGapsMs: [1000],
      retryWarnings: 1,
    },
  ];

  it.each(transient)(
    "recovers from $name",
    async ({ fault, times, minGapsMs, retryWarnings }) => {
      const namespace = uniqueNamespace("transient");
      proxy.inject({ match: isLayerPut, fault, times });

      const result = await importThroughProxy(namespace);

      expect(failureText(result)).toBe("");
      const attempts = proxy.requests.filter(isLayerPut);
      expect(attempts.map((r) => r.status)).toEqual([
        ...Array(times).fill(fault.kind === "reset" ? undefined : fault.status),
        201,
      ]);
      const gaps = gapsMs(attempts);
      minGapsMs.forEach((minimum, i) =>
        expect(gaps[i], `wait before attempt ${i + 2}`).toBeGreaterThanOrEqual(
          minimum,
        ),
      );
      const retries = result.warnings.filter((w) => w.includes("trying again"));
      expect(retries).toHaveLength(retryWarnings);
      const stored = await reader.manifest(
        `${namespace}/example/faulty`,
        "1.0",
      );
      expect(stored?.digest).toBe(result.published[0].digest);
      const [layer] = stored!.json.layers as { digest: string }[];
      expect(blobDigestOf(attempts[0])).toBe(layer.digest);
      expect(
        await reader.hasBlob(`${namespace}/example/faulty`, layer.digest),
      ).toBe(true);
    },
  );

  it("retries a 502 on the manifest PUT", async () => {
    const namespace = uniqueNamespace("transient-manifest");
    proxy.inject({
      match: isManifestPut,
      fault: htmlPage(502, badGatewayPage),
      times: 1,
    });

    const result = await importThroughProxy(namespace);

    expect(failureText(result)).toBe("");
    expect(proxy.requests.filter(isManifestPut).map((r) => r.status)).toEqual([
      502, 201,
    ]);
    expect(await reader.tags(`${namespace}/example/faulty`)).toEqual(["1.0"]);
  });

  it("caps a long Retry-After", async () => {
    const namespace = uniqueNamespace("transient-cap");
    proxy.inject({
      match: isLayerPut,
      fault: registryError(429, "TOOMANYREQUESTS", "slow down", {
        "retry-after": "3600",
      }),
      times: 1,
    });

    const result = await importThroughProxy(namespace);

    expect(failureText(result)).toBe("");
    const [gap] = gapsMs(proxy.requests.filter(isLayerPut));
    expect(gap).toBeGreaterThanOrEqual(retry.maxDelayMs);
    expect(gap).toBeLessThan(retry.maxDelayMs + 1500);
    expect(result.warnings).toContainEqual(
      expect.stringContaining("got 429; trying again in 2.0 s (attempt 2)"),
    );
  });

  it("gives up on 503 after 3 attempts", async () => {
    const namespace = uniqueNamespace("transient-bound");
    proxy.inject({
      match: isLayerPut,
      fault: registryError(503, "UNAVAILABLE", "service unavailable"),
    });

    const result = await importThroughProxy(namespace);

    const attempts = proxy.requests.filter(isLayerPut);
    expect(attempts).toHaveLength(retry.maxAttempts);
    const gaps = gapsMs(attempts);
    expect(gaps[0]).toBeGreaterThanOrEqual(retry.baseDelayMs);
    expect(gaps[1]).toBeGreaterThanOrEqual(2 * retry.baseDelayMs);
    const digest = blobDigestOf(attempts[0])!;
    expect(result.published).toEqual([]);
    expect(result.failures).toHaveLength(1);
    expect(result.failures[0].message).toContain(`uploading blob ${digest}`);
    expect(result.failures[0].message).toContain(
      "failed: 503, UNAVAILABLE: service unavailable",
    );
    expect(await reader.tags(`${namespace}/example/faulty`)).toEqual([]);
  });

  it("gives up on resets after 3 attempts", async () => {
    const namespace = uniqueNamespace("transient-resets");
    proxy.inject({ match: isLayerPut, fault: reset(1024 * 1024) });

    const result = await importThroughProxy(namespace);

    const attempts = proxy.requests.filter(isLayerPut);
    expect(attempts).toHaveLength(3);
    expect(gapsMs(attempts)[0]).toBeGreaterThanOrEqual(1000);
    expect(gapsMs(attempts)[1]).toBeGreaterThanOrEqual(2000);
    expect(result.published).toEqual([]);
    expect(result.failures).toHaveLength(1);
    expect(result.failures[0].message).toContain(proxy.address);
    expect(await reader.tags(`${namespace}/example/faulty`)).toEqual([]);
  });

  const uploadPost = (r: ProxiedRequest) =>
    r.method === "POST" && /\/blobs\/uploads\/$/.test(r.path);

  // Each of these fails the image without a wait. A 404 for an upload
  // session is the exception that the distribution spec requires: the client
  // opens a new session, 3 in all. `requests` counts those that got the fault.
  const permanent = [
    {
      name: "400 on the layer",
      match: isLayerPut,
      fault: registryError(400, "BLOB_UPLOAD_INVALID", "blob upload invalid"),
      requests: 1,
      message: "failed: 400, BLOB_UPLOAD_INVALID: blob upload invalid",
      hint: "the registry rejected the upload",
    },
    {
      name: "401 on the layer",
      match: isLayerPut,
      fault: registryError(401, "UNAUTHORIZED", "authentication required"),
      requests: 1,
      message: "failed: 401, UNAUTHORIZED: authentication required",
      hint: "log in with docker login",
    },
    {
      name: "403 on the layer",
      match: isLayerPut,
      fault: registryError(
        403,
        "DENIED",
        "requested access to the resource is denied",
      ),
      requests: 1,
      message: "failed: 403, DENIED",
      hint: "check its permissions",
    },
    {
      name: "404 for an unknown repository",
      match: uploadPost,
      fault: registryError(
        404,
        "NAME_UNKNOWN",
        "repository name not known to registry",
      ),
      // One POST for the config blob and one for the layer.
      requests: 2,
      message: "failed: 404, NAME_UNKNOWN",
      hint: "does not create repositories on push",
    },
    {
      name: "404 for an unknown upload session",
      match: isLayerPut,
      fault: registryError(
        404,
        "BLOB_UPLOAD_UNKNOWN",
        "blob upload unknown to registry",
      ),
      requests: 3,
      message: "failed: 404, BLOB_UPLOAD_UNKNOWN",
      hint: "reports the upload session as unknown",
    },
    {
      name: "413 from a proxy",
      match: isLayerPut,
      fault: htmlPage(413, tooLargePage, { early: true }),
      requests: 1,
      message: "failed: 413, HTML page: 413 Request Entity Too Large",
      hint: "raise the proxy's body-size limit",
    },
  ];

  it.each(permanent)(
    "fails fast on $name",
    async ({ match, fault, requests, message, hint }) => {
      const namespace = uniqueNamespace("permanent");
      proxy.inject({ match, fault });

      const result = await importThroughProxy(namespace);

      const faulted = proxy.requests.filter((r) => r.fault !== undefined);
      expect(faulted.map(describeRequest)).toHaveLength(requests);
      expect(result.published).toEqual([]);
      expect(result.failures).toHaveLength(1);
      const [failure] = result.failures;
      expect(failure.message).toContain(message);
      expect(failure.hint).toContain(hint);
      const layer = faulted.find(isLayerPut);
      if (layer) {
        expect(failure.message).toContain(
          `uploading blob ${blobDigestOf(layer)} of ${layer.headers["content-length"]} bytes`,
        );
      }
      const retries = result.warnings.filter((w) => w.includes("trying again"));
      expect(retries).toHaveLength(match === isLayerPut ? requests - 1 : 0);
      expect(await reader.tags(`${namespace}/example/faulty`)).toEqual([]);
    },
  );
});

describe.skipIf(!env)("registry auth challenges", () => {
  const reader = new RegistryReader(env?.registry ?? "");
  const username = "hostile-user";
  const password = "hostile-password-7c2e";
  const basicAuthorization = `Basic ${Buffer.from(`${username}:${password}`).toString("base64")}`;
  let archive: string;
  let dockerConfigDir: string;
  let proxy: FaultProxy;
  let tokens: TokenServer | undefined;

  beforeAll(async () => {
    // Two members that share a base layer, so that the import also mounts
    // across repositories and copies both members into the list's repository.
    archive = await writeArchive("example/guarded:1.0", [
      {
        repository: "example/guarded-amd64:1.0",
        architecture: "amd64",
        layers: [textLayer("base"), textLayer("amd64")],
      },
      {
        repository: "example/guarded-arm64:1.0",
        architecture: "arm64",
        layers: [textLayer("base"), textLayer("arm64")],
      },
    ]);
    // An empty Docker config, so that only the given credentials count.
    dockerConfigDir = await outputFolder();
  });

  afterEach(async () => {
    await proxy?.close();
    await tokens?.close();
    tokens = undefined;
  });

  function importWith(
    namespace: string,
    options: Partial<ImportOptions> = {},
  ): Promise<ImportResult> {
    return outputFolder().then((outputDir) =>
      importArchive({
        archive,
        namespace,
        registry: proxy.address,
        username,
        password,
        dockerConfigDir,
        outputDir,
        ...options,
      }),
    );
  }

  async function expectPublished(namespace: string, result: ImportResult) {
    expect(failureText(result)).toBe("");
    expect(result.published).toHaveLength(2);
    expect(result.lists).toHaveLength(1);
    expect(await reader.tagged(namespace)).toEqual([
      `${namespace}/example/guarded:1.0`,
      `${namespace}/example/guarded-amd64:1.0`,
      `${namespace}/example/guarded-arm64:1.0`,
    ]);
    expect(JSON.stringify(result)).not.toContain(password);
  }

  const bearer = [
    {
      name: "with realm, service and scope",
      service: "hostile-registry",
      docker: false,
    },
    { name: "without service", service: undefined, docker: false },
    {
      name: "with realm, service and scope, through Docker",
      service: "hostile-registry",
      docker: true,
    },
  ];

  it.each(bearer)(
    "follows a bearer challenge $name",
    async ({ service, docker }) => {
      const namespace = uniqueNamespace("bearer");
      tokens = await new TokenServer({ username, password, service }).start();
      proxy = await new FaultProxy(env!.registry).start();
      proxy.inject(tokens.challengeRule());

      const result = await importWith(namespace, { docker });

      await expectPublished(namespace, result);
      expect(tokens.requests.length).toBeGreaterThan(0);
      for (const request of tokens.requests) {
        expect(request.authorized).toBe(true);
        expect(request.service).toBe(service ?? null);
      }
      const granted = new Set(
        tokens.requests.flatMap((r) => r.scopes.flatMap(splitScope)),
      );
      for (const repository of ["guarded", "guarded-amd64", "guarded-arm64"]) {
        for (const action of ["pull", "push"]) {
          expect(granted).toContain(
            `repository:${namespace}/example/${repository}:${action}`,
          );
        }
      }
      // The base layer is mounted from the repository that got it first.
      const mounts = proxy.requests.filter(
        (r) =>
          r.method === "POST" && r.path.includes("mount=") && r.status === 201,
      );
      expect(mounts.length).toBeGreaterThan(0);
      for (const mount of mounts) {
        const from = new URL(mount.path, "http://proxy").searchParams.get(
          "from",
        );
        expect(granted).toContain(`repository:${from}:pull`);
      }
    },
  );

  it("sends basic credentials for a realm that is not a URL", async () => {
    const namespace = uniqueNamespace("basic");
    proxy = await new FaultProxy(env!.registry).start();
    proxy.inject({
      match: (r) => r.headers.authorization !== basicAuthorization,
      fault: registryError(401, "UNAUTHORIZED", "authentication required", {
        "www-authenticate": 'Basic realm="Hostile Registry Realm"',
      }),
    });

    const result = await importWith(namespace);

    await expectPublished(namespace, result);
    const challenged = proxy.requests.filter((r) => r.status === 401);
    expect(challenged.map(describeRequest)).toEqual(["GET /v2/ 401"]);
  });

  it("names a token realm that cannot be reached", async () => {
    const namespace = uniqueNamespace("no-realm");
    tokens = await new TokenServer({ username, password }).start();
    const closedPort = await unusedPort();
    const realm = `http://127.0.0.1:${closedPort}/token`;
    proxy = await new FaultProxy(env!.registry).start();
    proxy.inject(tokens.challengeRule(realm));

    const error = await importWith(namespace).catch((e: unknown) => e);

    expect(error).toBeInstanceOf(PpaLoadError);
    const { message, hint } = error as PpaLoadError;
    expect(message).toContain(`cannot reach the token service at ${realm}`);
    expect(message).toContain("ECONNREFUSED");
    expect(hint).toContain("check that this machine can reach it");
    expect(`${message} ${hint}`).not.toContain(password);
    expect(await reader.repositories(namespace)).toEqual([]);
  });

  it("names a bearer realm that is not a URL", async () => {
    const namespace = uniqueNamespace("bad-realm");
    tokens = await new TokenServer({ username, password }).start();
    proxy = await new FaultProxy(env!.registry).start();
    proxy.inject(tokens.challengeRule("Hostile Registry Realm"));

    const error = await importWith(namespace).catch((e: unknown) => e);

    expect(error).toBeInstanceOf(PpaLoadError);
    expect((error as PpaLoadError).message).toContain(
      `the registry's token realm "Hostile Registry Realm" is not a URL`,
    );
    expect(await reader.repositories(namespace)).toEqual([]);
  });

  it("reports credentials that the token service rejects", async () => {
    const namespace = uniqueNamespace("bad-token-login");
    tokens = await new TokenServer({ username, password }).start();
    proxy = await new FaultProxy(env!.registry).start();
    proxy.inject(tokens.challengeRule());

    const error = await importWith(namespace, {
      password: "wrong-password-3d9a",
    }).catch((e: unknown) => e);

    expect(error).toBeInstanceOf(PpaLoadError);
    const { message, hint } = error as PpaLoadError;
    expect(message).toContain(
      `the token service at ${tokens.realm} rejected the credentials (401)`,
    );
    expect(hint).toContain("check the user name and password");
    expect(`${message} ${hint}`).not.toContain("wrong-password-3d9a");
  });
});

/** Returns a port on 127.0.0.1 where nothing listens. */
async function unusedPort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, "127.0.0.1", resolve));
  const { port } = server.address() as net.AddressInfo;
  await new Promise((resolve) => server.close(resolve));
  return port;
}

describe.skipIf(!env)("plain-HTTP registries", () => {
  const reader = new RegistryReader(env?.registry ?? "");
  /**
   * A name that is not on loopback. RFC 6761 reserves `.test`, and no
   * lookup of it happens: every request goes to the proxy, and
   * test/helpers/no-dns.mjs fails any lookup that would not.
   */
  const remoteName = "registry.example.test:5000";
  const noDns = fileURLToPath(
    new URL("../helpers/no-dns.mjs", import.meta.url),
  );
  let archive: string;
  let proxy: FaultProxy | undefined;

  beforeAll(async () => {
    archive = await writeArchive("example/plain:1.0", [
      {
        repository: "example/plain:1.0",
        architecture: "amd64",
        layers: [textLayer("plain")],
      },
    ]);
  });

  afterEach(async () => {
    await proxy?.close();
    proxy = undefined;
  });

  async function importTo(
    registry: string,
    namespace: string,
    options: string[],
    extra: { env?: NodeJS.ProcessEnv; input?: string } = {},
  ) {
    const cwd = await outputFolder();
    return runCli(
      [
        "--archive",
        archive,
        "--namespace",
        namespace,
        "--registry",
        registry,
        ...options,
      ],
      {
        cwd,
        input: extra.input,
        env: { DOCKER_CONFIG: join(cwd, "no-config"), ...extra.env },
      },
    );
  }

  /** Sends every request of the CLI through `proxy`, and fails any DNS lookup. */
  function throughProxy(proxy: FaultProxy): NodeJS.ProcessEnv {
    return {
      HTTP_PROXY: `http://${proxy.address}`,
      HTTPS_PROXY: `http://${proxy.address}`,
      NO_PROXY: "",
      http_proxy: "",
      https_proxy: "",
      no_proxy: "",
      NODE_OPTIONS: `--import=${pathToFileURL(noDns).href}`,
    };
  }

  it.each(["127.0.0.1", "localhost"])(
    "uses plain HTTP for %s without --insecure",
    async (host) => {
      const namespace = uniqueNamespace("loopback");
      const registry = `${host}:${env!.registry.split(":")[1]}`;

      const run = await importTo(registry, namespace, []);

      expect(run.code).toBe(0);
      expect(run.stderr).toContain(`checking registry http://${registry}\n`);
      expect(run.stderr).toContain(
        `pushing 1 image to registry http://${registry}\n`,
      );
      expect(await reader.tags(`${namespace}/example/plain`)).toEqual(["1.0"]);
    },
  );

  it("uses HTTPS for another host without --insecure", async () => {
    const namespace = uniqueNamespace("remote-https");
    proxy = await new FaultProxy(env!.registry).start();

    const run = await importTo(remoteName, namespace, [], {
      env: throughProxy(proxy),
    });

    expect(run.code).toBe(1);
    expect(run.stderr).toContain(`checking registry https://${remoteName}\n`);
    expect(run.stderr).toContain(
      `error: cannot reach ${remoteName} (GET https://${remoteName}/v2/)`,
    );
    expect(proxy.tunnels).toEqual([remoteName]);
    expect(proxy.requests).toEqual([]);
    expect(await reader.repositories(namespace)).toEqual([]);
  });

  it("uses plain HTTP for another host with --insecure", async () => {
    const namespace = uniqueNamespace("remote-http");
    proxy = await new FaultProxy(env!.registry).start();

    const run = await importTo(remoteName, namespace, ["--insecure"], {
      env: throughProxy(proxy),
    });

    expect(run.stderr).not.toMatch(/error|warning/);
    expect(run.code).toBe(0);
    expect(run.stderr).toContain(`checking registry http://${remoteName}\n`);
    expect(proxy.tunnels).toEqual([]);
    expect(proxy.requests.length).toBeGreaterThan(0);
    for (const request of proxy.requests) {
      expect(request.host, describeRequest(request)).toBe(remoteName);
    }
    expect(await reader.tags(`${namespace}/example/plain`)).toEqual(["1.0"]);
  });

  it("says when --insecure meets an HTTPS registry", async () => {
    const namespace = uniqueNamespace("remote-mismatch");
    proxy = await new FaultProxy(env!.registry).start();
    // The response of a registry written in Go to plain HTTP on its TLS port.
    proxy.inject({
      match: () => true,
      fault: {
        kind: "answer",
        status: 400,
        body: "Client sent an HTTP request to an HTTPS server.\n",
      },
    });

    const run = await importTo(remoteName, namespace, ["--insecure"], {
      env: throughProxy(proxy),
    });

    expect(run.code).toBe(1);
    expect(run.stderr).toContain(`checking registry http://${remoteName}\n`);
    expect(run.stderr).toContain(
      `error: GET http://${remoteName}/v2/ failed: 400, Client sent an HTTP request to an HTTPS server.`,
    );
    expect(run.stderr).toContain(
      "hint: the registry speaks HTTPS; leave out --insecure",
    );
    expect(await reader.repositories(namespace)).toEqual([]);
  });

  it("warns before sending credentials over plain HTTP", async () => {
    const namespace = uniqueNamespace("remote-credentials");
    proxy = await new FaultProxy(env!.authRegistry).start();
    const password = env!.authPassword;

    const run = await importTo(
      remoteName,
      namespace,
      ["--insecure", "--username", env!.authUser, "--password-stdin"],
      { env: throughProxy(proxy), input: password },
    );

    expect(run.code).toBe(0);
    const warning = run.stderr.indexOf(
      `warning: sending the credentials from --username to ${remoteName} over plain HTTP (--insecure)`,
    );
    expect(warning).toBeGreaterThanOrEqual(0);
    expect(warning).toBeLessThan(run.stderr.indexOf("checking registry"));
    const withCredentials = proxy.requests.filter((r) =>
      r.headers.authorization?.startsWith("Basic "),
    );
    expect(withCredentials.length).toBeGreaterThan(0);
    expect(run.stdout + run.stderr).not.toContain(password);
    const authReader = new RegistryReader(env!.authRegistry, {
      user: env!.authUser,
      password,
    });
    expect(await authReader.tags(`${namespace}/example/plain`)).toEqual([
      "1.0",
    ]);
  });
});
