import { randomBytes } from "node:crypto";
import { mkdir, readFile, rename, rm, writeFile } from "node:fs/promises";
import { dirname } from "node:path";

/** An upload session that a registry acknowledged part of a blob in. */
export interface JournalEntry {
  /** `HOST[:PORT]` of the registry. */
  registry: string;
  repository: string;
  digest: string;
  size: number;
  /** Absolute URL from the latest `Location` of the session. */
  url: string;
  /** Bytes the registry acknowledged, from the start of the blob. */
  offset: number;
  /** ISO 8601 time of the acknowledgement. */
  updated: string;
}

interface JournalFile {
  version: 1;
  uploads: JournalEntry[];
}

/**
 * A record of unfinished chunked uploads, kept in a JSON file, so that a
 * later run can send the rest of a blob to the same upload session instead
 * of starting over.
 *
 * Writes go to a temporary file that is renamed over the journal, so a
 * killed process leaves either the old or the new content. The file is
 * removed when no upload is left in it. Its URLs may carry a registry's
 * upload state token, so the file is readable by its owner only.
 */
export class UploadJournal {
  readonly file: string;
  readonly #entries = new Map<string, JournalEntry>();
  #writing: Promise<void> = Promise.resolve();

  private constructor(file: string) {
    this.file = file;
  }

  /**
   * Reads the journal at `file`, or starts an empty one. A file that is not
   * a valid journal is treated as empty, and `onInvalid` receives the
   * reason, because losing it only costs uploads from the first byte.
   */
  static async open(
    file: string,
    onInvalid?: (message: string) => void,
  ): Promise<UploadJournal> {
    const journal = new UploadJournal(file);
    let text: string;
    try {
      text = await readFile(file, "utf8");
    } catch (error) {
      // A missing output folder, or a file in its place, is reported by the
      // import's own check of the folder.
      const code = (error as NodeJS.ErrnoException).code;
      if (code === "EISDIR") {
        onInvalid?.(
          `${file} is a folder, so chunked uploads cannot be resumed by a later run; remove or rename that folder`,
        );
      } else if (code !== "ENOENT" && code !== "ENOTDIR") {
        onInvalid?.(
          `cannot read ${file}, so chunked uploads start from the first byte: ${(error as Error).message}`,
        );
      }
      return journal;
    }
    try {
      const parsed = JSON.parse(text) as Partial<JournalFile>;
      if (parsed.version !== 1 || !Array.isArray(parsed.uploads)) {
        throw new Error("it has no version 1 upload list");
      }
      for (const entry of parsed.uploads) {
        if (isEntry(entry)) journal.#entries.set(keyOf(entry), entry);
      }
    } catch (error) {
      onInvalid?.(
        `ignoring ${file}, which is not a valid upload journal: ${(error as Error).message}`,
      );
    }
    return journal;
  }

  /** Returns the recorded session of a blob in a repository, if any. */
  find(
    registry: string,
    repository: string,
    digest: string,
  ): JournalEntry | undefined {
    return this.#entries.get(keyOf({ registry, repository, digest }));
  }

  /** Returns every recorded session, for cleaning up the ones no run resumed. */
  entries(): JournalEntry[] {
    return [...this.#entries.values()];
  }

  /** Records how far a session got, replacing an earlier record of the blob. */
  record(entry: Omit<JournalEntry, "updated">): Promise<void> {
    this.#entries.set(keyOf(entry), {
      ...entry,
      updated: new Date().toISOString(),
    });
    return this.#save();
  }

  /** Forgets a blob's session, after the blob was stored or the session was lost. */
  remove(registry: string, repository: string, digest: string): Promise<void> {
    if (!this.#entries.delete(keyOf({ registry, repository, digest }))) {
      return this.#writing;
    }
    return this.#save();
  }

  /** Waits for pending writes. */
  flush(): Promise<void> {
    return this.#writing;
  }

  #save(): Promise<void> {
    // Writes run one after another, each with the entries of its time, so
    // the last write always contains the latest state.
    this.#writing = this.#writing.then(
      () => this.#write(),
      () => this.#write(),
    );
    return this.#writing;
  }

  async #write(): Promise<void> {
    if (this.#entries.size === 0) {
      await rm(this.file, { force: true });
      return;
    }
    const content: JournalFile = { version: 1, uploads: this.entries() };
    await mkdir(dirname(this.file), { recursive: true });
    const temporary = `${this.file}.${randomBytes(4).toString("hex")}.tmp`;
    try {
      await writeFile(temporary, `${JSON.stringify(content, null, 2)}\n`, {
        mode: 0o600,
      });
      await rename(temporary, this.file);
    } catch (error) {
      await rm(temporary, { force: true });
      throw error;
    }
  }
}

function keyOf(entry: {
  registry: string;
  repository: string;
  digest: string;
}): string {
  return `${entry.registry}/${entry.repository}@${entry.digest}`;
}

function isEntry(value: unknown): value is JournalEntry {
  const entry = value as Partial<JournalEntry> | null;
  return (
    typeof entry === "object" &&
    entry !== null &&
    typeof entry.registry === "string" &&
    typeof entry.repository === "string" &&
    typeof entry.digest === "string" &&
    /^sha256:[0-9a-f]{64}$/.test(entry.digest) &&
    Number.isSafeInteger(entry.size) &&
    Number.isSafeInteger(entry.offset) &&
    (entry.offset ?? -1) >= 0 &&
    (entry.offset ?? 0) <= (entry.size ?? -1) &&
    typeof entry.url === "string" &&
    /^https?:\/\//.test(entry.url)
  );
}
