import { randomBytes } from "node:crypto";
import { mkdtemp, readFile, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

import {
  type ImportEvent,
  type ImportOptions,
  importArchive,
} from "../../src/index.js";
import { uploadJournalName } from "../../src/import.js";
import {
  dockerSaveTarball,
  ppaArchive,
  type ImageSpec,
} from "../../testdata/generate.js";
import { services, uniqueNamespace } from "../helpers/environment.js";
import { RegistryReader } from "../helpers/registry.js";

const env = services();
const mebibyte = 1024 * 1024;

/** One image whose only layer is 6 MiB of random bytes, which gzip cannot shrink. */
const image: ImageSpec = {
  repoTags: ["example/big:1.0"],
  layers: [{ files: { "data/random.bin": randomBytes(6 * mebibyte) } }],
};

describe.skipIf(!env)("resumed uploads", () => {
  let folder: string;
  let archive: string;

  beforeAll(async () => {
    folder = await mkdtemp(join(tmpdir(), "ppa-load-resume-"));
    archive = join(folder, "big.tgz");
    await writeFile(
      archive,
      ppaArchive({
        images: [{ path: "images/big.tar", body: dockerSaveTarball([image]) }],
      }),
    );
  });

  afterAll(async () => {
    await rm(folder, { recursive: true, force: true });
  });

  function options(namespace: string, outputDir: string): ImportOptions {
    return {
      archive,
      registry: env!.registry,
      namespace,
      outputDir,
      chunkSize: mebibyte,
      compression: "none",
    };
  }

  /**
   * Runs an import that Ctrl-C stops after the registry acknowledged three
   * chunks: the config's only chunk and at least one of the layer's.
   */
  async function interruptedImport(namespace: string, outputDir: string) {
    const controller = new AbortController();
    let acknowledged = 0;
    const result = await importArchive({
      ...options(namespace, outputDir),
      signal: controller.signal,
      onEvent: (event) => {
        if (
          event.type === "request" &&
          event.method === "PATCH" &&
          event.status === 202 &&
          ++acknowledged === 3
        ) {
          controller.abort();
        }
      },
    });
    expect(result.published).toEqual([]);
  }

  it("records the acknowledged offset", async () => {
    const namespace = uniqueNamespace("resume");
    const outputDir = join(folder, "record");

    await interruptedImport(namespace, outputDir);

    const journal = JSON.parse(
      await readFile(join(outputDir, uploadJournalName), "utf8"),
    );
    expect(journal.uploads).toHaveLength(1);
    expect(journal.uploads[0].repository).toBe(`${namespace}/example/big`);
    expect(journal.uploads[0].offset).toBeGreaterThanOrEqual(mebibyte);
  });

  it("sends only the rest of the blob again", async () => {
    const namespace = uniqueNamespace("resume");
    const outputDir = join(folder, "rest");
    await interruptedImport(namespace, outputDir);
    const recorded = JSON.parse(
      await readFile(join(outputDir, uploadJournalName), "utf8"),
    ).uploads[0];
    const events: ImportEvent[] = [];

    const result = await importArchive({
      ...options(namespace, outputDir),
      onEvent: (event) => events.push(event),
    });

    expect(result.failures).toEqual([]);
    expect(events).toContainEqual(
      expect.objectContaining({
        type: "upload-resume",
        outcome: "resumed",
        offset: recorded.offset,
      }),
    );
    expect(result.blobs.resumed).toBe(1);
    expect(result.blobs.bytesResumed).toBe(recorded.offset);
    const patches = events.filter(
      (event) => event.type === "request" && event.method === "PATCH",
    );
    expect(patches).toHaveLength(
      Math.ceil((recorded.size - recorded.offset) / mebibyte),
    );
    const reader = new RegistryReader(env!.registry);
    const manifest = await reader.manifest(`${namespace}/example/big`, "1.0");
    expect(manifest).toBeDefined();
    for (const layer of manifest!.json.layers) {
      expect(
        await reader.hasBlob(`${namespace}/example/big`, layer.digest),
      ).toBe(true);
    }
    expect(await readdir(outputDir)).not.toContain(uploadJournalName);
  });

  it("starts over when the registry lost the session", async () => {
    const namespace = uniqueNamespace("resume");
    const outputDir = join(folder, "lost");
    await interruptedImport(namespace, outputDir);
    const file = join(outputDir, uploadJournalName);
    const journal = JSON.parse(await readFile(file, "utf8"));
    // A session id the registry never issued stands for one it dropped.
    journal.uploads[0].url = journal.uploads[0].url.replace(
      /uploads\/[^?]+/,
      "uploads/00000000-0000-0000-0000-000000000000",
    );
    await writeFile(file, JSON.stringify(journal));
    const events: ImportEvent[] = [];

    const result = await importArchive({
      ...options(namespace, outputDir),
      onEvent: (event) => events.push(event),
    });

    expect(result.failures).toEqual([]);
    expect(events).toContainEqual(
      expect.objectContaining({ type: "upload-resume", outcome: "expired" }),
    );
    expect(result.blobs.resumed).toBe(0);
    expect(result.published).toHaveLength(1);
    expect(await readdir(outputDir)).not.toContain(uploadJournalName);
  });

  it("ignores a damaged journal with a warning", async () => {
    const namespace = uniqueNamespace("resume");
    const outputDir = join(folder, "damaged");
    await interruptedImport(namespace, outputDir);
    await writeFile(join(outputDir, uploadJournalName), "{ not json");

    const result = await importArchive(options(namespace, outputDir));

    expect(result.failures).toEqual([]);
    expect(result.warnings).toContainEqual(
      expect.stringMatching(
        /upload-journal\.json, which is not a valid upload journal/,
      ),
    );
    expect(result.published).toHaveLength(1);
  });
});
