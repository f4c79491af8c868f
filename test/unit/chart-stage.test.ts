import { mkdtemp, readFile, readdir, rm } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Readable } from "node:stream";
import type { ReadEntry } from "tar";
import { afterEach, beforeEach, describe, expect, it } from "vitest";

import type { ArchiveEntry } from "../../src/archive/entries.js";
import {
  ChartStager,
  chartFileNameProblem,
  isSafeChartFileName,
} from "../../src/charts/stage.js";
import { PpaLoadError } from "../../src/errors.js";

function chartEntry(path: string, text: string): ArchiveEntry {
  const body = Readable.from([Buffer.from(text)]);
  return {
    path,
    kind: "chart",
    size: text.length,
    body: body as unknown as ReadEntry,
    skip: () => body.resume(),
  };
}

let outputDir: string;
let stager: ChartStager;

beforeEach(async () => {
  outputDir = await mkdtemp(join(tmpdir(), "chart-stage-"));
  stager = new ChartStager(outputDir);
});

afterEach(async () => {
  await stager.cleanup();
  await rm(outputDir, { recursive: true, force: true });
});

describe("ChartStager", () => {
  it("writes the planned one of two charts", async () => {
    await stager.stage(chartEntry("charts/app-1.tgz", "new"), "app-1.tgz");
    await stager.stage(chartEntry("charts/old/app-1.tgz", "old"), "app-1.tgz");

    const written = await stager.commit([
      { entry: "charts/app-1.tgz", fileName: "app-1.tgz" },
    ]);

    expect(written).toEqual([
      { entry: "charts/app-1.tgz", path: join(stager.chartsDir, "app-1.tgz") },
    ]);
    expect(await readFile(written[0].path, "utf8")).toBe("new");
  });

  it("keeps staging files of repeated entries", async () => {
    await stager.stage(chartEntry("charts/a-1.tgz", "first"), "a-1.tgz");
    await stager.stage(chartEntry("charts/a-1.tgz", "second"), "a-1.tgz");
    await stager.stage(chartEntry("charts/b-1.tgz", "other"), "b-1.tgz");

    const written = await stager.commit([
      { entry: "charts/a-1.tgz", fileName: "a-1.tgz" },
      { entry: "charts/b-1.tgz", fileName: "b-1.tgz" },
    ]);

    expect(written).toHaveLength(2);
    expect(await readFile(written[0].path, "utf8")).toBe("second");
    expect(await readFile(written[1].path, "utf8")).toBe("other");
  });

  it("writes a chart planned twice once", async () => {
    await stager.stage(chartEntry("charts/a-1.tgz", "a"), "a-1.tgz");

    const written = await stager.commit([
      { entry: "charts/a-1.tgz", fileName: "a-1.tgz" },
      { entry: "charts/a-1.tgz", fileName: "a-1.tgz" },
    ]);

    expect(written).toHaveLength(1);
  });

  it("rejects two entries for one file before writing any", async () => {
    await stager.stage(chartEntry("charts/app-1.tgz", "new"), "app-1.tgz");
    await stager.stage(chartEntry("charts/old/app-1.tgz", "old"), "app-1.tgz");

    const failure = await stager
      .commit([
        { entry: "charts/app-1.tgz", fileName: "app-1.tgz" },
        { entry: "charts/old/app-1.tgz", fileName: "app-1.tgz" },
      ])
      .catch((error: unknown) => error);

    expect(failure).toBeInstanceOf(PpaLoadError);
    expect((failure as PpaLoadError).code).toBe("CHART");
    expect((failure as PpaLoadError).message).toContain(
      "the chart entries charts/app-1.tgz and charts/old/app-1.tgz would both be written to",
    );
    expect(await readdir(outputDir)).not.toContain("charts");
  });
});

describe("chartFileNameProblem", () => {
  it.each([
    ["with space-1.0.0.tgz", "contains white space"],
    [".hidden-1.0.0.tgz", "starts with a dot"],
    ["-dash-1.0.0.tgz", "does not start with a letter or digit"],
    ["a..b-1.tgz", 'contains ".."'],
    ["app-1.0.0.zip", "does not end in .tgz or .tar.gz"],
  ])("explains why %s is skipped", (name, problem) => {
    expect(chartFileNameProblem(name)).toBe(problem);
  });

  it("explains why a name of 304 characters is skipped", () => {
    expect(chartFileNameProblem(`${"c".repeat(300)}.tgz`)).toBe(
      "has 304 characters, more than the 255 that file systems take",
    );
  });

  it("accepts a name of 255 characters", () => {
    expect(chartFileNameProblem(`${"c".repeat(251)}.tgz`)).toBeUndefined();
  });

  it("names a character outside ASCII", () => {
    expect(chartFileNameProblem("ünïcode-1.0.0.tgz")).toBe(
      "does not start with a letter or digit",
    );
    expect(chartFileNameProblem("unïcode-1.0.0.tgz")).toContain(
      'contains the character "ï"',
    );
  });

  it.each(["app-1.0.0.tgz", "ok-1.0.0.tar.gz", "a_b+c-1.tgz"])(
    "accepts %s",
    (name) => {
      expect(chartFileNameProblem(name)).toBeUndefined();
      expect(isSafeChartFileName(name)).toBe(true);
    },
  );
});
