import { readFile } from "node:fs/promises";
import { basename } from "node:path";

import { readChartMetadata } from "../charts/oci-chart.js";
import { publishCharts } from "../charts/publish.js";
import type { ChartStager } from "../charts/stage.js";
import { errorMessage } from "../errors.js";
import type { ManifestFile } from "../manifest/model.js";
import type { Plan, PlannedChart } from "../plan.js";

/** A chart an import would write, and what it would change in its values. */
export interface InspectedChart {
  /** The chart's entry in the archive, e.g. `charts/app-1.0.0.tgz`. */
  entry: string;
  /** `name` from Chart.yaml, or null when the chart cannot be read. */
  name: string | null;
  /** `version` from Chart.yaml, or null when the chart cannot be read. */
  version: string | null;
  /** Path the import writes the chart to, inside its output folder: `charts/FILE`. */
  file: string;
  /** The manifest files that name the chart; empty when none does. */
  declaredIn: ManifestFile[];
  /** `repository-keys` the manifest lists for the chart. */
  repositoryKeys: string[];
  /** `registry-keys` the manifest lists for the chart. */
  registryKeys: string[];
  /** Each values key the import would rewrite. */
  changes: InspectedValueChange[];
  /** Keys left as they are and values that still point elsewhere, as the import words them. */
  warnings: string[];
}

export interface InspectedValueChange {
  /** The values file inside the chart archive, e.g. `app/values.yaml`. */
  file: string;
  /** The key as the manifest lists it. */
  key: string;
  /** The value before, or null when the key was empty. */
  from: string | null;
  to: string;
}

/**
 * Runs an import's own chart step on the staged charts, in the staging
 * folder: moves the planned charts to `charts/` there and rewrites their
 * values with `publishCharts`, so that the changes, warnings and file names
 * are the ones an import would produce. `images` is the registry and
 * namespace the values point at; without it, values are not rewritten, as
 * for an import to an OCI layout. Returns the charts and the problems that
 * would make the chart step fail.
 */
export async function inspectCharts(
  plan: Plan,
  stager: ChartStager,
  images: { registry: string; namespace: string } | undefined,
  signal?: AbortSignal,
): Promise<{ charts: InspectedChart[]; problems: string[] }> {
  let written: { entry: string; path: string }[];
  try {
    written = await stager.commit(plan.charts);
  } catch (error) {
    // The plan already reports charts that would be written to one file.
    return {
      charts: plan.charts.map((chart) => describeUnwritten(chart)),
      problems: [errorMessage(error)],
    };
  }

  const warnings = new Map<string, string[]>();
  const problems: string[] = [];
  // publishCharts finishes one chart at a time and reports each warning
  // before the chart's `chart-written` event.
  let pending: string[] = [];
  const results = await publishCharts(
    written,
    plan,
    { rewriteValues: true, keepOriginal: false, images, signal },
    {
      emit: (event) => {
        if (event.type !== "chart-written") return;
        warnings.set(event.chart.entry, pending);
        pending = [];
      },
      warn: (message) => pending.push(message),
      fail: (failure) =>
        problems.push(
          `${failure.message}${failure.hint ? `; ${failure.hint}` : ""}`,
        ),
    },
  );

  const charts: InspectedChart[] = [];
  for (const planned of plan.charts) {
    // Two manifest entries can name one chart, which is written once.
    if (charts.some((chart) => chart.entry === planned.entry)) continue;
    const result = results.find((chart) => chart.entry === planned.entry);
    if (!result) {
      charts.push(describeUnwritten(planned));
      continue;
    }
    const metadata = await readChartMetadata(await readFile(result.path)).then(
      (info) => info.metadata,
      () => undefined,
    );
    charts.push({
      ...describeUnwritten(planned),
      name: metadata?.name ?? null,
      version: metadata?.version ?? null,
      file: `charts/${basename(result.path)}`,
      changes: (result.changes ?? []).map(({ file, key, from, to }) => ({
        file,
        key,
        from,
        to,
      })),
      warnings: warnings.get(planned.entry) ?? [],
    });
  }
  return { charts, problems };
}

/** Describes a planned chart from the plan alone. */
function describeUnwritten(chart: PlannedChart): InspectedChart {
  return {
    entry: chart.entry,
    name: null,
    version: null,
    file: `charts/${chart.fileName}`,
    declaredIn: [...new Set(chart.spec?.paths.map((path) => path.file))],
    repositoryKeys: chart.spec?.repositoryKeys ?? [],
    registryKeys: chart.spec?.registryKeys ?? [],
    changes: [],
    warnings: [],
  };
}
