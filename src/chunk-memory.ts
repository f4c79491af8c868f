import type { Readable, Writable } from "node:stream";

/**
 * Frees the memory of large chunks as soon as the pipeline is done with
 * them, instead of when V8 next collects garbage.
 *
 * An import passes gigabytes through buffers of up to 1 MiB. V8 frees an
 * ArrayBuffer's memory only when it collects the buffer, and it starts a
 * collection only after tens of megabytes of unused buffers have piled up.
 * Detaching a buffer (`ArrayBuffer.prototype.transfer(0)`) frees its memory
 * at once.
 *
 * Each adopted buffer has a reference count. The code that makes a chunk
 * adopts it with one reference, and code that hands on a view of it retains
 * another. Each consumer releases the chunks it has finished with, and the
 * last release detaches the buffer. A chunk that is never released is
 * collected by V8 as before. A release without a reference would free memory
 * that is still in use, so code releases only the chunks it was given with one.
 */

/** Size under which buffers are left to V8, as not worth the bookkeeping. */
const minimumSize = 64 * 1024;

const references = new WeakMap<ArrayBufferLike, number>();

/**
 * Adds a reference to `chunk`'s buffer for the caller, and marks the buffer
 * as one to free early. Only for a buffer that nothing outside the pipeline
 * has a view of, such as one just read from a file or made by zlib.
 */
export function adopt(chunk: Buffer): void {
  const buffer = chunk.buffer;
  // Node.js cuts small Buffers from a shared pool buffer (`Buffer.poolSize`:
  // 8 KiB in Node.js 22, 64 KiB in 24), which must never be detached.
  if (
    buffer.byteLength < minimumSize ||
    buffer.byteLength <= Buffer.poolSize ||
    !(buffer instanceof ArrayBuffer)
  ) {
    return;
  }
  references.set(buffer, (references.get(buffer) ?? 0) + 1);
}

/** Adds a reference to an adopted chunk's buffer, for a view handed on. */
export function retain(chunk: Buffer): void {
  const count = references.get(chunk.buffer);
  if (count !== undefined) references.set(chunk.buffer, count + 1);
}

/** Removes a reference to `chunk`'s buffer, and frees the buffer after the last one. */
export function release(chunk: Buffer): void {
  const buffer = chunk.buffer;
  const count = references.get(buffer);
  if (count === undefined) return;
  if (count > 1) {
    references.set(buffer, count - 1);
    return;
  }
  references.delete(buffer);
  try {
    (buffer as ArrayBuffer).transfer(0);
  } catch {
    // A buffer that Node.js marked as not detachable is left to V8.
  }
}

/**
 * Joins chunks into one, which the caller then holds, and releases them. A
 * single chunk is returned as it is.
 */
export function joinChunks(chunks: Buffer[]): Buffer {
  if (chunks.length === 1) return chunks[0];
  const whole = Buffer.concat(chunks);
  for (const chunk of chunks) release(chunk);
  adopt(whole);
  return whole;
}

/**
 * Adopts the output of a zlib stream. zlib writes consecutive chunks into
 * one buffer until it is full, so each buffer keeps an extra reference until
 * zlib moves on to the next one or ends.
 */
export class ZlibOutput {
  readonly #chunkSize: number;
  #current: Buffer | undefined;

  /** `chunkSize` is the stream's option, the exact size of zlib's own buffers. */
  constructor(chunkSize: number) {
    this.#chunkSize = chunkSize;
  }

  /**
   * Adopts an output chunk with one reference for the caller. A chunk that
   * is not in one of zlib's own buffers, such as one that a stream joined
   * from several, is left to V8.
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

  /** Removes the extra reference to the last buffer, once the stream has ended. */
  ended(): void {
    if (this.#current) release(this.#current);
    this.#current = undefined;
  }
}

/**
 * Makes a node-tar entry retain each chunk it buffers for its consumer. An
 * entry buffers what it is given unless it is ignored or the bytes are the
 * padding after its end. Call it from the parser's `filter` option, which
 * runs as the entry is made: an entry that waits behind another receives
 * bytes before the parser hands it over. Returns true, so the filter keeps
 * the entry.
 */
export function retainEntryChunks(entry: {
  write(chunk: Buffer): boolean;
  ignore?: boolean;
  remain: number;
}): true {
  const write = entry.write;
  entry.write = function (this: typeof entry, chunk: Buffer) {
    if (!this.ignore && this.remain > 0) retain(chunk);
    return write.call(this, chunk);
  };
  return true;
}

/** Reads a tar entry to its end, dropping and releasing each chunk. */
export function discard(entry: {
  on(event: "data", listener: (chunk: Buffer) => void): unknown;
  resume(): void;
}): void {
  entry.on("data", release);
  entry.resume();
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
  // A stream destroyed without an error closes without ending, and would
  // otherwise leave the iteration waiting.
  const onClose = () => {
    if (!ended) onError(new Error("the stream closed before its end"));
  };
  stream.on("data", onData);
  stream.on("end", onEnd);
  stream.on("error", onError);
  stream.on("close", onClose);
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
    stream.off("close", onClose);
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
 * Writes a byte stream into a tar parser in whole 512-byte blocks, and keeps
 * a reference to each chunk until the next write. node-tar keeps a view of a
 * block that a write cuts off, so the cut-off part is copied here instead.
 * After the end-of-archive blocks it keeps a view of the rest of the chunk,
 * which it copies into a new buffer at the next write or reads at the end.
 */
export class BlockAlignedWriter {
  readonly #write: (chunk: Buffer) => boolean;
  #partial: Buffer | undefined;
  /** The chunk of the last write, which the parser may still view. */
  #previous: Buffer | undefined;

  constructor(write: (chunk: Buffer) => boolean) {
    this.#write = write;
  }

  /** Writes the whole blocks that `chunk` completes. Returns false when the parser is full. */
  write(chunk: Buffer): boolean {
    retain(chunk);
    let ready = true;
    let offset = 0;
    if (this.#partial) {
      const missing = 512 - this.#partial.length;
      if (chunk.length < missing) {
        this.#partial = Buffer.concat([this.#partial, chunk]);
        this.#keep(chunk);
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
    this.#keep(chunk);
    return ready;
  }

  /**
   * Writes the bytes after the last whole block and calls `endParser`, then
   * releases the last chunk.
   */
  end(endParser: () => void): void {
    const rest = this.#partial;
    this.#partial = undefined;
    try {
      if (rest) this.#write(rest);
      endParser();
    } finally {
      this.#keep(undefined);
    }
  }

  /** Keeps `chunk` in place of the chunk before, which the parser no longer views. */
  #keep(chunk: Buffer | undefined): void {
    if (this.#previous) release(this.#previous);
    this.#previous = chunk;
  }
}
