import { spawnSync } from "node:child_process";
import { randomBytes } from "node:crypto";
import { Readable, Transform, Writable } from "node:stream";
import { pipeline } from "node:stream/promises";
import { setTimeout as sleep } from "node:timers/promises";
import zlib from "node:zlib";

import { afterEach, describe, expect, it, vi } from "vitest";

import {
  createParallelGzip,
  gzipDefaults,
  type ParallelGzip,
  type ParallelGzipOptions,
} from "../../src/blobs/gzip.js";

const BLOCK_SIZE = 64 * 1024;

afterEach(() => {
  vi.restoreAllMocks();
});

/** Returns text-like data that compresses well, different for each `seed`. */
function compressibleData(size: number, seed = 0): Buffer {
  const lines: string[] = [];
  let length = 0;
  for (let i = 0; length < size; i++) {
    const line = `drwxr-xr-x root/root ${(i * 7919 + seed) % 100000} usr/share/doc/package-${i % 97}/changelog.${i % 5}\n`;
    lines.push(line);
    length += line.length;
  }
  return Buffer.from(lines.join("")).subarray(0, size);
}

/** Returns data in which random runs alternate with compressible runs. */
function mixedData(size: number): Buffer {
  const data = Buffer.alloc(size);
  const text = compressibleData(Math.min(size, 1 << 20));
  for (let offset = 0; offset < size; offset += 96 * 1024) {
    const randomEnd = Math.min(offset + 32 * 1024, size);
    data.set(randomBytes(randomEnd - offset), offset);
    const textEnd = Math.min(randomEnd + 64 * 1024, size);
    text.copy(data, randomEnd, 0, textEnd - randomEnd);
  }
  return data;
}

/** Gzips `input` with the stream, writing it in pieces of `writeSizes` (cycled). */
async function gzip(
  input: Buffer,
  options: ParallelGzipOptions = {},
  writeSizes: number[] = [input.length || 1],
): Promise<Buffer> {
  const pieces: Buffer[] = [];
  let offset = 0;
  for (let i = 0; offset < input.length; i++) {
    const piece = input.subarray(
      offset,
      offset + writeSizes[i % writeSizes.length]!,
    );
    pieces.push(piece);
    offset += piece.length;
  }
  const output: Buffer[] = [];
  await pipeline(
    Readable.from(pieces),
    createParallelGzip(options),
    new Writable({
      write(chunk: Buffer, _encoding, callback) {
        output.push(chunk);
        callback();
      },
    }),
  );
  return Buffer.concat(output);
}

/** Decompresses with the system gunzip binary. */
function systemGunzip(compressed: Buffer): Buffer {
  const result = spawnSync("gunzip", ["-c"], {
    input: compressed,
    maxBuffer: 1 << 30,
  });
  if (result.error) throw result.error;
  expect(result.stderr.toString()).toBe("");
  expect(result.status).toBe(0);
  return result.stdout;
}

/** Returns `size` bytes of a stream that produces `chunkSize` pieces of `pattern`. */
function patternSource(
  pattern: Buffer,
  size: number,
  chunkSize: number,
  onRead: (bytesRead: number) => void = () => {},
): Readable {
  let bytesRead = 0;
  return new Readable({
    read() {
      if (bytesRead >= size) {
        this.push(null);
        return;
      }
      const length = Math.min(chunkSize, size - bytesRead);
      const start = bytesRead % (pattern.length - chunkSize);
      bytesRead += length;
      onRead(bytesRead);
      this.push(pattern.subarray(start, start + length));
    },
  });
}

describe("createParallelGzip", () => {
  const sizes = [
    0,
    1,
    BLOCK_SIZE - 1,
    BLOCK_SIZE,
    BLOCK_SIZE + 1,
    5 * BLOCK_SIZE + 12345,
  ];
  const kinds = [
    ["random", (size: number) => randomBytes(size)],
    ["compressible", (size: number) => compressibleData(size)],
  ] as const;

  for (const [kind, generate] of kinds) {
    for (const size of sizes) {
      it(`round-trips ${size} ${kind} bytes`, async () => {
        const input = generate(size);

        const compressed = await gzip(input, { blockSize: BLOCK_SIZE });

        expect(zlib.gunzipSync(compressed).equals(input)).toBe(true);
        expect(systemGunzip(compressed).equals(input)).toBe(true);
      });
    }
  }

  it("compresses compressible data", async () => {
    const input = compressibleData(8 * BLOCK_SIZE);

    const compressed = await gzip(input, { blockSize: BLOCK_SIZE });

    expect(compressed.length).toBeLessThan(input.length / 4);
  });

  it("writes a single gzip member", async () => {
    const input = mixedData(7 * BLOCK_SIZE + 100);

    const compressed = await gzip(input, { blockSize: BLOCK_SIZE, level: 6 });

    // ID1 ID2, CM deflate, FLG none, MTIME 0, XFL 0 at level 6, OS unknown.
    expect([...compressed.subarray(0, 10)]).toEqual([
      0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff,
    ]);
    const trailer = compressed.subarray(compressed.length - 8);
    expect(trailer.readUInt32LE(0)).toBe(zlib.crc32(input));
    expect(trailer.readUInt32LE(4)).toBe(input.length);

    // The deflate stream ends with its final block exactly where the trailer starts.
    const body = compressed.subarray(10);
    const inflated = zlib.inflateRawSync(body, { info: true }) as unknown as {
      buffer: Buffer;
      engine: zlib.InflateRaw;
    };
    expect(inflated.buffer.equals(input)).toBe(true);
    expect(inflated.engine.bytesWritten).toBe(body.length - 8);
  });

  it("writes 20 bytes for empty input", async () => {
    const compressed = await gzip(Buffer.alloc(0));

    expect([...compressed]).toEqual([
      0x1f, 0x8b, 8, 0, 0, 0, 0, 0, 0, 0xff,
      // Empty final fixed-Huffman block.
      0x03, 0x00,
      // CRC-32 and ISIZE of nothing.
      0, 0, 0, 0, 0, 0, 0, 0,
    ]);
  });

  it("matches zlib for a single block", async () => {
    const input = compressibleData(BLOCK_SIZE - 10);

    const compressed = await gzip(input, { blockSize: BLOCK_SIZE, level: 9 });

    const body = compressed.subarray(10, compressed.length - 8);
    expect(body.equals(zlib.deflateRawSync(input, { level: 9 }))).toBe(true);
  });

  it("gives the same output for any writes and concurrency", async () => {
    const input = mixedData(6 * BLOCK_SIZE + 777);
    const options = { blockSize: BLOCK_SIZE, level: 6 };
    const reference = await gzip(input, options);

    const variants: [string, ParallelGzipOptions, number[]][] = [
      ["1-byte then large writes", options, [1, 3, 100_000]],
      ["block-sized writes", options, [BLOCK_SIZE]],
      ["writes of several blocks", options, [3 * BLOCK_SIZE + 5]],
      ["uneven writes", options, [4093, 65537, 17, 30_000]],
      ["concurrency 1", { ...options, concurrency: 1 }, [50_000]],
      ["concurrency 7", { ...options, concurrency: 7 }, [50_000]],
    ];
    for (const [name, variantOptions, writeSizes] of variants) {
      const output = await gzip(input, variantOptions, writeSizes);
      expect(output.equals(reference), name).toBe(true);
    }
    expect((await gzip(input, options)).equals(reference)).toBe(true);
  });

  it("stores blocks at level 0", async () => {
    const input = compressibleData(3 * BLOCK_SIZE + 5);

    const compressed = await gzip(input, { blockSize: BLOCK_SIZE, level: 0 });

    // XFL 4 marks the fastest compression, as zlib writes it for levels 0 and 1.
    expect(compressed[8]).toBe(4);
    // BTYPE 00: the first deflate block is stored.
    expect(compressed[10]! & 0b110).toBe(0);
    expect(compressed.length).toBeGreaterThan(input.length);
    expect(zlib.gunzipSync(compressed).equals(input)).toBe(true);
    expect(systemGunzip(compressed).equals(input)).toBe(true);
  });

  it("compresses at level 9", async () => {
    const input = mixedData(4 * BLOCK_SIZE + 5);

    const compressed = await gzip(input, { blockSize: BLOCK_SIZE, level: 9 });

    expect(compressed[8]).toBe(2);
    expect(zlib.gunzipSync(compressed).equals(input)).toBe(true);
    expect(systemGunzip(compressed).equals(input)).toBe(true);
  });

  it("uses the dictionary across blocks", async () => {
    // Each block repeats the one before it, so with the previous block as its
    // dictionary it compresses to a few bytes.
    const block = randomBytes(16 * 1024);
    const input = Buffer.concat([block, block, block, block]);

    const compressed = await gzip(input, { blockSize: block.length });

    expect(compressed.length).toBeLessThan(block.length + 1024);
    expect(zlib.gunzipSync(compressed).equals(input)).toBe(true);
  });

  it("rejects invalid options", () => {
    expect(() => createParallelGzip({ level: 10 })).toThrow(RangeError);
    expect(() => createParallelGzip({ level: -1 })).toThrow(RangeError);
    expect(() => createParallelGzip({ blockSize: 0 })).toThrow(RangeError);
    expect(() => createParallelGzip({ blockSize: 1.5 })).toThrow(RangeError);
    expect(() => createParallelGzip({ concurrency: 0 })).toThrow(
      /Invalid gzip option concurrency: 0/,
    );
  });

  it("uses the documented defaults", () => {
    const stream = createParallelGzip();

    expect(stream.level).toBe(gzipDefaults.level);
    expect(stream.blockSize).toBe(gzipDefaults.blockSize);
    expect(stream.concurrency).toBeGreaterThanOrEqual(1);
  });
});

describe("createParallelGzip memory", () => {
  it("bounds buffering with a slow consumer", async () => {
    const totalBytes = 200 * 1000 * 1000;
    const blockSize = gzipDefaults.blockSize;
    const concurrency = 2;
    const stream = createParallelGzip({ level: 1, blockSize, concurrency });

    let peak = 0;
    const sample = () => {
      peak = Math.max(peak, stream.bufferedBytes);
    };
    // The readable buffer is largest right after a push.
    const push = stream.push.bind(stream);
    stream.push = (chunk: unknown, encoding?: BufferEncoding) => {
      const accepted = push(chunk, encoding);
      sample();
      return accepted;
    };

    // Writes larger than a block, so the stream itself must hold back input.
    const pattern = mixedData(8 << 20);
    let inputCrc = 0;
    const source = patternSource(pattern, totalBytes, 3 << 20, sample);
    source.on("data", (chunk: Buffer) => {
      inputCrc = zlib.crc32(chunk, inputCrc);
    });

    // Stalls for 200 ms after every 16 MiB of compressed output.
    let sinceStall = 0;
    const slowConsumer = new Transform({
      highWaterMark: 16 * 1024,
      transform(chunk: Buffer, _encoding, callback) {
        sample();
        sinceStall += chunk.length;
        if (sinceStall < 16 << 20) {
          callback(null, chunk);
          return;
        }
        sinceStall = 0;
        setTimeout(() => callback(null, chunk), 200);
      },
    });

    let outputCrc = 0;
    let outputBytes = 0;
    await pipeline(
      source,
      stream,
      slowConsumer,
      zlib.createGunzip(),
      new Writable({
        write(chunk: Buffer, _encoding, callback) {
          outputCrc = zlib.crc32(chunk, outputCrc);
          outputBytes += chunk.length;
          callback();
        },
      }),
    );

    expect(outputBytes).toBe(totalBytes);
    expect(outputCrc).toBe(inputCrc);
    expect(peak).toBeGreaterThanOrEqual(blockSize);
    expect(peak).toBeLessThanOrEqual((concurrency + 2) * blockSize);
  });

  it("stops reading input when nothing is consumed", async () => {
    const blockSize = 256 * 1024;
    const concurrency = 2;
    const stream = createParallelGzip({ level: 1, blockSize, concurrency });
    let bytesRead = 0;
    const source = patternSource(
      randomBytes(1 << 20),
      100 << 20,
      64 * 1024,
      (total) => (bytesRead = total),
    );
    source.pipe(stream);

    // Wait until reading has stopped for 300 ms.
    let lastBytesRead = -1;
    while (bytesRead !== lastBytesRead) {
      lastBytesRead = bytesRead;
      await sleep(300);
    }

    expect(bytesRead).toBeLessThan(4 << 20);
    expect(stream.bufferedBytes).toBeGreaterThan(0);
    expect(stream.bufferedBytes).toBeLessThanOrEqual(
      (concurrency + 2) * blockSize,
    );
    source.destroy();
    stream.destroy();
  });
});

describe("createParallelGzip errors", () => {
  it("propagates source errors", async () => {
    const stream = createParallelGzip({ blockSize: BLOCK_SIZE });
    const source = new Readable({
      read() {
        this.push(randomBytes(BLOCK_SIZE));
        this.destroy(new Error("disk read failed"));
      },
    });

    await expect(
      pipeline(
        source,
        stream,
        new Writable({ write: (_chunk, _encoding, callback) => callback() }),
      ),
    ).rejects.toThrow("disk read failed");
    expect(stream.destroyed).toBe(true);
  });

  it("emits the error passed to destroy", async () => {
    const stream: ParallelGzip = createParallelGzip({
      blockSize: BLOCK_SIZE,
      concurrency: 2,
    });
    const errors: Error[] = [];
    stream.on("error", (error) => errors.push(error));
    let ended = false;
    stream.on("end", () => (ended = true));
    stream.resume();

    stream.write(randomBytes(5 * BLOCK_SIZE));
    stream.destroy(new Error("upload aborted"));
    stream.end();
    await sleep(100);

    expect(errors.map((error) => error.message)).toEqual(["upload aborted"]);
    expect(ended).toBe(false);
    expect(stream.bufferedBytes).toBe(0);
  });

  it("fails the stream when deflate fails", async () => {
    const createDeflateRaw = zlib.createDeflateRaw;
    let calls = 0;
    vi.spyOn(zlib, "createDeflateRaw").mockImplementation((options) => {
      calls++;
      if (calls < 2) return createDeflateRaw(options);
      const failing = new Transform({
        transform(_chunk, _encoding, callback) {
          callback(new Error("out of memory"));
        },
      });
      return failing as unknown as zlib.DeflateRaw;
    });

    await expect(
      gzip(randomBytes(4 * BLOCK_SIZE), { blockSize: BLOCK_SIZE }),
    ).rejects.toThrow("Deflating gzip block 1 failed: out of memory");
  });
});
