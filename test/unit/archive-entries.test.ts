import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable } from "node:stream";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { readArchiveEntries } from "../../src/archive/entries.js";
import { gzipDeterministic, tarEntries } from "../../testdata/generate.js";

describe("readArchiveEntries", () => {
  let folder: string;

  beforeAll(async () => {
    folder = await mkdtemp(join(tmpdir(), "ppa-load-entries-"));
  });

  afterAll(async () => {
    await rm(folder, { recursive: true, force: true });
  });

  it("reads on after a consumer leaves a read pending", async () => {
    const archive = join(folder, "pending.tgz");
    await writeFile(
      archive,
      gzipDeterministic(
        tarEntries([
          { path: "images/first.tar", body: Buffer.alloc(4 * 1024 * 1024, 1) },
          { path: "images/second.tar", body: "second" },
        ]),
      ),
    );

    const paths: string[] = [];
    for await (const entry of readArchiveEntries(archive)) {
      paths.push(entry.path);
      if (entry.path !== "images/first.tar") continue;
      // Readable.from reads ahead, so a read of the entry is left pending
      // when the consumer stops after one chunk.
      const stream = Readable.from(entry.body);
      for await (const _chunk of stream) break;
    }

    expect(paths).toEqual(["images/first.tar", "images/second.tar"]);
  }, 10_000);

  it("reports a GNU sparse file as skipped", async () => {
    const archive = join(folder, "sparse.tgz");
    const tar = tarEntries([
      { path: "images/a.tar", body: "sparse" },
      { path: "images/b.tar", body: "plain" },
    ]);
    // GNU tar marks a sparse file with type S; the header checksum follows.
    tar[156] = "S".charCodeAt(0);
    tar.fill(0x20, 148, 156);
    let sum = 0;
    for (let i = 0; i < 512; i += 1) sum += tar[i];
    tar.write(`${sum.toString(8).padStart(6, "0")}\0 `, 148, "latin1");
    await writeFile(archive, gzipDeterministic(tar));
    const skipped: string[] = [];

    const paths: string[] = [];
    for await (const entry of readArchiveEntries(archive, {
      onSkipped: (path, reason) => skipped.push(`${path}: ${reason}`),
    })) {
      paths.push(entry.path);
      entry.skip();
    }

    expect(paths).toEqual(["images/b.tar"]);
    expect(skipped).toEqual([
      "images/a.tar: it is a GNU sparse file, which this tool cannot read; pack the archive again without tar --sparse (-S)",
    ]);
  });

  it("rejects a manifest stored as a link", async () => {
    const archive = join(folder, "linked-manifest.tgz");
    await writeFile(
      archive,
      gzipDeterministic(
        tarEntries([
          { path: "ppa/manifest.json", body: "[]" },
          {
            path: "manifest.json",
            type: "symlink",
            linkpath: "ppa/manifest.json",
          },
        ]),
      ),
    );

    const read = async () => {
      for await (const entry of readArchiveEntries(archive)) entry.skip();
    };

    await expect(read()).rejects.toMatchObject({
      code: "ARCHIVE_UNREADABLE",
      message: expect.stringContaining(
        "manifest.json is a symbolic link to ppa/manifest.json, not a file",
      ),
    });
  });
});
