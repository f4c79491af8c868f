import { randomBytes } from "node:crypto";
import { createWriteStream } from "node:fs";
import { mkdir, rename, rm, writeFile } from "node:fs/promises";
import { join, resolve, sep } from "node:path";
import { pipeline } from "node:stream/promises";

import type { ArchiveEntry } from "../archive/entries.js";
import { PpaLoadError } from "../errors.js";
import type { PlannedChart } from "../plan.js";

/** Maximum file name length in bytes of ext4 and APFS, and in UTF-16 units of NTFS. */
const maxFileNameLength = 255;

/**
 * Returns why this tool does not write a chart of this file name, as a
 * clause that follows "the file name", or undefined when it does write it.
 * A name it writes has no folders, starts with an ASCII letter or digit,
 * contains only ASCII letters, digits, ".", "_", "+" and "-", has no "..",
 * ends in .tgz or .tar.gz, and has at most 255 characters, the most that
 * Linux, macOS and Windows file systems take.
 */
export function chartFileNameProblem(name: string): string | undefined {
  if (name.includes("/") || name.includes("\\")) {
    return "contains a folder separator";
  }
  if (name.startsWith(".")) return "starts with a dot";
  if (!/^[A-Za-z0-9]/.test(name)) {
    return "does not start with a letter or digit";
  }
  if (/\s/.test(name)) return "contains white space";
  const other = name.match(/[^A-Za-z0-9._+-]/);
  if (other) {
    return `contains the character ${JSON.stringify(other[0])}, and only ASCII letters, digits, ".", "_", "+" and "-" are allowed`;
  }
  if (name.includes("..")) return 'contains ".."';
  if (!/\.(tgz|tar\.gz)$/.test(name)) return "does not end in .tgz or .tar.gz";
  if (name.length > maxFileNameLength) {
    return `has ${name.length} characters, more than the ${maxFileNameLength} that file systems take`;
  }
  return undefined;
}

export function isSafeChartFileName(name: string): boolean {
  return chartFileNameProblem(name) === undefined;
}

/**
 * Keeps charts met while reading the archive in a staging folder inside the
 * output folder, then moves the ones the plan keeps to `charts/`. The
 * manifest may come after the charts in the archive, so which charts to keep
 * is known only at the end.
 */
export class ChartStager {
  readonly outputDir: string;
  readonly chartsDir: string;
  readonly #stagingDir: string;
  /** The staging file of each entry path. */
  readonly #staged = new Map<string, string>();
  /** The number of entries staged so far, which names each staging file. */
  #count = 0;

  constructor(outputDir: string) {
    this.outputDir = resolve(outputDir);
    this.chartsDir = join(this.outputDir, "charts");
    this.#stagingDir = join(
      this.outputDir,
      `.staging-${randomBytes(6).toString("hex")}`,
    );
  }

  /** Writes a chart entry's bytes, read already, to a staging file of its own. */
  async stageBytes(entryPath: string, bytes: Buffer): Promise<void> {
    await mkdir(this.#stagingDir, { recursive: true });
    const path = join(this.#stagingDir, `${this.#count++}`);
    await writeFile(path, bytes);
    this.#staged.set(entryPath, path);
  }

  /**
   * Copies a chart entry's bytes to a staging file of its own. An entry path
   * staged again replaces the earlier copy for `commit`.
   */
  async stage(entry: ArchiveEntry, fileName: string): Promise<void> {
    await mkdir(this.#stagingDir, { recursive: true });
    const path = join(this.#stagingDir, `${this.#count++}`);
    await pipeline(entry.body, createWriteStream(path));
    this.#staged.set(entry.path, path);
  }

  /**
   * Moves planned charts to `charts/FILE`; returns their paths. A chart
   * planned twice is moved once. Throws before moving any chart when two
   * entries would be written to the same file.
   */
  async commit(
    charts: PlannedChart[],
  ): Promise<{ entry: string; path: string }[]> {
    const byFileName = new Map<string, string>();
    for (const chart of charts) {
      const other = byFileName.get(chart.fileName);
      if (other !== undefined && other !== chart.entry) {
        throw new PpaLoadError(
          "CHART",
          `the chart entries ${other} and ${chart.entry} would both be written to ${join(this.chartsDir, chart.fileName)}, so no chart was written`,
          { hint: "remove or rename one of them in the archive" },
        );
      }
      byFileName.set(chart.fileName, chart.entry);
    }
    if (charts.length > 0) await mkdir(this.chartsDir, { recursive: true });
    const written: { entry: string; path: string }[] = [];
    for (const chart of charts) {
      const staged = this.#staged.get(chart.entry);
      if (!staged || written.some((w) => w.entry === chart.entry)) continue;
      const path = join(this.chartsDir, chart.fileName);
      if (!path.startsWith(this.chartsDir + sep)) {
        throw new PpaLoadError(
          "CHART",
          `refusing to write chart ${chart.entry} outside ${this.chartsDir}`,
        );
      }
      await rename(staged, path);
      written.push({ entry: chart.entry, path });
    }
    return written;
  }

  async cleanup(): Promise<void> {
    await rm(this.#stagingDir, { recursive: true, force: true });
  }
}
