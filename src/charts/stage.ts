import { randomBytes } from "node:crypto";
import { createWriteStream } from "node:fs";
import { mkdir, rename, rm } from "node:fs/promises";
import { join, resolve, sep } from "node:path";
import { pipeline } from "node:stream/promises";

import type { ArchiveEntry } from "../archive/entries.js";
import { PpaLoadError } from "../errors.js";
import type { PlannedChart } from "../plan.js";

/** A chart file name this tool writes: no folders, no leading dot. */
const safeFileName = /^[A-Za-z0-9][A-Za-z0-9._+-]*\.(tgz|tar\.gz)$/;

export function isSafeChartFileName(name: string): boolean {
  return safeFileName.test(name) && !name.includes("..");
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
  readonly #staged = new Map<string, string>();

  constructor(outputDir: string) {
    this.outputDir = resolve(outputDir);
    this.chartsDir = join(this.outputDir, "charts");
    this.#stagingDir = join(
      this.outputDir,
      `.staging-${randomBytes(6).toString("hex")}`,
    );
  }

  /** Copies a chart entry's bytes to the staging folder. */
  async stage(entry: ArchiveEntry, fileName: string): Promise<void> {
    await mkdir(this.#stagingDir, { recursive: true });
    const path = join(this.#stagingDir, `${this.#staged.size}`);
    await pipeline(entry.body, createWriteStream(path));
    this.#staged.set(entry.path, path);
  }

  /** Moves planned charts to `charts/FILE`; returns their paths. */
  async commit(
    charts: PlannedChart[],
  ): Promise<{ entry: string; path: string }[]> {
    await mkdir(this.chartsDir, { recursive: true });
    const written: { entry: string; path: string }[] = [];
    for (const chart of charts) {
      const staged = this.#staged.get(chart.entry);
      if (!staged) continue;
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
