import { Readable } from "node:stream";
import { createGunzip } from "node:zlib";

import {
  ZlibOutput,
  joinChunks,
  pipeReleasing,
  writtenChunks,
} from "../chunk-memory.js";
import { PpaLoadError } from "../errors.js";

/**
 * Output chunk of the inflater. zlib's 16 KiB default costs a round trip to
 * the thread pool per 16 KiB, and every chunk then passes through the tar
 * parsers, the hashes and a file write. Chunks are freed once written, so
 * their size also sets the memory that the stages hold. In single runs of
 * the benchmark import, 256 KiB chunks peaked at 102 to 106 MB at scale 1
 * (7.5 to 7.7 s) and at 115 MB at scale 4. 1 MiB chunks peaked at 116 to
 * 118 MB (6.7 to 7.0 s) and at 126 MB.
 */
const inflateChunkSize = 256 * 1024;

/** Layers of gzip unwrapped before giving up: one is normal, two happen by mistake. */
const maxGzipLayers = 3;

/** Bytes at the start of a stream that are checked for rewritten line breaks. */
export const lineBreakSampleSize = 1024 * 1024;

/**
 * LF bytes that must all follow a CR before the bytes count as rewritten
 * from LF to CR LF. In data that is not text, a byte before LF is CR one
 * time in 256, so 16 in a row happen by chance about once in 2^128.
 */
const minLineFeedsAllAfterCr = 16;

/**
 * LF bytes of compressed data, at most one of them after a CR, before the
 * data counts as rewritten from CR LF to LF. Compressed bytes look random,
 * so about one LF in 256 follows a CR: 12 of 3072 on average, and at most
 * one by chance about once in 12 000 streams (Poisson). The rewrite leaves
 * a CR LF only where the original had CR CR LF.
 */
const minLineFeedsNoneAfterCr = 3072;

/**
 * The rewrite a text-mode transfer made to a file's bytes: every LF written
 * as CR LF, or every CR LF pair written as LF.
 */
export type LineBreakDamage = "lf-to-crlf" | "crlf-to-lf";

/**
 * Counts the LF bytes in the first `lineBreakSampleSize` bytes of a stream,
 * and how many of them follow a CR, to tell whether the stream's line
 * breaks were rewritten. Only a stream that failed to parse is judged, so
 * a valid file of Windows text never counts as damaged.
 */
export class LineBreakSample {
  /** Bytes seen, including those past the sample. */
  total = 0;
  #sampled = 0;
  #lineFeeds = 0;
  #afterCr = 0;
  #previous = -1;

  add(chunk: Buffer): void {
    this.total += chunk.length;
    const room = lineBreakSampleSize - this.#sampled;
    if (room <= 0) return;
    const part = chunk.length > room ? chunk.subarray(0, room) : chunk;
    for (
      let index = part.indexOf(0x0a);
      index !== -1;
      index = part.indexOf(0x0a, index + 1)
    ) {
      this.#lineFeeds += 1;
      const before = index > 0 ? part[index - 1] : this.#previous;
      if (before === 0x0d) this.#afterCr += 1;
    }
    if (part.length > 0) this.#previous = part[part.length - 1];
    this.#sampled += part.length;
  }

  /** Whether the sample is complete, so reading on would not change the verdict. */
  get full(): boolean {
    return this.#sampled >= lineBreakSampleSize;
  }

  /**
   * Returns how the line breaks were rewritten, when the sample shows it.
   * The CR LF to LF rewrite is recognisable only in compressed data, where
   * CR LF pairs occur at random. A tar of Unix text files has none either.
   */
  damage(compressed: boolean): LineBreakDamage | undefined {
    const lineFeeds = this.#lineFeeds;
    if (lineFeeds >= minLineFeedsAllAfterCr && this.#afterCr === lineFeeds) {
      return "lf-to-crlf";
    }
    if (
      compressed &&
      lineFeeds >= minLineFeedsNoneAfterCr &&
      this.#afterCr <= 1
    ) {
      return "crlf-to-lf";
    }
    return undefined;
  }

  /** Describes the damage for an error message, after "is not a valid tar file: ". */
  describe(damage: LineBreakDamage): string {
    const sampled = `the first ${formatBytes(this.#sampled)}`;
    const cause =
      "by a text-mode transfer (FTP in ASCII mode, git with autocrlf) or a shell redirect";
    if (damage === "lf-to-crlf") {
      return `each of the ${this.#lineFeeds} line feed (LF) bytes in ${sampled} follows a carriage return (CR), so its line breaks were probably rewritten from LF to CR LF ${cause}`;
    }
    const found = this.#afterCr === 0 ? "none" : "only one";
    return `${found} of the ${this.#lineFeeds} line feed (LF) bytes in ${sampled} follows a carriage return (CR), where compressed data has about one in 256, so its CR LF pairs were probably rewritten to LF ${cause}`;
  }
}

/** The fix for a file whose line breaks were rewritten. */
export const lineBreakHint =
  "copy the file again in binary mode (scp, FTP in binary mode, or git with the file marked binary in .gitattributes) and compare its checksum with the original; write image tarballs with docker save -o FILE IMAGE, not with a shell redirect";

function formatBytes(count: number): string {
  if (count >= 1024 * 1024 && count % (1024 * 1024) === 0) {
    return `${count / (1024 * 1024)} MiB`;
  }
  return `${count} bytes`;
}

/** Format of a file, as its first bytes show it. */
export type Sniffed =
  | "gzip"
  | "tar"
  | "utf16-text"
  | "utf8-bom-text"
  | "bzip2"
  | "xz"
  | "zstd"
  | "unknown";

/** Names what `head` (the first bytes of a file) looks like. */
export function sniff(head: Buffer): Sniffed {
  if (head[0] === 0x1f && head[1] === 0x8b) return "gzip";
  if (
    (head[0] === 0xff && head[1] === 0xfe) ||
    (head[0] === 0xfe && head[1] === 0xff)
  ) {
    return "utf16-text";
  }
  if (head[0] === 0xef && head[1] === 0xbb && head[2] === 0xbf) {
    return "utf8-bom-text";
  }
  if (head.subarray(0, 3).toString("latin1") === "BZh") return "bzip2";
  if (
    head.subarray(0, 6).equals(Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0]))
  ) {
    return "xz";
  }
  if (head.readUInt32LE(0) === 0xfd2fb528) return "zstd";
  if (head.length >= 512 && hasTarChecksum(head)) return "tar";
  return "unknown";
}

/**
 * Checks the header checksum of the first tar block: the sum of its bytes,
 * with the 8-byte checksum field counted as spaces, written in octal at 148.
 * Every tar format has it, including the old ones without the `ustar` magic.
 */
function hasTarChecksum(block: Buffer): boolean {
  const field = block.subarray(148, 156).toString("latin1");
  const stored = Number.parseInt(field.replace(/[\0 ]+$/g, "").trim(), 8);
  if (!Number.isFinite(stored)) return false;
  let sum = 0;
  for (let i = 0; i < 512; i += 1) {
    sum += i >= 148 && i < 156 ? 0x20 : block[i];
  }
  return sum === stored;
}

/** Reads up to `length` bytes from an iterator, returning them and what remains. */
async function peek(
  iterator: AsyncIterator<Buffer>,
  length: number,
): Promise<{ head: Buffer; done: boolean }> {
  const chunks: Buffer[] = [];
  let size = 0;
  while (size < length) {
    const next = await iterator.next();
    if (next.done) return { head: joinChunks(chunks), done: true };
    chunks.push(next.value);
    size += next.value.length;
  }
  return { head: joinChunks(chunks), done: false };
}

async function* replay(
  head: Buffer,
  iterator: AsyncIterator<Buffer>,
  done: boolean,
): AsyncGenerator<Buffer> {
  if (head.length > 0) yield head;
  if (done) return;
  for (
    let next = await iterator.next();
    !next.done;
    next = await iterator.next()
  ) {
    yield next.value;
  }
}

/**
 * Returns the bytes of a tar file that may be gzipped, whatever its name
 * suggests, and unwraps gzip inside gzip. Inflating runs in zlib's thread pool,
 * off the main thread. Fails with the fix when the bytes are text, or are
 * compressed in a format that docker save never writes. `label` names the
 * file in errors; `code` is the error code to use.
 */
export async function* tarBytes(
  source: AsyncIterable<Buffer>,
  label: string,
  code: "ARCHIVE_UNREADABLE" | "IMAGE_TARBALL_INVALID",
): AsyncGenerator<Buffer> {
  let stream: AsyncIterable<Buffer> = source;
  for (let layer = 0; ; layer += 1) {
    const iterator = stream[Symbol.asyncIterator]();
    const { head, done } = await peek(iterator, 512);
    if (head.length === 0) {
      throw new PpaLoadError(
        code,
        layer === 0
          ? `${label} is empty`
          : `${label} holds an empty gzip stream`,
        { hint: "the file is incomplete; download or save it again" },
      );
    }
    const kind = sniff(head);
    if (kind === "gzip") {
      if (layer >= maxGzipLayers) {
        throw new PpaLoadError(
          code,
          `${label} is wrapped in more than ${maxGzipLayers} layers of gzip`,
          { hint: "decompress it with gunzip until it is a tar file" },
        );
      }
      const gunzip = createGunzip({ chunkSize: inflateChunkSize });
      const sample = new LineBreakSample();
      // Byte mode: an object-mode stream would read up to 16 chunks ahead.
      const input = Readable.from(
        sampled(replay(head, iterator, done), sample),
        { objectMode: false },
      );
      input.on("error", (error) => gunzip.destroy(error));
      const stop = pipeReleasing(input, gunzip);
      stream = inflated(gunzip, { input, sample, stop }, label, code);
      continue;
    }
    const problem = textOrCompression(kind, head);
    if (problem) {
      throw new PpaLoadError(code, `${label} ${problem.message}`, {
        hint: problem.hint,
      });
    }
    yield* replay(head, iterator, done);
    return;
  }
}

/** Passes chunks through, adding each to the sample. */
async function* sampled(
  source: AsyncIterable<Buffer>,
  sample: LineBreakSample,
): AsyncGenerator<Buffer> {
  for await (const chunk of source) {
    sample.add(chunk);
    yield chunk;
  }
}

/**
 * Reads on from a compressed stream that failed to inflate, until its line
 * break sample is complete or the stream ends, so that the diagnosis does
 * not rest on the few bytes zlib had read when it failed.
 */
async function completeSample(
  input: Readable,
  sample: LineBreakSample,
  stop: () => void,
): Promise<void> {
  stop();
  try {
    for await (const _chunk of input) {
      if (sample.full) break;
    }
  } catch {
    // The input's own error is not the one to report.
  }
}

async function* inflated(
  gunzip: ReturnType<typeof createGunzip>,
  compressed: { input: Readable; sample: LineBreakSample; stop: () => void },
  label: string,
  code: "ARCHIVE_UNREADABLE" | "IMAGE_TARBALL_INVALID",
): AsyncGenerator<Buffer> {
  const output = new ZlibOutput(inflateChunkSize);
  try {
    for await (const chunk of writtenChunks(gunzip)) {
      output.adopt(chunk);
      yield chunk;
    }
    output.ended();
  } catch (error) {
    if (error instanceof PpaLoadError) throw error;
    const message = (error as Error).message;
    await completeSample(compressed.input, compressed.sample, compressed.stop);
    const damage = compressed.sample.damage(true);
    if (damage) {
      throw new PpaLoadError(
        code,
        `${label} is not a valid gzip-compressed tar file (${message}): ${compressed.sample.describe(damage)}`,
        { cause: error, hint: lineBreakHint },
      );
    }
    throw new PpaLoadError(
      code,
      message.includes("unexpected end")
        ? `${label} is cut short: its gzip stream ends early`
        : `${label} is not valid gzip: ${message}`,
      {
        cause: error,
        hint: "the file is incomplete or damaged; download or save it again and compare its checksum",
      },
    );
  } finally {
    // A consumer that stops early no longer needs the inflater.
    if (!gunzip.readableEnded) gunzip.destroy();
  }
}

function textOrCompression(
  kind: Sniffed,
  head: Buffer,
): { message: string; hint: string } | undefined {
  const hex = head
    .subarray(0, 8)
    .toString("hex")
    .replace(/(..)(?!$)/g, "$1 ");
  switch (kind) {
    case "utf16-text":
    case "utf8-bom-text":
      return {
        message: `is not a valid tar file: it starts with a ${kind === "utf16-text" ? "UTF-16" : "UTF-8"} byte order mark, so its bytes were written as text, probably through a shell redirect such as PowerShell's >`,
        hint: "write the file with a tool that keeps bytes as they are, e.g. docker save -o FILE IMAGE, and copy it in binary mode",
      };
    case "unknown":
      return {
        message: `is neither gzip nor a tar file (it starts with the bytes ${hex})`,
        hint: "check that this is the file you meant; PPA archives and docker save tarballs are tar files, usually gzipped",
      };
    case "bzip2":
    case "xz":
    case "zstd":
      return {
        message: `is compressed with ${kind}, which this tool does not read`,
        hint: `decompress it (e.g. ${kind === "zstd" ? "zstd -d" : kind === "xz" ? "xz -d" : "bunzip2"}) or recompress it with gzip`,
      };
    default:
      return undefined;
  }
}
