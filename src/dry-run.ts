import { resolve } from "node:path";

import { chartMuseumTimeout, checkChartMuseum } from "./charts/chartmuseum.js";
import {
  type ImportOptions,
  checkLocalPaths,
  checkOptions,
  isRegistry,
  resolveCredentials,
} from "./import.js";
import { type InspectResult, inspectArchive } from "./inspect.js";
import { OciLayoutTarget } from "./publish/oci-layout.js";
import { RegistryClient } from "./registry/client.js";

/** A tag an import would write, and what it points at now. */
export interface TagCheck {
  /** `REGISTRY/NAMESPACE/PATH:TAG`, or the OCI layout reference. */
  target: string;
  /** The digest the tag points at now, or null when it does not exist. */
  currentDigest: string | null;
  /**
   * For an image tag that exists: the config digest (image ID) of the image
   * it points at now. Null for a new tag, a manifest list tag, or a tag that
   * points at something other than an image manifest.
   */
  currentImage: string | null;
}

/** Result of `dryRunImport`: the inspection, and the state of the destination. */
export interface DryRunResult {
  /** The plan of the import, as `inspectArchive` returns it. */
  inspection: InspectResult;
  /** Destination of the import, e.g. `registry https://host` or `OCI layout PATH`. */
  destination: string;
  /**
   * Source of the registry credentials (`--username`, a Docker config
   * file, a credential helper), or null when none are used. The secret
   * itself is never included.
   */
  credentials: string | null;
  /** Every image and manifest list tag the import would write. */
  tags: TagCheck[];
}

/**
 * Runs every step of an import that comes before writing. It checks the
 * options, reads and plans the archive as `inspectArchive` does, and
 * connects to the registry with the credentials an import would use (or
 * reads the OCI layout). It also checks ChartMuseum and looks up each tag
 * the import would write. Nothing is uploaded, tagged or written; reading
 * the archive's charts uses a temporary folder that is removed again.
 *
 * Throws what an import would throw before publishing: invalid options,
 * rejected credentials, an unreachable registry. Problems of the archive
 * are in `problems`, as with `inspectArchive`.
 */
export async function dryRunImport(
  options: ImportOptions,
): Promise<DryRunResult> {
  checkOptions(options);
  const outputDir = options.outputDir ?? resolve("ppa-import");
  await checkLocalPaths(options, outputDir);
  const registry = options.registry;
  const layoutFolder = registry?.startsWith("oci:")
    ? resolve(registry.slice("oci:".length))
    : registry
      ? undefined
      : resolve(outputDir, "registry");

  let client: RegistryClient | undefined;
  let credentials: string | null = null;
  let layout: OciLayoutTarget | undefined;
  let destination: string;
  if (isRegistry(registry)) {
    const found = await resolveCredentials({ ...options, registry });
    credentials = found?.source ?? null;
    client = new RegistryClient({
      registry,
      scheme: options.insecure ? "http" : undefined,
      credentials: found,
      caCert: options.caCert,
      retry: options.retry,
      idleTimeoutMs: options.requestTimeoutMs,
      onRequest: (info) => options.onEvent?.({ type: "request", ...info }),
      onWarning: (message) => options.onEvent?.({ type: "warning", message }),
    });
    destination = `registry ${client.baseUrl}`;
  } else {
    layout = new OciLayoutTarget(layoutFolder!);
    destination = layout.description;
  }

  const emit = options.onEvent ?? (() => undefined);
  try {
    emit({
      type: "phase",
      phase: "connect",
      message: `checking ${destination}`,
    });
    await client?.ping(options.signal);
    // A loopback registry may have turned out to speak HTTPS.
    if (client) destination = `registry ${client.baseUrl}`;
    if (options.chartMuseum) {
      await checkChartMuseum({
        ...options.chartMuseum,
        caCert: options.caCert,
        timeoutMs: chartMuseumTimeout(options.requestTimeoutMs),
      });
    }
    emit({
      type: "phase",
      phase: "read",
      message: `reading ${options.archive}`,
    });
    const inspection = await inspectArchive({
      archive: options.archive,
      registry: registry ?? `oci:${layoutFolder}`,
      namespace: options.namespace,
      mapPlusInTags: options.mapPlusInTags,
      onEvent: options.onEvent,
      signal: options.signal,
    });
    const tags: TagCheck[] = [];
    const images = new Set<unknown>(inspection.references);
    for (const item of [...inspection.references, ...inspection.lists]) {
      const prefix = isRegistry(registry) ? `${registry}/` : "";
      const repository = item.repository.startsWith(prefix)
        ? item.repository.slice(prefix.length)
        : item.repository;
      const current = client
        ? (await client.headManifest(repository, item.tag))?.digest
        : await layout!.getTagDigest(repository, item.tag);
      let currentImage: string | null = null;
      if (current && images.has(item)) {
        const manifest = client
          ? (await client.getManifest(repository, current)).body
          : await layout!.readManifest(current);
        currentImage = manifest ? configDigestOf(manifest) : null;
      }
      tags.push({
        target: item.target,
        currentDigest: current ?? null,
        currentImage,
      });
    }
    emit({ type: "phase", phase: "done", message: "done" });
    return { inspection, destination, credentials, tags };
  } finally {
    client?.close();
  }
}

/** Returns the config digest of an image manifest, or null for anything else. */
function configDigestOf(manifest: Buffer): string | null {
  try {
    const digest = (
      JSON.parse(manifest.toString("utf8")) as {
        config?: { digest?: unknown };
      }
    ).config?.digest;
    return typeof digest === "string" ? digest : null;
  } catch {
    return null;
  }
}
