import { mkdir, readFile, rename, rm, writeFile } from "node:fs/promises";
import { basename, dirname, join } from "node:path";

import { PpaLoadError } from "../errors.js";
import { failureOf } from "../publish/shared.js";
import type { Failure, ImportEvent, WrittenChart } from "../events.js";
import type { Plan } from "../plan.js";
import type { RegistryClient } from "../registry/client.js";
import {
  type ChartMuseumUploadOptions,
  uploadToChartMuseum,
} from "./chartmuseum.js";
import { imageMappings } from "./image-names.js";
import { pushChartToOci, readChartMetadata } from "./oci-chart.js";
import { rewriteChart } from "./rewrite.js";
import { isSafeChartFileName } from "./stage.js";

export interface ChartPublishOptions {
  /** Rewrite the values keys that the manifest lists; on unless turned off. */
  rewriteValues: boolean;
  /** Keep each original chart in `charts/original/` when its values were rewritten. */
  keepOriginal: boolean;
  /** Registry host and namespace the images were published under; without it values are not rewritten. */
  images?: { registry: string; namespace: string };
  /**
   * Targets (`REPOSITORY:TAG`) that were published. Values are pointed only
   * at these, so a chart never names an image whose push failed.
   */
  published?: Set<string>;
  /** Upload each chart to this ChartMuseum server. */
  chartMuseum?: Omit<ChartMuseumUploadOptions, "chart" | "fileName">;
  /** Push each chart to this OCI registry path, as `helm push` does. */
  chartRegistry?: { client: RegistryClient; repositoryPath: string };
  signal?: AbortSignal;
}

interface Reporter {
  emit: (event: ImportEvent) => void;
  warn: (message: string) => void;
  fail: (failure: Failure) => void;
}

/**
 * Finishes each chart written to `charts/`: rewrites the image keys of its
 * values to what was published and renames it `NAME-VERSION.tgz`, then
 * uploads it to ChartMuseum and pushes it to an OCI registry when asked.
 * A chart that fails one step is reported and the others go on.
 */
export async function publishCharts(
  written: { entry: string; path: string }[],
  plan: Plan,
  options: ChartPublishOptions,
  reporter: Reporter,
): Promise<WrittenChart[]> {
  const mappings = imageMappings(plan).filter(
    (mapping) =>
      !options.published ||
      options.published.has(`${mapping.repository}:${mapping.tag}`),
  );
  const charts: WrittenChart[] = [];
  const paths = new Set(written.map((chart) => chart.path));
  /** The entry of the chart published under each name and version so far. */
  const published = new Map<string, string>();
  for (const { entry, path } of written) {
    options.signal?.throwIfAborted();
    const chart: WrittenChart = { entry, path };
    try {
      await finishChart(chart, plan, mappings, options, reporter, {
        paths,
        published,
      });
    } catch (error) {
      reporter.fail(failureOf(entry, error, "CHART"));
    }
    charts.push(chart);
    reporter.emit({ type: "chart-written", chart });
  }
  return charts;
}

async function finishChart(
  chart: WrittenChart,
  plan: Plan,
  mappings: ReturnType<typeof imageMappings>,
  options: ChartPublishOptions,
  reporter: Reporter,
  { paths, published }: { paths: Set<string>; published: Map<string, string> },
): Promise<void> {
  const spec = plan.charts.find((c) => c.entry === chart.entry)?.spec;
  let bytes: Buffer = await readFile(chart.path);
  const keys =
    (spec?.repositoryKeys.length ?? 0) + (spec?.registryKeys.length ?? 0);
  if (options.rewriteValues && spec && keys > 0) {
    if (!options.images) {
      reporter.warn(
        `${chart.entry}: values not rewritten, because the images went to an OCI layout and not to a registry`,
      );
    } else {
      const rewrite = await rewriteChart(bytes, {
        spec,
        mappings,
        registry: options.images.registry,
        namespace: options.images.namespace,
        chartEntry: chart.entry,
      });
      chart.changes = rewrite.changes.map(({ file, key, from, to }) => ({
        file,
        key,
        from,
        to,
      }));
      for (const problem of rewrite.problems) {
        reporter.warn(
          `${chart.entry}: ${problem.key}${problem.value !== undefined ? ` = ${JSON.stringify(problem.value)}` : ""} left as it is: ${withoutChartPrefix(problem.message, chart.entry)}`,
        );
      }
      for (const warning of rewrite.warnings) {
        reporter.warn(
          `${chart.entry}: ${withoutChartPrefix(warning, chart.entry)}`,
        );
      }
      if (rewrite.chart !== bytes) {
        const renamed = join(
          dirname(chart.path),
          `${rewrite.name}-${rewrite.version}.tgz`,
        );
        const taken = renamed !== chart.path && paths.has(renamed);
        if (taken) {
          reporter.warn(
            `${chart.entry}: its Chart.yaml names it ${rewrite.name} ${rewrite.version}, and ${basename(renamed)} is the file name of another chart of this archive, so the rewritten chart keeps the file name ${basename(chart.path)}`,
          );
        }
        bytes = rewrite.chart;
        chart.path = await writeRewritten(chart, rewrite, bytes, options, {
          keepFileName: taken,
        });
        paths.add(chart.path);
      }
    }
  }

  if (!options.chartMuseum && !options.chartRegistry) return;
  // Chart repositories keep one chart per name and version, so a second
  // chart of the archive with the same ones would replace the first.
  const { name, version } = await chartNameAndVersion(bytes, chart);
  const key = `${name}\0${version}`;
  const first = published.get(key);
  if (first !== undefined) {
    throw new PpaLoadError(
      "CHART",
      `${chart.entry} is ${name} ${version} by its Chart.yaml, as ${first} is, so it was not uploaded or pushed: a chart repository keeps one chart of each name and version`,
      {
        hint: "give one of the two charts another name or version in its Chart.yaml, or remove it from the archive",
      },
    );
  }
  published.set(key, chart.entry);

  if (options.chartMuseum) {
    const uploaded = await uploadToChartMuseum({
      ...options.chartMuseum,
      chart: bytes,
      fileName: basename(chart.path),
      signal: options.signal,
    });
    chart.chartMuseum = uploaded;
    if (uploaded.status === "exists") {
      reporter.warn(
        `${chart.entry}: ChartMuseum already has ${basename(chart.path)}; not uploaded again (use --force to replace it)`,
      );
    }
  }

  if (options.chartRegistry) {
    const pushed = await pushChartToOci({
      client: options.chartRegistry.client,
      repositoryPath: options.chartRegistry.repositoryPath,
      chart: bytes,
      name,
      version,
    });
    chart.oci = pushed;
  }
}

/**
 * Writes a rewritten chart as `NAME-VERSION.tgz` beside the original, and
 * moves the original to `charts/original/` or removes it. Returns the path.
 */
async function writeRewritten(
  chart: WrittenChart,
  rewrite: { name: string; version: string },
  bytes: Buffer,
  options: ChartPublishOptions,
  { keepFileName }: { keepFileName: boolean },
): Promise<string> {
  const folder = dirname(chart.path);
  const expected = `${rewrite.name}-${rewrite.version}.tgz`;
  // Chart.yaml's name and version come from the archive, so they are checked like entry names.
  const fileName =
    !keepFileName && isSafeChartFileName(expected)
      ? expected
      : basename(chart.path);
  const target = join(folder, fileName);
  if (options.keepOriginal) {
    const originals = join(folder, "original");
    await mkdir(originals, { recursive: true });
    chart.original = join(originals, basename(chart.path));
    await rename(chart.path, chart.original);
  } else if (target !== chart.path) {
    await rm(chart.path, { force: true });
  }
  const temporary = `${target}.partial`;
  await writeFile(temporary, bytes);
  await rename(temporary, target);
  return target;
}

async function chartNameAndVersion(
  bytes: Buffer,
  chart: WrittenChart,
): Promise<{ name: string; version: string }> {
  const info = await readChartMetadata(bytes, chart.entry);
  return { name: info.metadata.name, version: info.metadata.version };
}

/**
 * Drops the `chart ENTRY, ` or `chart ENTRY: ` that the rewrite's messages
 * start with, where the warning already starts with the entry.
 */
function withoutChartPrefix(message: string, entry: string): string {
  for (const prefix of [`chart ${entry}, `, `chart ${entry}: `]) {
    if (message.startsWith(prefix)) return message.slice(prefix.length);
  }
  return message;
}
