import { countOf } from "../text.js";
import ora, { type Ora } from "ora";

import { PpaLoadError, errorMessage } from "../errors.js";
import {
  type ImportEvent,
  type ImportResult,
  formatPlatform,
} from "../events.js";

export interface RenderOptions {
  /** Where progress goes: standard error. */
  stream: NodeJS.WriteStream;
  quiet?: boolean;
  verbose?: boolean;
}

function formatSize(bytes: number): string {
  if (bytes < 1024) return `${bytes} B`;
  const units = ["KiB", "MiB", "GiB", "TiB"];
  let value = bytes / 1024;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return `${value.toFixed(1)} ${units[unit]}`;
}

/**
 * Draws import events on standard error: an ora spinner on a terminal, plain
 * lines otherwise (CI logs get no spinner frames).
 */
export class ProgressRenderer {
  readonly #stream: NodeJS.WriteStream;
  readonly #quiet: boolean;
  readonly #verbose: boolean;
  readonly #spinner?: Ora;

  constructor(options: RenderOptions) {
    this.#stream = options.stream;
    this.#quiet = options.quiet ?? false;
    this.#verbose = options.verbose ?? false;
    // A terminal that reports zero columns (some pseudo-terminals do) gets
    // plain lines, because ora cannot lay out a spinner in no width.
    if (this.#stream.isTTY && (this.#stream.columns ?? 0) > 0 && !this.#quiet) {
      this.#spinner = ora({ stream: this.#stream, discardStdin: false });
    }
  }

  #line(text: string): void {
    if (this.#spinner?.isSpinning) {
      this.#spinner.clear();
      this.#stream.write(`${text}\n`);
      this.#spinner.render();
    } else {
      this.#stream.write(`${text}\n`);
    }
  }

  handle = (event: ImportEvent): void => {
    if (event.type === "warning") {
      this.#line(`warning: ${event.message}`);
      return;
    }
    if (event.type === "failure") {
      this.#line(
        `error: ${event.failure.message}${event.failure.hint ? `\n  hint: ${event.failure.hint}` : ""}`,
      );
      return;
    }
    if (this.#quiet) return;
    switch (event.type) {
      case "phase":
        if (event.phase === "done") {
          this.#spinner?.stop();
        } else if (this.#spinner) {
          this.#spinner.start(event.message);
        } else {
          this.#line(`${event.message}`);
        }
        break;
      case "entry":
        if (this.#spinner && event.kind === "image") {
          this.#spinner.text = `loading ${event.path} (${formatSize(event.size)})`;
        }
        break;
      case "tarball-loaded":
        this.#line(
          `  read ${event.tarball}: ${event.images.map((i) => i.repoTags.join(", ") || i.imageId).join("; ")}`,
        );
        break;
      case "tarball-failed":
        this.#line(`  failed to read ${event.tarball}: ${event.message}`);
        break;
      case "reference-pushed":
        this.#line(
          `  published ${event.reference.target} ${event.reference.digest}`,
        );
        break;
      case "list-pushed":
        this.#line(
          `  wrote manifest list ${event.list.target} ${event.list.digest}`,
        );
        break;
      case "chart-written":
        this.#line(`  wrote ${event.chart.path}`);
        break;
      case "upload-resume":
        this.#line(
          event.outcome === "resumed"
            ? `  resuming blob ${event.digest} in ${event.repository} at ${formatSize(event.offset)} of ${formatSize(event.size)}`
            : `  the registry no longer holds the earlier upload of blob ${event.digest} in ${event.repository}; uploading it from the start`,
        );
        break;
      case "request":
        if (this.#verbose)
          this.#line(`  ${event.method} ${event.url} ${event.status}`);
        break;
      default:
        break;
    }
  };

  stop(): void {
    this.#spinner?.stop();
  }
}

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
  if (result.skipped.length > 0) {
    lines.push(`Skipped:`);
    for (const skipped of result.skipped)
      lines.push(`  ${skipped.item}: ${skipped.reason}`);
  }
  if (result.failures.length > 0) {
    lines.push(`Failed:`);
    for (const failure of result.failures)
      lines.push(`  ${failure.item}: ${failure.message}`);
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
