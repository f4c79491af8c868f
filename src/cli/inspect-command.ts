import { ExitCode, PpaLoadError } from "../errors.js";
import { formatPlatform } from "../events.js";
import { inspectArchive } from "../inspect.js";
import type { CliIO } from "./io.js";
import { formatError } from "./render.js";

export interface InspectFlags {
  archive: string;
  namespace?: string;
  registry?: string;
  mapPlusInTags?: string;
}

/** Runs `ppa-load inspect` and returns the exit code. */
export async function runInspect(
  flags: InspectFlags,
  io: CliIO,
): Promise<number> {
  try {
    const result = await inspectArchive(flags);
    const { plan } = result;
    const lines = [
      `${flags.archive}: manifests ${result.manifests.join(", ") || "none"}`,
    ];
    for (const ref of plan.references) {
      lines.push(
        `  image ${ref.source} (${ref.tarball}, ${formatPlatform(ref.platform)}) -> ${ref.target.repository}:${ref.target.tag}`,
      );
    }
    for (const list of plan.lists) {
      lines.push(
        `  manifest list ${list.source} -> ${list.target.repository}:${list.target.tag}`,
      );
    }
    for (const chart of plan.charts) lines.push(`  chart ${chart.entry}`);
    for (const skipped of plan.skipped)
      lines.push(`  skipped ${skipped.item}: ${skipped.reason}`);
    for (const warning of plan.warnings) lines.push(`  warning: ${warning}`);
    for (const error of plan.errors) lines.push(`  problem: ${error}`);
    io.stdout.write(`${lines.join("\n")}\n`);
    return plan.errors.length > 0 ? ExitCode.failure : ExitCode.success;
  } catch (error) {
    io.stderr.write(`${formatError(error)}\n`);
    return error instanceof PpaLoadError ? error.exitCode : ExitCode.failure;
  }
}
