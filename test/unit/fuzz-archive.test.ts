import { mkdir, mkdtemp, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { gunzipSync, gzipSync } from "node:zlib";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { PpaLoadError } from "../../src/errors.js";
import { importArchive, inspectArchive } from "../../src/index.js";
import { goldenArchives } from "../../testdata/generate.js";

/** A small deterministic generator (mulberry32), so a failure can be replayed. */
function random(seed: number): () => number {
  let state = seed;
  return () => {
    state = (state + 0x6d2b79f5) | 0;
    let t = Math.imul(state ^ (state >>> 15), 1 | state);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

interface Mutation {
  name: string;
  bytes: Buffer;
}

/** Flips bytes of the tar inside the archive, or cuts the archive or its tar short. */
function mutations(archive: Buffer, count: number, seed: number): Mutation[] {
  const next = random(seed);
  const tar = gunzipSync(archive);
  const result: Mutation[] = [];
  for (let i = 0; i < count; i += 1) {
    if (i % 4 === 2) {
      const offset = Math.floor(next() * archive.length);
      result.push({
        name: `gzip cut at ${offset}`,
        bytes: archive.subarray(0, offset),
      });
      continue;
    }
    if (i % 4 === 3) {
      const offset = Math.floor(next() * tar.length);
      result.push({
        name: `plain tar cut at ${offset}`,
        bytes: tar.subarray(0, offset),
      });
      continue;
    }
    const mutated = Buffer.from(tar);
    const flips = 1 + Math.floor(next() * 8);
    const offsets: number[] = [];
    for (let flip = 0; flip < flips; flip += 1) {
      // Half of the flips land in the first block of a 512-byte record,
      // where the tar headers are.
      const offset =
        next() < 0.5
          ? Math.floor(next() * (mutated.length / 512)) * 512 +
            Math.floor(next() * 512)
          : Math.floor(next() * mutated.length);
      mutated[offset] ^= 1 + Math.floor(next() * 255);
      offsets.push(offset);
    }
    result.push({
      name: `bytes ${offsets.join(",")} flipped`,
      bytes: gzipSync(mutated),
    });
  }
  return result;
}

describe("damaged archives", () => {
  let folder: string;
  const archive = goldenArchives().get("multiarch-legacy.tgz")!;

  beforeAll(async () => {
    folder = await mkdtemp(join(tmpdir(), "ppa-load-fuzz-"));
  });

  afterAll(async () => {
    await rm(folder, { recursive: true, force: true });
  });

  it("inspect returns a result or a PpaLoadError", async () => {
    for (const mutation of mutations(archive, 90, 7)) {
      const path = join(folder, "inspect.tgz");
      await writeFile(path, mutation.bytes);
      try {
        const result = await inspectArchive({ archive: path });
        expect(result.problems, mutation.name).toBeDefined();
      } catch (error) {
        expect(error, mutation.name).toBeInstanceOf(PpaLoadError);
      }
    }
  }, 120_000);

  it("import writes nothing outside its output folder", async () => {
    for (const [index, mutation] of mutations(archive, 30, 11).entries()) {
      const work = join(folder, `import-${index}`);
      const path = join(folder, `import-${index}.tgz`);
      await writeFile(path, mutation.bytes);
      const outputDir = join(work, "out");
      const tempDir = join(work, "temp");
      await mkdir(tempDir, { recursive: true });
      try {
        await importArchive({
          archive: path,
          namespace: "fuzz",
          outputDir,
          tempDir,
        });
      } catch (error) {
        expect(error, mutation.name).toBeInstanceOf(PpaLoadError);
      }
      const names = (await readdir(work)).sort();
      expect(
        names.every((name) => name === "out" || name === "temp"),
        `${mutation.name}: ${names.join(", ")}`,
      ).toBe(true);
      expect(await readdir(tempDir), mutation.name).toEqual([]);
    }
  }, 180_000);
});
