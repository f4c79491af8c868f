import { PpaLoadError } from "./errors.js";
import { planImport, readArchive } from "./archive/read.js";
import type { EventListener } from "./events.js";
import type { Plan } from "./plan.js";
import type { TarballRecord } from "./plan.js";

export interface InspectOptions {
  archive: string;
  /** Registry used to show target names; nothing is contacted. */
  registry?: string;
  namespace?: string;
  /** Character that replaces `+` in target tags, as for an import. */
  mapPlusInTags?: string;
  onEvent?: EventListener;
  signal?: AbortSignal;
}

export interface InspectResult {
  archive: string;
  manifests: string[];
  tarballs: TarballRecord[];
  plan: Plan;
}

/**
 * Reads an archive and returns what an import would publish where, with
 * every problem found, without contacting a registry or Docker Engine.
 */
export async function inspectArchive(
  options: InspectOptions,
): Promise<InspectResult> {
  const plus = options.mapPlusInTags;
  if (plus !== undefined && !["_", "-", "."].includes(plus)) {
    throw new PpaLoadError(
      "USAGE",
      `invalid --map-plus-in-tags "${plus}": use _, - or .`,
    );
  }
  const emit = options.onEvent ?? (() => undefined);
  const contents = await readArchive(options.archive, {
    emit,
    signal: options.signal,
  });
  const plan = planImport(
    contents,
    options.registry ?? "registry.example.com",
    options.namespace ?? "namespace",
    options.mapPlusInTags,
  );
  return {
    archive: options.archive,
    manifests: contents.manifests.map((m) => m.file),
    tarballs: contents.tarballs,
    plan: { ...plan, skipped: [...contents.skipped, ...plan.skipped] },
  };
}
