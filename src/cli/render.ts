import { countOf, withSubject } from "../text.js";

import { PpaLoadError, errorMessage } from "../errors.js";
import { type ImportResult, formatPlatform } from "../events.js";
import type { DryRunResult, TagCheck } from "../dry-run.js";
import { formatSize } from "./format.js";

/** Formats an error for standard error: message, each problem, and the hint. */
export function formatError(error: unknown): string {
  const lines = [`error: ${errorMessage(error)}`];
  if (error instanceof PpaLoadError) {
    const problems = error.problems.filter((p) => p !== error.message);
    for (const problem of problems) lines.push(`  - ${problem}`);
    if (error.hint) lines.push(`hint: ${error.hint}`);
  }
  return lines.join("\n");
}

function movedFrom(previousDigest: string | undefined): string {
  return previousDigest ? `  (tag moved from ${previousDigest})` : "";
}

/** Formats the summary of an import for standard output. */
export function formatSummary(result: ImportResult): string {
  const lines: string[] = [];
  const layout = result.registry.startsWith("oci:")
    ? result.registry.slice("oci:".length)
    : undefined;
  if (result.published.length > 0) {
    lines.push(
      layout
        ? `Wrote ${countOf(result.published.length, "image")} to the OCI image layout ${layout}; nothing was pushed to a registry:`
        : `Published ${countOf(result.published.length, "image")} to ${result.registry}:`,
    );
    for (const ref of result.published) {
      lines.push(
        `  ${ref.target}  ${ref.digest}  ${formatPlatform(ref.platform)}${movedFrom(ref.previousDigest)}`,
      );
    }
  }
  const { uploaded, mounted, existing, bytesUploaded, resumed, bytesResumed } =
    result.blobs;
  if (uploaded + mounted + existing > 0) {
    lines.push(
      layout
        ? `Blobs: ${uploaded} written (${formatSize(bytesUploaded)}), ${existing} already there`
        : `Blobs: ${uploaded} uploaded (${formatSize(bytesUploaded)}), ${mounted} mounted from another repository, ${existing} already there`,
    );
  }
  if (resumed > 0) {
    lines.push(
      `Resumed: ${countOf(resumed, "upload")} of an earlier run, whose first ${formatSize(bytesResumed)} were not sent again`,
    );
  }
  if (result.lists.length > 0) {
    lines.push(`Manifest lists:`);
    for (const list of result.lists) {
      lines.push(
        `  ${list.target}  ${list.digest}  ${list.platforms.map(formatPlatform).join(", ")}${movedFrom(list.previousDigest)}`,
      );
    }
  }
  if (result.charts.length > 0) {
    lines.push(`Charts:`);
    for (const chart of result.charts) {
      lines.push(`  ${chart.path}`);
      for (const change of chart.changes ?? []) {
        lines.push(
          `    ${change.key}: ${change.from ?? "(empty)"} -> ${change.to}${change.file.endsWith("/values.yaml") && change.file.split("/").length > 2 ? ` (${change.file})` : ""}`,
        );
      }
      if (chart.original) lines.push(`    original kept at ${chart.original}`);
      if (chart.chartMuseum) {
        lines.push(
          `    ChartMuseum: ${chart.chartMuseum.status === "exists" ? "already there, not uploaded" : chart.chartMuseum.status} ${chart.chartMuseum.url}`,
        );
      }
      if (chart.oci) {
        lines.push(`    OCI: ${chart.oci.reference} ${chart.oci.digest}`);
      }
    }
  }
  if (result.warnings.length > 0) {
    lines.push(`Warnings:`);
    for (const warning of new Set(result.warnings)) lines.push(`  ${warning}`);
  }
  if (result.skipped.length > 0) {
    lines.push(`Skipped:`);
    for (const skipped of result.skipped)
      lines.push(`  ${skipped.item}: ${skipped.reason}`);
  }
  if (result.failures.length > 0) {
    lines.push(`Failed:`);
    for (const failure of result.failures) {
      lines.push(`  ${withSubject(failure.item, failure.message)}`);
    }
  }
  if (layout && result.published.length > 0) {
    const example = result.lists[0]?.target ?? result.published[0].target;
    lines.push(
      `To push an image from the layout: skopeo copy --all oci:${layout}:${example} docker://REGISTRY/${example} (add --dest-tls-verify=false for a registry that speaks plain HTTP)`,
    );
  }
  if (lines.length === 0)
    lines.push("Nothing was published: the archive holds no images or charts.");
  return lines.join("\n");
}

/** Formats the closing lines of a run over several archives. */
export function formatBulkSummary(
  outcomes: { archive: string; exitCode: number }[],
  archives: string[],
): string {
  const state = (code: number) =>
    code === 0
      ? "imported"
      : code === 3
        ? "partly imported"
        : code === 130
          ? "stopped"
          : "failed";
  const rows = [
    ...outcomes.map((o) => [state(o.exitCode), o.archive]),
    ...archives
      .slice(outcomes.length)
      .map((archive) => ["not started", archive]),
  ];
  // The states are padded to one width, so that the paths line up.
  const width = Math.max(...rows.map(([label]) => label.length));
  const lines = [
    `Archives: ${outcomes.filter((o) => o.exitCode === 0).length} of ${archives.length} imported`,
    ...rows.map(([label, archive]) => `  ${label.padEnd(width)}  ${archive}`),
  ];
  return lines.join("\n");
}

/**
 * Formats what a dry run found at the destination, after the inspection:
 * for each tag, whether it exists and what an import with these options
 * would do to it.
 */
export function formatDryRun(
  result: DryRunResult,
  options: { noOverwrite?: boolean; docker?: boolean } = {},
): string {
  const lines = [
    `Destination: ${result.destination}${result.credentials ? `, with the credentials from ${result.credentials}` : ""}`,
  ];
  if (result.tags.length > 0) lines.push("Tags:");
  const planned = new Map(
    result.inspection.references.map((item) => [item.target, item.imageId]),
  );
  for (const tag of result.tags) {
    lines.push(
      `  ${tag.target}  ${tagOutcome(tag, planned.get(tag.target), options)}`,
    );
  }
  lines.push("Nothing was uploaded, tagged or written (--dry-run).");
  return lines.join("\n");
}

/**
 * Describes what an import would do to an existing tag. The direct path
 * with --no-overwrite fails a tag whose manifest digest would change, and
 * the Docker path one whose image ID would change.
 */
function tagOutcome(
  tag: TagCheck,
  plannedImage: string | undefined,
  options: { noOverwrite?: boolean; docker?: boolean },
): string {
  if (!tag.currentDigest) return "new";
  const exists = `exists at ${tag.currentDigest}`;
  if (tag.currentImage && plannedImage && tag.currentImage !== plannedImage) {
    return options.noOverwrite
      ? `${exists} with another image; --no-overwrite fails it`
      : `${exists} with another image; an import moves it`;
  }
  if (tag.currentImage && plannedImage) {
    if (options.docker) {
      return `${exists} with the same image; an import pushes it again, which moves the tag if the engine's manifest differs, even with --no-overwrite`;
    }
    return options.noOverwrite
      ? `${exists} with the same image; --no-overwrite fails it unless the import writes the same manifest, as one with the same compression settings does`
      : `${exists} with the same image; an import keeps it when the manifest is unchanged, and moves it to the new manifest otherwise`;
  }
  return options.noOverwrite
    ? `${exists}; --no-overwrite fails it unless the import writes the same digest`
    : `${exists}; an import keeps it when the image is unchanged, and moves it otherwise`;
}
