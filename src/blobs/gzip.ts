import { constants as bufferConstants } from "node:buffer";
import { availableParallelism } from "node:os";
import { Transform, type TransformCallback } from "node:stream";
import zlib from "node:zlib";

import { ZlibOutput, adopt, retain, release } from "../chunk-memory.js";

/**
 * Defaults of {@link createParallelGzip}, chosen with `bench/gzip-blocks.mjs`
 * on the first 200 MB of a tar of /usr (about 2:1 compressible). The machine
 * had 2 cores shared with other jobs (load average 2 to 5), so wall-clock
 * throughput varied widely between runs and the figures below are estimates.
 */
export const gzipDefaults = {
  /**
   * Level 4. On the distinct layers of the benchmark archive at scale 0.25
   * (111 MB of /usr files, 1 MiB blocks, one core of the machine in
   * docs/benchmarks.md), level 4 wrote 1.9% more than level 6 (41.6% of
   * the input against 40.8%) in 64% of its time (81 against 52 MB/s).
   * Level 1 wrote 7% more than level 6 at 99 MB/s. For images that many
   * nodes pull, `--compression-level 6` saves more than it costs once.
   */
  level: 4,
  /**
   * 1 MiB. In the runs with the least load, 1 and 2 MiB blocks gave the
   * highest throughput: about 140 MB/s at level 1 and 80 MB/s at level 6,
   * against 85 and 50 MB/s for zlib.createGzip. 128 KiB blocks were slower
   * and used 5 to 10% more CPU time, because each block sets up a new
   * deflate stream. Output size varied by under 0.2% across block sizes, and
   * larger blocks only raise the memory held per block in flight.
   */
  blockSize: 1024 * 1024,
} as const;

export interface ParallelGzipOptions {
  /** Compression level from 0 (stored, no compression) to 9. */
  level?: number;
  /** Input bytes per independently compressed block. */
  blockSize?: number;
  /**
   * Maximum number of blocks compressing at once. Defaults to
   * `os.availableParallelism()`.
   */
  concurrency?: number;
}

/**
 * Size of the deflate window. A block may refer back this many bytes, into
 * the blocks before it, so each block is compressed with the last
 * WINDOW_SIZE input bytes before it as its dictionary.
 */
const WINDOW_SIZE = 32 * 1024;

/**
 * Output bytes the deflate engine of a block produces per thread-pool round.
 * Above zlib's 16 KiB default so that a block needs fewer round trips to the
 * main thread. With 1 MiB blocks at level 1 it was about 10% faster than
 * 16 KiB in the same benchmark.
 */
const ENGINE_CHUNK_SIZE = 256 * 1024;

const EMPTY = Buffer.alloc(0);

interface Block {
  readonly engine: zlib.DeflateRaw;
  /** Bytes of this block counted in `bufferedBytes`: its input, later its output. */
  heldBytes: number;
  /** Compressed bytes in the engine's output chunks, set when the engine has finished. */
  output?: Buffer[];
}

/**
 * Compresses a byte stream into one gzip member, with blocks of the input
 * deflated in parallel in the libuv thread pool, as pigz does.
 *
 * Each block is raw deflate with the previous 32 KiB of input as its
 * dictionary. Every block but the last ends with Z_SYNC_FLUSH, which
 * byte-aligns it and leaves the final-block bit unset, and the last ends
 * with Z_FINISH. Concatenated, the blocks are one valid deflate stream, so
 * the output is a standard single-member gzip. With the zlib of one Node.js
 * version, it depends only on the input bytes, the level and the block size,
 * not on how the input is split into writes or on the concurrency.
 *
 * NOTE: zlib work shares the libuv thread pool, which has 4 threads unless
 * UV_THREADPOOL_SIZE is set before the pool is first used, so a concurrency
 * above 4 only helps when that variable is raised.
 */
export class ParallelGzip extends Transform {
  readonly level: number;
  readonly blockSize: number;
  readonly concurrency: number;

  /** Block being filled with input, allocated on first use. */
  #filling: Buffer | undefined;
  #fillLength = 0;
  /** Last WINDOW_SIZE bytes of input given to blocks so far. */
  #window: Buffer | undefined;
  #crc = 0;
  #inputLength = 0;
  #headerPushed = false;
  #nextBlockIndex = 0;
  #nextOutputIndex = 0;
  /** Blocks started and not yet pushed, by index. */
  readonly #blocks = new Map<number, Block>();
  #blockBytes = 0;
  #wake: (() => void) | undefined;

  constructor(options: ParallelGzipOptions = {}) {
    super();
    this.level = checkInteger(
      "level",
      options.level ?? gzipDefaults.level,
      0,
      9,
    );
    this.blockSize = checkInteger(
      "blockSize",
      options.blockSize ?? gzipDefaults.blockSize,
      1,
      bufferConstants.MAX_LENGTH,
    );
    this.concurrency = checkInteger(
      "concurrency",
      options.concurrency ?? availableParallelism(),
      1,
      Number.MAX_SAFE_INTEGER,
    );
  }

  /**
   * Bytes this stream holds: the block being filled, the dictionary window,
   * the input or compressed output of each block not yet pushed, and the
   * readable buffer. Not counted are chunks waiting on the writable side and
   * memory inside the deflate engines: per block in flight, about 256 KiB of
   * state at the default memory level (by the formula in zlib's zconf.h) and
   * an output buffer of ENGINE_CHUNK_SIZE.
   *
   * A block starts only while fewer than `concurrency` blocks are unpushed
   * and the readable buffer is below its high-water mark, so this stays
   * below `(concurrency + 1) × blockSize + 32 KiB + readableHighWaterMark`,
   * plus about 5 bytes per 16 KiB of incompressible input.
   */
  /** CRC-32 of the input so far, as the gzip trailer carries it. */
  get inputCrc(): number {
    return this.#crc >>> 0;
  }

  /** Bytes of input so far. */
  get inputBytes(): number {
    return this.#inputLength;
  }

  get bufferedBytes(): number {
    return (
      (this.#filling?.length ?? 0) +
      (this.#window?.length ?? 0) +
      this.#blockBytes +
      this.readableLength
    );
  }

  override _transform(
    chunk: Buffer,
    _encoding: BufferEncoding,
    callback: TransformCallback,
  ): void {
    this.#consume(chunk).then((accepted) => {
      // A destroyed stream takes no more writes, so its callback is dropped.
      if (accepted) callback();
    }, callback);
  }

  override _flush(callback: TransformCallback): void {
    this.#finish().then((finished) => {
      if (finished) callback();
    }, callback);
  }

  override _read(size: number): void {
    super._read(size);
    // The consumer took data from the readable buffer, which may let the next block start.
    this.#notify();
  }

  override _destroy(
    error: Error | null,
    callback: (error?: Error | null) => void,
  ): void {
    for (const block of this.#blocks.values()) block.engine.destroy();
    this.#blocks.clear();
    this.#blockBytes = 0;
    this.#filling = undefined;
    this.#window = undefined;
    this.#notify();
    callback(error);
  }

  /**
   * Copies `chunk` into blocks, and releases it. Returns false if the stream
   * was destroyed meanwhile.
   */
  async #consume(chunk: Buffer): Promise<boolean> {
    try {
      return await this.#split(chunk);
    } finally {
      release(chunk);
    }
  }

  async #split(chunk: Buffer): Promise<boolean> {
    this.#crc = zlib.crc32(chunk, this.#crc);
    this.#inputLength += chunk.length;
    let offset = 0;
    while (offset < chunk.length) {
      if (this.#fillLength === this.blockSize) {
        // A full block waits until more input shows that it is not the last.
        while (!this.#hasCapacity()) {
          await this.#nextEvent();
          if (this.destroyed) return false;
        }
        this.#startBlock(false);
      }
      if (this.#fillLength === 0 && chunk.length - offset >= this.blockSize) {
        // A whole block of the chunk becomes the block as it is, without a
        // copy. A stream's writer does not change a chunk after writing it.
        this.#filling = chunk.subarray(offset, offset + this.blockSize);
        retain(this.#filling);
        this.#fillLength = this.blockSize;
        offset += this.blockSize;
        continue;
      }
      if (!this.#filling) {
        this.#filling = Buffer.allocUnsafe(this.blockSize);
        adopt(this.#filling);
      }
      const copied = chunk.copy(this.#filling, this.#fillLength, offset);
      this.#fillLength += copied;
      offset += copied;
    }
    return true;
  }

  /** Compresses the last block and pushes the trailer once every block is out. */
  async #finish(): Promise<boolean> {
    while (!this.#hasCapacity()) {
      await this.#nextEvent();
      if (this.destroyed) return false;
    }
    // Empty input still gets one final block, the 2-byte empty deflate stream.
    this.#startBlock(true);
    while (this.#blocks.size > 0) {
      await this.#nextEvent();
      if (this.destroyed) return false;
    }
    this.push(gzipTrailer(this.#crc, this.#inputLength));
    return true;
  }

  /**
   * Returns whether another block may start: fewer than `concurrency` blocks
   * are unpushed and the readable buffer is below its high-water mark.
   */
  #hasCapacity(): boolean {
    return (
      this.#blocks.size < this.concurrency &&
      this.readableLength < this.readableHighWaterMark
    );
  }

  /**
   * Waits for a block to be pushed, the consumer to read, or the stream to
   * be destroyed.
   */
  #nextEvent(): Promise<void> {
    return new Promise<void>((resolve) => (this.#wake = resolve));
  }

  #notify(): void {
    const wake = this.#wake;
    this.#wake = undefined;
    wake?.();
  }

  /** Starts deflating the filled block in the thread pool. */
  #startBlock(isLast: boolean): void {
    const input = this.#filling?.subarray(0, this.#fillLength) ?? EMPTY;
    this.#filling = undefined;
    this.#fillLength = 0;

    // Stored blocks (level 0) never refer back, so they need no dictionary.
    const dictionary = this.#window;
    this.#window = this.level > 0 ? nextWindow(this.#window, input) : undefined;

    const engine = zlib.createDeflateRaw({
      level: this.level,
      dictionary,
      chunkSize: ENGINE_CHUNK_SIZE,
      finishFlush: isLast
        ? zlib.constants.Z_FINISH
        : zlib.constants.Z_SYNC_FLUSH,
    });
    const index = this.#nextBlockIndex++;
    const block: Block = { engine, heldBytes: input.length };
    this.#blocks.set(index, block);
    this.#blockBytes += block.heldBytes;

    const chunks: Buffer[] = [];
    const output = new ZlibOutput(ENGINE_CHUNK_SIZE);
    engine.on("data", (chunk: Buffer) => {
      output.adopt(chunk);
      chunks.push(chunk);
    });
    engine.on("end", () => {
      // zlib has read the whole input and written its last output.
      release(input);
      output.ended();
      if (this.destroyed) return;
      const outputLength = chunks.reduce((sum, chunk) => sum + chunk.length, 0);
      this.#blockBytes += outputLength - block.heldBytes;
      block.heldBytes = outputLength;
      block.output = chunks;
      this.#pushFinishedBlocks();
    });
    engine.on("error", (error: Error) => {
      this.destroy(
        new Error(`Deflating gzip block ${index} failed: ${error.message}`, {
          cause: error,
        }),
      );
    });
    engine.end(input);
  }

  /** Pushes finished blocks in input order, the header before the first. */
  #pushFinishedBlocks(): void {
    let block = this.#blocks.get(this.#nextOutputIndex);
    while (block?.output !== undefined) {
      if (!this.#headerPushed) {
        this.push(gzipHeader(this.level));
        this.#headerPushed = true;
      }
      for (const chunk of block.output) this.push(chunk);
      this.#blocks.delete(this.#nextOutputIndex);
      this.#blockBytes -= block.heldBytes;
      this.#nextOutputIndex++;
      block = this.#blocks.get(this.#nextOutputIndex);
    }
    this.#notify();
  }
}

/**
 * Creates a Transform that gzips its input with blocks compressed in
 * parallel. See {@link ParallelGzip}.
 */
export function createParallelGzip(
  options: ParallelGzipOptions = {},
): ParallelGzip {
  return new ParallelGzip(options);
}

function checkInteger(
  name: string,
  value: number,
  min: number,
  max: number,
): number {
  if (!Number.isInteger(value) || value < min || value > max) {
    throw new RangeError(
      `Invalid gzip option ${name}: ${value}. Expected an integer from ${min} to ${max}.`,
    );
  }
  return value;
}

/**
 * Returns a copy of the last WINDOW_SIZE bytes of `previous` followed by
 * `input`. It is a copy so that the block's input can be freed once the
 * block is deflated.
 */
function nextWindow(previous: Buffer | undefined, input: Buffer): Buffer {
  if (input.length >= WINDOW_SIZE) {
    return Buffer.from(input.subarray(input.length - WINDOW_SIZE));
  }
  const joined = Buffer.concat(previous ? [previous, input] : [input]);
  return joined.length > WINDOW_SIZE
    ? Buffer.from(joined.subarray(joined.length - WINDOW_SIZE))
    : joined;
}

/**
 * Returns the 10-byte gzip header of RFC 1952 with no file name and mtime 0,
 * so equal input gives equal output. XFL follows zlib's deflate.c (2 for
 * level 9, 4 for levels 0 and 1) and OS is 255, "unknown".
 */
function gzipHeader(level: number): Buffer {
  let extraFlags = 0;
  if (level === 9) extraFlags = 2;
  if (level <= 1) extraFlags = 4;
  return Buffer.from([
    0x1f,
    0x8b,
    0x08,
    0x00,
    0x00,
    0x00,
    0x00,
    0x00,
    extraFlags,
    0xff,
  ]);
}

/** Returns the gzip trailer: CRC-32 and input length mod 2^32, little-endian. */
function gzipTrailer(crc: number, inputLength: number): Buffer {
  const trailer = Buffer.alloc(8);
  trailer.writeUInt32LE(crc >>> 0, 0);
  trailer.writeUInt32LE(inputLength % 2 ** 32, 4);
  return trailer;
}
