import { planImport, readArchive } from "./archive/read.js";
import type { EventListener } from "./events.js";
import type { Plan } from "./plan.js";
import type { TarballRecord } from "./plan.js";

export interface InspectOptions {
  archive: string;
  /** Registry used to show target names; nothing is contacted. */
  registry?: string;
  namespace?: string;
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
  const emit = options.onEvent ?? (() => undefined);
  const contents = await readArchive(options.archive, {
    emit,
    signal: options.signal,
  });
  const plan = planImport(
    contents,
    options.registry ?? "registry.example.com",
    options.namespace ?? "namespace",
  );
  return {
    archive: options.archive,
    manifests: contents.manifests.map((m) => m.file),
    tarballs: contents.tarballs,
    plan: { ...plan, skipped: [...contents.skipped, ...plan.skipped] },
  };
}
