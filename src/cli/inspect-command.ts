import { ExitCode, PpaLoadError } from "../errors.js";
import { formatPlatform } from "../events.js";
import {
  type InspectResult,
  type InspectedChart,
  type InspectedImage,
  type InspectedManifest,
  type InspectedTarball,
  inspectArchive,
} from "../inspect.js";
import { countOf, printable } from "../text.js";
import type { CliIO } from "./io.js";
import { formatSize } from "./format.js";
import { formatError } from "./render.js";

export interface InspectFlags {
  archive: string;
  namespace?: string;
  registry?: string;
  mapPlusInTags?: string;
  /** Print the result as one JSON object instead of text. */
  json?: boolean;
}

/**
 * Runs `ppa-load inspect` and returns the exit code: 0 when the archive can
 * be imported, 1 when it has problems, 2 for invalid options.
 */
export async function runInspect(
  flags: InspectFlags,
  io: CliIO,
  signal?: AbortSignal,
): Promise<number> {
  try {
    const result = await inspectArchive({
      archive: flags.archive,
      namespace: flags.namespace,
      registry: flags.registry,
      mapPlusInTags: flags.mapPlusInTags,
      signal,
    });
    io.stdout.write(
      flags.json
        ? `${JSON.stringify(result, null, 2)}\n`
        : printable(`${formatInspection(result)}\n`),
    );
    return result.importable ? ExitCode.success : ExitCode.failure;
  } catch (error) {
    io.stderr.write(`${printable(formatError(error))}\n`);
    if (signal?.aborted) return ExitCode.interrupted;
    return error instanceof PpaLoadError ? error.exitCode : ExitCode.failure;
  }
}

/** Shortens an image ID to the 12 hex digits that `docker images` shows. */
function shortImageId(imageId: string): string {
  return imageId.replace(/^(sha256:[0-9a-f]{12})[0-9a-f]+$/, "$1");
}

function describeManifest(manifest: InspectedManifest): string {
  if (manifest.empty) return `  ${manifest.file}: empty`;
  const images = countOf(manifest.images, "image");
  const references = countOf(manifest.references, "reference");
  return `  ${manifest.file}: ${images} with ${references}, ${countOf(manifest.charts, "chart")}`;
}

function describeImage(image: InspectedImage): string {
  const names = image.repoTags.join(", ") || "(no name, saved by ID)";
  const bytes =
    image.layerBytes === null
      ? "uncompressed size unknown"
      : formatSize(image.layerBytes);
  return `    ${shortImageId(image.imageId)}  ${names}  ${formatPlatform(image.platform)}  ${countOf(image.layerCount, "layer")}, ${bytes}`;
}

function tarballLines(tarball: InspectedTarball): string[] {
  const size = formatSize(tarball.size);
  if (tarball.error) {
    const reason = tarball.error.message.startsWith(`${tarball.entry}: `)
      ? tarball.error.message.slice(tarball.entry.length + 2)
      : tarball.error.message;
    return [`  ${tarball.entry}: ${size}, unreadable: ${reason}`];
  }
  return [
    `  ${tarball.entry}: ${tarball.format}, ${size}`,
    ...tarball.images.map(describeImage),
  ];
}

/**
 * Drops the chart's entry path from the start of one of its warnings, which
 * the import's messages begin with as `ENTRY: ` or `chart ENTRY, `, because
 * the line above names the chart already.
 */
function withoutChartName(warning: string, entry: string): string {
  for (const prefix of [`${entry}: `, `chart ${entry}, `, `chart ${entry}: `]) {
    if (warning.startsWith(prefix)) {
      return withoutChartName(warning.slice(prefix.length), entry);
    }
  }
  return warning;
}

function chartLines(chart: InspectedChart): string[] {
  const title =
    chart.name === null
      ? "not a chart this tool can read"
      : `${chart.name} ${chart.version}`;
  const lines = [`  ${chart.entry}: ${title}, written as ${chart.file}`];
  const keys = chart.repositoryKeys.length + chart.registryKeys.length;
  if (chart.declaredIn.length === 0) {
    lines.push("    not named by the manifest, so its values stay as they are");
  } else if (keys === 0) {
    lines.push(
      "    the manifest lists no repository-keys or registry-keys, so its values stay as they are",
    );
  } else if (chart.changes.length === 0) {
    lines.push("    no values change");
  }
  for (const change of chart.changes) {
    // A key found in a subchart's values file names that file.
    const subchart = change.file.split("/").length > 2;
    lines.push(
      `    ${change.key}: ${change.from ?? "(empty)"} -> ${change.to}${subchart ? ` (${change.file})` : ""}`,
    );
  }
  for (const warning of chart.warnings) {
    lines.push(`    warning: ${withoutChartName(warning, chart.entry)}`);
  }
  return lines;
}

function conclusion(result: InspectResult): string {
  if (!result.importable) {
    return `The archive cannot be imported as it is, because of ${countOf(result.problems.length, "problem")}.`;
  }
  const parts = [
    countOf(result.references.length, "image"),
    countOf(result.lists.length, "manifest list"),
    countOf(result.charts.length, "chart"),
  ];
  return `The archive can be imported: ${parts.slice(0, -1).join(", ")} and ${parts.at(-1)}.`;
}

/** Formats an inspection for standard output, one section per kind of item. */
export function formatInspection(result: InspectResult): string {
  const lines = [`Archive: ${result.archive}`];
  if (result.manifests.length === 0) {
    lines.push("Manifests: none");
  } else {
    lines.push("Manifests:", ...result.manifests.map(describeManifest));
  }
  if (result.tarballs.length > 0) {
    lines.push("Image tarballs:", ...result.tarballs.flatMap(tarballLines));
  }
  if (result.references.length > 0) {
    lines.push("Images to publish:");
    for (const ref of result.references) {
      // The manifest's name is not always the one the tarball carries.
      const origin = ref.declaredAs
        ? `named ${ref.declaredAs.name} in ${ref.declaredAs.files.join(" and ")}; image from ${ref.tarball}`
        : `from ${ref.source} in ${ref.tarball}`;
      lines.push(
        `  ${ref.target}`,
        `    ${origin}, ${formatPlatform(ref.platform)}`,
      );
    }
  }
  if (result.lists.length > 0) {
    lines.push("Manifest lists to publish:");
    for (const list of result.lists) {
      const platforms = list.members
        .map((member) => formatPlatform(member.platform))
        .join(", ");
      lines.push(`  ${list.target}`, `    ${list.source} over ${platforms}`);
    }
  }
  if (result.charts.length > 0) {
    lines.push("Charts:", ...result.charts.flatMap(chartLines));
  }
  const sections: [string, string[]][] = [
    [
      "Skipped:",
      result.skipped.map((skipped) => `${skipped.item}: ${skipped.reason}`),
    ],
    ["Warnings:", result.warnings],
    ["Problems:", result.problems],
  ];
  for (const [title, items] of sections) {
    if (items.length === 0) continue;
    lines.push(title, ...items.map((item) => `  ${item}`));
  }
  lines.push(conclusion(result));
  return lines.join("\n");
}
