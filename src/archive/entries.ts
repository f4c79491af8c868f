import { createReadStream } from "node:fs";
import { open } from "node:fs/promises";
import { posix } from "node:path";
import { Readable, Writable } from "node:stream";
import { Parser, type ReadEntry } from "tar";

import { LineBreakSample, lineBreakHint, tarBytes } from "./decompress.js";

import {
  BlockAlignedWriter,
  adoptedChunks,
  discard,
  retainEntryChunks,
  release,
  writtenChunks,
} from "../chunk-memory.js";
import { PpaLoadError, cancelledError, errorMessage } from "../errors.js";

export type EntryKind =
  "manifest.yaml" | "manifest.json" | "image" | "chart" | "other";

export interface ArchiveEntry {
  /** The entry path, normalized: no leading `./`, forward slashes. */
  path: string;
  kind: EntryKind;
  size: number;
  /** The entry's bytes. Read them fully, or call `skip()`. */
  body: ReadEntry;
  skip(): void;
}

/**
 * Normalizes an archive entry path. Returns undefined for a path that is
 * absolute or climbs out with `..`, which this tool never follows.
 */
export function normalizeEntryPath(path: string): string | undefined {
  const slashed = path.replace(/\\/g, "/");
  if (slashed.startsWith("/") || /^[a-zA-Z]:\//.test(slashed)) return undefined;
  const normalized = posix.normalize(slashed).replace(/^(\.\/)+/, "");
  if (normalized === ".." || normalized.startsWith("../")) return undefined;
  return normalized.replace(/\/$/, "");
}

/** Classifies an entry by where PPA archives put each kind of file. */
export function classifyEntry(path: string): EntryKind {
  if (path === "manifest.yaml" || path === "manifest.yml")
    return "manifest.yaml";
  if (path === "manifest.json") return "manifest.json";
  const name = posix.basename(path);
  if (name.startsWith("._")) return "other";
  if (path.startsWith("images/")) return "image";
  if (path.startsWith("charts/") && /\.(tgz|tar\.gz)$/.test(name))
    return "chart";
  return "other";
}

/**
 * Reads a (possibly gzipped) tar file once, front to back, yielding its
 * regular-file entries one at a time. The reader waits while the consumer
 * works on an entry, so memory stays bounded by one read chunk whatever the
 * archive size. Entries that are not regular files, or whose path is unsafe,
 * are passed to `onSkipped` and not yielded.
 */
export async function* readArchiveEntries(
  file: string,
  options: {
    signal?: AbortSignal;
    onSkipped?: (path: string, reason: string) => void;
    /** Called as the file is read, with the bytes read from its start. */
    onBytesRead?: (bytesRead: number) => void;
  } = {},
): AsyncGenerator<ArchiveEntry> {
  const pending: ReadEntry[] = [];
  let wake: (() => void) | undefined;
  let finished = false;
  let failure: unknown;

  const notify = () => {
    wake?.();
    wake = undefined;
  };

  const parser = new Parser({
    strict: true,
    // Called as each entry is made, before any of its bytes are written to it.
    filter: (_path, entry) => retainEntryChunks(entry as ReadEntry),
    onReadEntry: (entry) => {
      pending.push(entry);
      notify();
    },
  });
  /** The entry a consumer is reading, ended on failure so that the consumer finishes. */
  let current: ReadEntry | undefined;
  const fail = (error: PpaLoadError) => {
    failure ??= error;
    finished = true;
    if (current && !current.emittedEnd) current.end();
    notify();
  };
  /** The tar bytes given to the parser, counted to explain a parse failure. */
  const sample = new LineBreakSample();
  const onTarProblem = (error: Error & { code?: string }) => {
    const damage = sample.damage(false);
    fail(
      damage
        ? new PpaLoadError(
            "ARCHIVE_UNREADABLE",
            `${file} is not a valid tar file (${error.message}): ${sample.describe(damage)}`,
            { cause: error, hint: lineBreakHint },
          )
        : new PpaLoadError(
            "ARCHIVE_UNREADABLE",
            `${file}: not a readable tar archive: ${error.message}`,
            {
              cause: error,
              hint: "check that the file is a complete .tgz, e.g. with tar -tzf",
            },
          ),
    );
  };
  parser.on("error", onTarProblem);
  parser.on("abort", onTarProblem);
  // node-tar passes over entry types it cannot read, such as GNU sparse files.
  parser.on("ignoredEntry", (entry: ReadEntry) => {
    const path = normalizeEntryPath(entry.path) ?? entry.path;
    options.onSkipped?.(
      path,
      entry.type === "SparseFile"
        ? "it is a GNU sparse file, which this tool cannot read; pack the archive again without tar --sparse (-S)"
        : `${entry.type} entries are not imported`,
    );
  });
  parser.on("end", () => {
    finished = true;
    notify();
  });

  // 512 KiB: in single runs of the benchmark import at scale 4, peak RSS
  // was 3 MB lower than with 1 MiB, and run times were within their spread.
  const source = createReadStream(file, { highWaterMark: 512 * 1024 });
  source.on("error", (error) => fail(readFailure(file, error)));
  const onAbort = () => {
    source.destroy();
    fail(cancelledError(options.signal));
  };
  options.signal?.addEventListener("abort", onAbort, { once: true });
  // A signal aborted before the call fires no event.
  if (options.signal?.aborted) onAbort();
  // Each chunk read is freed once it has been inflated or parsed.
  async function* counted(): AsyncGenerator<Buffer> {
    let bytesRead = 0;
    for await (const chunk of adoptedChunks(source)) {
      bytesRead += chunk.length;
      options.onBytesRead?.(bytesRead);
      yield chunk;
    }
  }
  // Byte mode: an object-mode stream would read up to 16 chunks ahead.
  const bytes = Readable.from(tarBytes(counted(), file, "ARCHIVE_UNREADABLE"), {
    objectMode: false,
  });
  bytes.on("error", (error) =>
    fail(
      error instanceof PpaLoadError
        ? error
        : new PpaLoadError(
            "ARCHIVE_UNREADABLE",
            `${file}: cannot read the archive: ${errorMessage(error)}`,
            { cause: error },
          ),
    ),
  );
  const blocks = new BlockAlignedWriter((chunk) => parser.write(chunk));
  // The parser may stop on its own (a damaged header, or the end-of-archive
  // blocks before the file ends), and must then get no more writes.
  const sink = new Writable({
    write(chunk: Buffer, _encoding, callback) {
      if (finished || failure) {
        release(chunk);
        callback();
        return;
      }
      sample.add(chunk);
      try {
        const ready = blocks.write(chunk);
        release(chunk);
        if (ready) callback();
        else parser.once("drain", () => callback());
      } catch (error) {
        onTarProblem(error as Error);
        callback();
      }
    },
    final(callback) {
      try {
        if (!finished && !failure) blocks.end(() => parser.end());
      } catch (error) {
        onTarProblem(error as Error);
      }
      callback();
    },
  });
  bytes.pipe(sink);

  try {
    while (true) {
      if (failure) throw failure;
      const entry = pending.shift();
      if (!entry) {
        if (finished) break;
        await new Promise<void>((resolve) => (wake = resolve));
        continue;
      }
      const path = normalizeEntryPath(entry.path);
      if (path === undefined) {
        if (entry.type !== "Directory") {
          options.onSkipped?.(
            entry.path,
            "the path is absolute or leaves the archive, so nothing was written for it",
          );
        }
        discard(entry);
        continue;
      }
      if (
        entry.type !== "File" &&
        entry.type !== "OldFile" &&
        entry.type !== "ContiguousFile"
      ) {
        const kind = classifyEntry(path);
        if (
          (kind === "manifest.yaml" || kind === "manifest.json") &&
          entry.type !== "Directory"
        ) {
          // Skipping it would import the archive as one without a manifest,
          // under the names the tarballs carry.
          discard(entry);
          throw new PpaLoadError(
            "ARCHIVE_UNREADABLE",
            `${file}: ${path} is a ${describeEntryType(entry.type)}${entry.linkpath ? ` to ${entry.linkpath}` : ""}, not a file, so the manifest cannot be read`,
            {
              hint: `pack the archive again with the manifest stored as a file, e.g. with GNU tar's ${entry.type === "Link" ? "--hard-dereference" : "--dereference (-h)"}`,
            },
          );
        }
        if (entry.type !== "Directory") {
          options.onSkipped?.(path, `${entry.type} entries are not imported`);
        }
        discard(entry);
        continue;
      }
      current = entry;
      yield {
        path,
        kind: classifyEntry(path),
        size: entry.size ?? 0,
        body: entry,
        skip: () => discard(entry),
      };
      // A consumer that stopped reading early must not stall the archive.
      await drain(entry);
      current = undefined;
    }
    if (failure) throw failure;
  } finally {
    options.signal?.removeEventListener("abort", onAbort);
    // A failure also ends the reading, so that the file is closed.
    if (!finished || failure) source.destroy();
  }
}

function describeEntryType(type: string): string {
  if (type === "SymbolicLink") return "symbolic link";
  if (type === "Link") return "hard link";
  return `${type} entry`;
}

/**
 * Reads and discards what a consumer left of an entry. resume() alone is not
 * enough: a read that the consumer left pending (as a stream made with
 * Readable.from reads ahead) takes the next chunk and pauses the entry
 * again, which would stall the archive.
 */
async function drain(entry: ReadEntry): Promise<void> {
  try {
    for await (const chunk of writtenChunks(entry)) {
      // Discarded: the consumer is done with this entry.
      release(chunk);
    }
  } catch {
    // The archive's own failure, if any, is reported by the reader.
  }
}

/**
 * Checks that the archive can be opened for reading, so that a wrong path
 * is reported before any registry is contacted. Throws the error the read
 * would throw.
 */
export async function checkArchiveReadable(file: string): Promise<void> {
  try {
    const handle = await open(file, "r");
    try {
      if ((await handle.stat()).isDirectory()) {
        throw Object.assign(new Error("is a directory"), { code: "EISDIR" });
      }
    } finally {
      await handle.close();
    }
  } catch (error) {
    throw readFailure(file, error);
  }
}

function readFailure(file: string, error: unknown): PpaLoadError {
  const code = (error as NodeJS.ErrnoException).code;
  if (code === "ENOENT") {
    return new PpaLoadError(
      "ARCHIVE_UNREADABLE",
      `archive not found: ${file}`,
      {
        hint: "check the --archive path",
      },
    );
  }
  if (code === "EISDIR") {
    return new PpaLoadError(
      "ARCHIVE_UNREADABLE",
      `${file} is a folder, not an archive`,
      {
        hint: "give the .tgz file that Passport Advantage delivered",
      },
    );
  }
  return new PpaLoadError(
    "ARCHIVE_UNREADABLE",
    `${file}: cannot read the archive: ${errorMessage(error)}`,
    {
      cause: error,
      hint: "check that the file is a complete .tgz, e.g. with tar -tzf",
    },
  );
}

/** Reads a whole entry into memory, failing past `limit` bytes. */
export async function readEntryText(
  entry: ArchiveEntry,
  limit = 16 * 1024 * 1024,
): Promise<string> {
  if (entry.size > limit) {
    entry.skip();
    throw new PpaLoadError(
      "MANIFEST_INVALID",
      `${entry.path} is ${entry.size} bytes, larger than the ${limit}-byte limit for a manifest`,
    );
  }
  const chunks: Buffer[] = [];
  for await (const chunk of entry.body) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks).toString("utf8");
}
