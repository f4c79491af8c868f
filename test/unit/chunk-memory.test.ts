import { mkdtemp, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { PassThrough, Readable, Writable } from "node:stream";
import { setTimeout as sleep } from "node:timers/promises";
import { createGunzip, gzipSync } from "node:zlib";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { Parser, type ReadEntry } from "tar";

import { readArchiveEntries } from "../../src/archive/entries.js";
import {
  BlockAlignedWriter,
  ZlibOutput,
  adopt,
  discard,
  retain,
  pipeReleasing,
  release,
  writtenChunks,
} from "../../src/chunk-memory.js";
import { gzipDeterministic, tarEntries } from "../../testdata/generate.js";

const large = () => Buffer.alloc(256 * 1024, 7);

describe("chunk references", () => {
  it("frees an adopted buffer after the last release, not before", () => {
    const chunk = large();
    adopt(chunk);
    const view = chunk.subarray(10, 20);
    retain(view);
    release(chunk);
    expect(view.length).toBe(10);
    expect(chunk.buffer.byteLength).toBe(256 * 1024);
    release(view);
    expect(chunk.buffer.byteLength).toBe(0);
    expect(chunk.length).toBe(0);
  });

  it("leaves alone buffers that were not adopted, and small ones", () => {
    const foreign = large();
    retain(foreign);
    release(foreign);
    release(foreign);
    expect(foreign.length).toBe(256 * 1024);

    const small = Buffer.alloc(1024);
    adopt(small);
    release(small);
    expect(small.length).toBe(1024);
  });

  it("leaves alone a buffer cut from the shared pool", () => {
    // Node.js 24's pool buffers are 64 KiB, the size from which buffers count.
    const pooled = Buffer.allocUnsafe(100);
    const size = pooled.buffer.byteLength;
    adopt(pooled);
    expect(() => release(pooled)).not.toThrow();
    expect(pooled.length).toBe(100);
    expect(pooled.buffer.byteLength).toBe(size);
  });

  it("leaves a buffer that cannot be detached to V8", () => {
    const chunk = large();
    adopt(chunk);
    const transfer = ArrayBuffer.prototype.transfer;
    ArrayBuffer.prototype.transfer = () => {
      throw new TypeError("ArrayBuffer is not detachable");
    };
    try {
      expect(() => release(chunk)).not.toThrow();
    } finally {
      ArrayBuffer.prototype.transfer = transfer;
    }
  });
});

describe("BlockAlignedWriter", () => {
  it("writes whole blocks, and copies the part that ends mid-block", () => {
    const written: Buffer[] = [];
    const writer = new BlockAlignedWriter((chunk) => {
      written.push(chunk);
      return true;
    });
    // Its own memory, apart from the pool that small copies come from.
    const input = Buffer.allocUnsafeSlow(2000);
    for (let index = 0; index < input.length; index += 1) {
      input[index] = index % 251;
    }
    const first = input.subarray(0, 700);
    const second = input.subarray(700, 900);
    const third = input.subarray(900);
    writer.write(first);
    writer.write(second);
    writer.write(third);
    const lengthsBeforeEnd = written.map((chunk) => chunk.length);
    let ended = false;
    writer.end(() => (ended = true));

    expect(lengthsBeforeEnd.every((length) => length % 512 === 0)).toBe(true);
    expect(ended).toBe(true);
    expect(Buffer.concat(written)).toEqual(input);
    // Only whole blocks of a chunk are written as views of it; the rest are copies.
    for (const chunk of written) {
      if (chunk.buffer === input.buffer) {
        expect(chunk.length % 512).toBe(0);
      }
    }
  });

  it("reports a full parser", () => {
    const writer = new BlockAlignedWriter(() => false);
    expect(writer.write(Buffer.alloc(100))).toBe(true);
    expect(writer.write(Buffer.alloc(1024))).toBe(false);
  });
});

describe("writtenChunks", () => {
  it("yields the chunks as they were written, without joining them", async () => {
    // A tar entry of two blocks, written in two parts before it is read.
    const tar = tarEntries([{ path: "a", body: Buffer.alloc(1024, 1) }]);
    let entry: ReadEntry | undefined;
    const parser = new Parser({ onReadEntry: (read) => (entry = read) });
    parser.write(tar.subarray(0, 1024));
    parser.write(tar.subarray(1024));
    parser.end();
    const chunks: Buffer[] = [];
    for await (const chunk of writtenChunks(entry!)) chunks.push(chunk);
    expect(chunks.map((chunk) => chunk.length)).toEqual([512, 512]);
    expect(chunks[0].buffer).toBe(tar.buffer);
  });

  it("throws when the stream closes early", async () => {
    const stream = new PassThrough();
    stream.write("a");
    setImmediate(() => stream.destroy());
    await expect(async () => {
      for await (const _chunk of writtenChunks(stream)) {
        // Read on until the stream closes.
      }
    }).rejects.toThrow("the stream closed before its end");
  });

  it("throws the stream's error", async () => {
    const stream = new PassThrough();
    stream.write("a");
    setImmediate(() => stream.destroy(new Error("broken")));
    await expect(async () => {
      for await (const _chunk of writtenChunks(stream)) {
        // Read on until the error.
      }
    }).rejects.toThrow("broken");
  });
});

describe("ZlibOutput", () => {
  it("frees zlib's buffers once zlib has moved on and the reader is done", async () => {
    const original = Buffer.alloc(3 * 128 * 1024 + 1000);
    for (let index = 0; index < original.length; index += 1) {
      original[index] = (index * 7919) % 256;
    }
    const gunzip = createGunzip({ chunkSize: 128 * 1024 });
    Readable.from([gzipSync(original)]).pipe(gunzip);
    const output = new ZlibOutput(128 * 1024);
    const copies: Buffer[] = [];
    const seen: Buffer[] = [];
    for await (const chunk of writtenChunks(gunzip)) {
      output.adopt(chunk);
      copies.push(Buffer.from(chunk));
      seen.push(chunk);
      release(chunk);
    }
    output.ended();
    expect(Buffer.concat(copies)).toEqual(original);
    expect(seen.every((chunk) => chunk.buffer.byteLength === 0)).toBe(true);
  });

  it("leaves a chunk that is not in one of zlib's buffers to V8", () => {
    const output = new ZlibOutput(64 * 1024);
    const joined = Buffer.alloc(100 * 1024);
    output.adopt(joined);
    release(joined);
    expect(joined.length).toBe(100 * 1024);
  });
});

describe("discard", () => {
  it("releases each chunk it drops", async () => {
    const stream = new PassThrough();
    const chunks = [large(), large()];
    for (const chunk of chunks) {
      adopt(chunk);
      stream.write(chunk);
    }
    stream.end();
    discard(stream);
    await new Promise((resolve) => stream.on("end", resolve));
    expect(chunks.map((chunk) => chunk.length)).toEqual([0, 0]);
  });
});

describe("pipeReleasing", () => {
  it("releases each chunk once the destination has taken it", async () => {
    const chunks = [large(), large()];
    for (const chunk of chunks) adopt(chunk);
    const received: number[] = [];
    const destination = new Writable({
      write(chunk: Buffer, _encoding, callback) {
        received.push(chunk.length);
        // Still whole while the destination works on it.
        expect(chunk.buffer.byteLength).toBe(256 * 1024);
        setImmediate(callback);
      },
    });
    const done = new Promise((resolve) => destination.on("finish", resolve));
    pipeReleasing(Readable.from(chunks, { objectMode: false }), destination);
    await done;
    expect(received).toEqual([256 * 1024, 256 * 1024]);
    expect(chunks.every((chunk) => chunk.buffer.byteLength === 0)).toBe(true);
  });
});

describe("archive entries and chunk references", () => {
  let folder: string;

  beforeAll(async () => {
    folder = await mkdtemp(join(tmpdir(), "ppa-load-chunks-"));
  });

  afterAll(async () => {
    await rm(folder, { recursive: true, force: true });
  });

  it("reads an archive with padding after its end blocks", async () => {
    // tar pads an archive to whole records; node-tar keeps a view of what
    // follows the end blocks until the next write.
    const archive = join(folder, "padded.tgz");
    const tar = tarEntries([
      { path: "images/a.tar", body: Buffer.alloc(100 * 1024, 1) },
    ]);
    await writeFile(
      archive,
      gzipDeterministic(Buffer.concat([tar, Buffer.alloc(900 * 1024)])),
    );

    const paths: string[] = [];
    for await (const entry of readArchiveEntries(archive)) {
      paths.push(entry.path);
      for await (const chunk of writtenChunks(entry.body)) release(chunk);
    }

    expect(paths).toEqual(["images/a.tar"]);
  });

  it("keeps the bytes of an entry that waits behind another", async () => {
    const bodies = [
      Buffer.alloc(100 * 1024, 1),
      Buffer.alloc(100 * 1024, 2),
      Buffer.alloc(1500 * 1024, 3),
      Buffer.from("last"),
    ];
    const archive = join(folder, "queued.tgz");
    await writeFile(
      archive,
      gzipDeterministic(
        tarEntries(
          bodies.map((body, index) => ({ path: `images/${index}.tar`, body })),
        ),
      ),
    );

    const read: Buffer[] = [];
    for await (const entry of readArchiveEntries(archive)) {
      // The next entries arrive in the same chunk and wait while this one is read slowly.
      if (read.length === 0) await sleep(20);
      const parts: Buffer[] = [];
      for await (const chunk of writtenChunks(entry.body)) {
        parts.push(Buffer.from(chunk));
        release(chunk);
      }
      read.push(Buffer.concat(parts));
    }

    expect(read.map((body) => body.length)).toEqual(
      bodies.map((body) => body.length),
    );
    expect(read).toEqual(bodies);
  });
});
