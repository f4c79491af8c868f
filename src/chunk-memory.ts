import type { Readable, Writable } from "node:stream";

/**
 * Frees the memory of large chunks as soon as the pipeline is done with
 * them, instead of when V8 next collects garbage.
 *
 * An import passes gigabytes through buffers of up to 1 MiB: archive reads,
 * inflated tar bytes, layer file reads and deflate output. V8 frees an
 * ArrayBuffer's memory only when it collects it, and it starts a collection
 * only after tens of megabytes of released buffers have piled up, which then
 * make up a fifth of the peak RSS. Detaching a buffer
 * (`ArrayBuffer.prototype.transfer(0)`) frees its memory at once.
 *
 * A buffer is detached only when every holder has let go of it. The code
 * that makes a chunk adopts its buffer with one hold; each view of it handed
 * on takes a hold; each consumer releases the chunks it is done with. A
 * chunk that is never released costs nothing but the early free: its buffer
 * is collected as before. A release without a hold would free memory that
 * is still in use, so code releases only chunks it was given with a hold.
 */

/** Smaller buffers are left to V8: Node.js shares 8 KiB pool buffers between unrelated Buffers. */
const minimumSize = 64 * 1024;

const holds = new WeakMap<ArrayBufferLike, number>();

/**
 * Takes a hold on `chunk`'s buffer for the caller, and marks the buffer as
 * one to free early. Only for a buffer that nothing outside the pipeline has
 * a view of, such as one just read from a file or made by zlib.
 */
export function adopt(chunk: Buffer): void {
  const buffer = chunk.buffer;
  if (buffer.byteLength < minimumSize || !(buffer instanceof ArrayBuffer)) {
    return;
  }
  holds.set(buffer, (holds.get(buffer) ?? 0) + 1);
}

/** Takes another hold on an adopted chunk's buffer, for a view handed on. */
export function hold(chunk: Buffer): void {
  const count = holds.get(chunk.buffer);
  if (count !== undefined) holds.set(chunk.buffer, count + 1);
}

/** Lets go of a hold on `chunk`'s buffer, and frees the buffer after the last. */
export function release(chunk: Buffer): void {
  const buffer = chunk.buffer;
  const count = holds.get(buffer);
  if (count === undefined) return;
  if (count > 1) {
    holds.set(buffer, count - 1);
    return;
  }
  holds.delete(buffer);
  (buffer as ArrayBuffer).transfer(0);
}

/** Releases every chunk of a list. */
export function releaseAll(chunks: readonly Buffer[]): void {
  for (const chunk of chunks) release(chunk);
}

/**
 * Adopts the output of a zlib stream. zlib writes consecutive chunks into
 * one buffer until it is full, so each buffer keeps an extra hold until
 * zlib has moved on to the next one, or has ended.
 */
export class ZlibOutput {
  readonly #chunkSize: number;
  #current: Buffer | undefined;

  /** `chunkSize` is the stream's: zlib's own buffers have exactly that size. */
  constructor(chunkSize: number) {
    this.#chunkSize = chunkSize;
  }

  /**
   * Adopts an output chunk, which the caller then holds. A chunk that is not
   * in one of zlib's own buffers, such as one that a stream joined from
   * several, is left to V8.
   */
  adopt(chunk: Buffer): void {
    if (chunk.buffer.byteLength !== this.#chunkSize) return;
    if (this.#current?.buffer !== chunk.buffer) {
      const previous = this.#current;
      this.#current = chunk;
      adopt(chunk);
      if (previous) release(previous);
    }
    adopt(chunk);
  }

  /** Lets go of the last buffer once the stream has ended. */
  ended(): void {
    if (this.#current) release(this.#current);
    this.#current = undefined;
  }
}

/**
 * Makes a tar entry take a hold on each chunk it keeps, so that chunks stay
 * whole while they wait in the entry for its consumer. A node-tar entry
 * keeps what it is given unless it ignores the entry or the bytes are the
 * padding after its end. Call it as the parser makes the entry, from its
 * `filter` option: an entry that waits behind another is written to before
 * the parser hands it over. Returns true, so that the filter keeps the entry.
 */
export function holdEntryChunks(entry: {
  write(chunk: Buffer): boolean;
  ignore?: boolean;
  remain: number;
}): true {
  const write = entry.write;
  entry.write = function (this: typeof entry, chunk: Buffer) {
    if (!this.ignore && this.remain > 0) hold(chunk);
    return write.call(this, chunk);
  };
  return true;
}

/**
 * Iterates a stream's chunks as they were written. The async iterator of
 * node-tar's entries joins the chunks waiting in an entry into a new
 * buffer, which would hide them from {@link release}.
 */
export async function* writtenChunks(stream: {
  on(event: string, listener: (...args: any[]) => void): unknown;
  off(event: string, listener: (...args: any[]) => void): unknown;
  pause(): void;
  resume(): void;
}): AsyncGenerator<Buffer> {
  const queue: Buffer[] = [];
  let ended = false;
  let failure: { error: unknown } | undefined;
  let wake: (() => void) | undefined;
  const notify = () => {
    wake?.();
    wake = undefined;
  };
  const onData = (chunk: Buffer) => {
    queue.push(chunk);
    stream.pause();
    notify();
  };
  const onEnd = () => {
    ended = true;
    notify();
  };
  const onError = (error: unknown) => {
    failure ??= { error };
    notify();
  };
  stream.on("data", onData);
  stream.on("end", onEnd);
  stream.on("error", onError);
  try {
    for (;;) {
      const chunk = queue.shift();
      if (chunk) {
        if (queue.length === 0 && !ended) stream.resume();
        yield chunk;
        continue;
      }
      if (failure) throw failure.error;
      if (ended) return;
      stream.resume();
      await new Promise<void>((resolve) => (wake = resolve));
    }
  } finally {
    stream.off("data", onData);
    stream.off("end", onEnd);
    stream.off("error", onError);
  }
}

/**
 * Yields a stream's chunks and adopts each. Only for a stream that makes a
 * new buffer for every chunk, such as a file read stream. Destroys the
 * stream when the caller stops early.
 */
export async function* adoptedChunks(stream: Readable): AsyncGenerator<Buffer> {
  try {
    for await (const chunk of writtenChunks(stream)) {
      adopt(chunk);
      yield chunk;
    }
  } finally {
    stream.destroy();
  }
}

/**
 * Pipes `source` into `destination` as `pipe()` does, and releases each
 * chunk once the destination has taken it: zlib has read it, or a socket
 * has sent it. Returns a function that stops the flow, as `unpipe()` does.
 */
export function pipeReleasing(
  source: Readable,
  destination: Writable,
): () => void {
  const onData = (chunk: Buffer) => {
    if (!destination.write(chunk, () => release(chunk))) source.pause();
  };
  const onDrain = () => source.resume();
  const onEnd = () => destination.end();
  const stop = () => {
    source.off("data", onData);
    source.off("end", onEnd);
    destination.off("drain", onDrain);
    destination.off("close", stop);
    source.pause();
  };
  source.on("data", onData);
  source.on("end", onEnd);
  destination.on("drain", onDrain);
  destination.on("close", stop);
  return stop;
}

/**
 * Writes a byte stream into a tar parser in whole 512-byte blocks. node-tar
 * keeps the part of a chunk that ends in the middle of a block until the next
 * write; a copy of it is kept here instead, so that no chunk is held after
 * its write returns.
 */
export class BlockAlignedWriter {
  readonly #write: (chunk: Buffer) => boolean;
  #partial: Buffer | undefined;

  constructor(write: (chunk: Buffer) => boolean) {
    this.#write = write;
  }

  /** Writes the whole blocks that `chunk` completes. Returns false when the parser is full. */
  write(chunk: Buffer): boolean {
    let ready = true;
    let offset = 0;
    if (this.#partial) {
      const missing = 512 - this.#partial.length;
      if (chunk.length < missing) {
        this.#partial = Buffer.concat([this.#partial, chunk]);
        return true;
      }
      const block = Buffer.concat([this.#partial, chunk.subarray(0, missing)]);
      this.#partial = undefined;
      ready = this.#write(block);
      offset = missing;
    }
    const end = offset + Math.floor((chunk.length - offset) / 512) * 512;
    if (end > offset) {
      ready = this.#write(chunk.subarray(offset, end)) && ready;
    }
    if (end < chunk.length) this.#partial = Buffer.from(chunk.subarray(end));
    return ready;
  }

  /** Writes the bytes after the last whole block, before the parser ends. */
  flush(): void {
    const rest = this.#partial;
    this.#partial = undefined;
    if (rest) this.#write(rest);
  }
}
