import yaml from "js-yaml";
import { Parser, type ReadEntry } from "tar";

import { PpaLoadError, errorMessage } from "../errors.js";
import { type RegistryClient, sha256Digest } from "../registry/client.js";
import { MediaType } from "../registry/media-types.js";
import {
  checkHost,
  checkRepositoryPath,
  checkTag,
  maxNameLength,
} from "../reference.js";

/**
 * Media types that `helm push` gives chart artifacts, from
 * helm.sh/helm/v3 pkg/registry/constants.go.
 */
export const HelmMediaType = {
  config: "application/vnd.cncf.helm.config.v1+json",
  chartContent: "application/vnd.cncf.helm.chart.content.v1.tar+gzip",
  provenance: "application/vnd.cncf.helm.chart.provenance.v1.prov",
} as const;

export interface ChartMaintainer {
  name?: string;
  email?: string;
  url?: string;
}

/** A dependency of a chart, keyed by the JSON names of Helm's `chart.Dependency`. */
export interface ChartDependency {
  name: string;
  version?: string;
  repository: string;
  condition?: string;
  tags?: string[];
  enabled?: boolean;
  "import-values"?: unknown[];
  "export-values"?: unknown[];
  alias?: string;
}

/**
 * The metadata of a chart as Helm loads it from Chart.yaml, keyed by the JSON
 * names of Helm's `chart.Metadata`. Optional fields are absent when empty.
 */
export interface ChartMetadata {
  name: string;
  home?: string;
  sources?: string[];
  version: string;
  description?: string;
  keywords?: string[];
  maintainers?: ChartMaintainer[];
  icon?: string;
  apiVersion: string;
  condition?: string;
  tags?: string;
  appVersion?: string;
  deprecated?: boolean;
  annotations?: Record<string, string>;
  kubeVersion?: string;
  dependencies?: ChartDependency[];
  type?: string;
}

export interface ChartInfo {
  metadata: ChartMetadata;
  /** Modification time of Chart.yaml in the archive, when the entry has one. */
  chartYamlModified?: Date;
}

export interface ChartRegistry {
  /** `HOST[:PORT]` of the registry. */
  registry: string;
  /** Repository path below the host, without slashes at either end. It is empty for `oci://HOST`. */
  repositoryPath: string;
}

export interface PushChartOptions {
  client: RegistryClient;
  /** Path below the registry host, e.g. `team/charts` from `oci://HOST/team/charts`. */
  repositoryPath: string;
  /** The chart archive (.tgz). */
  chart: Buffer;
  /** Chart name, which must match Chart.yaml. */
  name: string;
  /** Chart version, which must match Chart.yaml. */
  version: string;
  /** The provenance file (.prov), pushed as a further layer. */
  provenance?: Buffer;
  /**
   * Value of the `org.opencontainers.image.created` annotation. `helm push`
   * takes the .tgz file's modification time. The default here is the
   * modification time of Chart.yaml inside the archive, which keeps the
   * manifest digest the same when the same chart bytes are pushed again.
   */
  created?: Date;
}

export interface PushChartResult {
  /** `HOST/PATH/NAME:TAG`. */
  reference: string;
  /** Digest of the manifest. */
  digest: string;
}

// ---------------------------------------------------------------------------
// Chart registry URIs and tags
// ---------------------------------------------------------------------------

/**
 * Parses `oci://HOST[:PORT][/PATH]`, the form `helm push` takes. Throws a
 * `USAGE` error for any other form.
 */
export function parseChartRegistry(uri: string): ChartRegistry {
  const example = "oci://registry.example.com/team/charts";
  const match = /^oci:\/\/([^/?#]*)(\/[^?#]*)?$/.exec(uri);
  if (!match) {
    throw new PpaLoadError(
      "USAGE",
      `invalid chart registry "${uri}": expected oci://HOST[:PORT]/PATH without a query or fragment`,
      { hint: `give the registry and repository path, e.g. ${example}` },
    );
  }
  const host = match[1];
  if (host.includes("@")) {
    // The user info may contain a password, so the message leaves the URI out.
    throw new PpaLoadError(
      "USAGE",
      "the chart registry URI contains credentials before its host",
      {
        hint: "remove them from the URI, and log in with docker login HOST or give --username and --password-stdin",
      },
    );
  }
  const hostProblem = host ? checkHost(host) : "the host is missing";
  if (hostProblem) {
    throw new PpaLoadError(
      "USAGE",
      `invalid chart registry "${uri}": ${hostProblem}`,
      { hint: `give the registry as oci://HOST[:PORT]/PATH, e.g. ${example}` },
    );
  }
  const repositoryPath = (match[2] ?? "").replace(/^\/+|\/+$/g, "");
  if (/[:@]/.test(repositoryPath)) {
    throw new PpaLoadError(
      "USAGE",
      `invalid chart registry "${uri}": the path names a tag or digest`,
      {
        hint: "give only the repository path, because each chart is pushed to PATH/NAME with its version as the tag",
      },
    );
  }
  if (repositoryPath) {
    const pathProblem = checkRepositoryPath(repositoryPath);
    if (pathProblem) {
      throw new PpaLoadError(
        "USAGE",
        `invalid chart registry "${uri}": ${pathProblem}`,
        { hint: `fix the path after the host, e.g. ${example}` },
      );
    }
  }
  return { registry: host, repositoryPath };
}

/**
 * Returns the tag that `helm push` gives a chart version. Tags may not
 * contain "+", so Helm writes SemVer build metadata after "_" instead and
 * turns it back into "+" when it pulls.
 */
export function chartTag(version: string): string {
  return version.replaceAll("+", "_");
}

// ---------------------------------------------------------------------------
// Pushing a chart as an OCI artifact
// ---------------------------------------------------------------------------

/**
 * Pushes a chart archive to `REGISTRY/PATH/NAME:TAG` as `helm push CHART
 * oci://REGISTRY/PATH` does (Helm 3.8 and later): the .tgz as the layer,
 * Chart.yaml's metadata as the config, and an OCI image manifest with
 * Helm's annotations. Blobs that the repository has are not uploaded again.
 */
export async function pushChartToOci(
  options: PushChartOptions,
): Promise<PushChartResult> {
  const { client, chart } = options;
  const label = `the chart ${options.name} ${options.version}`;
  const info = await readChartMetadata(chart, label);
  const { metadata } = info;
  if (metadata.name !== options.name || metadata.version !== options.version) {
    throw new PpaLoadError(
      "CHART",
      `${label} has name "${metadata.name}" and version "${metadata.version}" in its Chart.yaml`,
      {
        hint: "publish the chart under the name and version of its Chart.yaml, as helm push does",
      },
    );
  }

  const repositoryPath = options.repositoryPath.replace(/^\/+|\/+$/g, "");
  const repository = repositoryPath
    ? `${repositoryPath}/${metadata.name}`
    : metadata.name;
  const tag = chartTag(metadata.version);
  checkTarget(client.registry, repository, tag, label);

  const config = chartConfig(metadata);
  const layers: {
    mediaType: string;
    digest: string;
    size: number;
    body: Buffer;
  }[] = [
    {
      mediaType: HelmMediaType.chartContent,
      digest: sha256Digest(chart),
      size: chart.length,
      body: chart,
    },
  ];
  if (options.provenance) {
    layers.push({
      mediaType: HelmMediaType.provenance,
      digest: sha256Digest(options.provenance),
      size: options.provenance.length,
      body: options.provenance,
    });
  }
  // Helm sorts the layers by digest, so the manifest does not depend on the order they were added.
  layers.sort((a, b) =>
    Buffer.compare(Buffer.from(a.digest), Buffer.from(b.digest)),
  );

  for (const layer of layers) {
    await client.pushBlob(repository, layer.body);
  }
  const configDigest = await client.pushBlob(repository, config);

  const created = options.created ?? info.chartYamlModified;
  const manifest = {
    schemaVersion: 2,
    config: {
      mediaType: HelmMediaType.config,
      digest: configDigest,
      size: config.length,
    },
    layers: layers.map(({ mediaType, digest, size }) => ({
      mediaType,
      digest,
      size,
    })),
    annotations: sortedObject(chartAnnotations(metadata, created)),
  };
  // Helm leaves `mediaType` out of the manifest body and sends it only as
  // the Content-Type, so the body here has the same bytes as Helm's.
  const body = Buffer.from(goJson(manifest));
  const digest = await client.putManifest(
    repository,
    tag,
    body,
    MediaType.ociManifest,
  );
  return { reference: `${client.registry}/${repository}:${tag}`, digest };
}

function checkTarget(
  registry: string,
  repository: string,
  tag: string,
  label: string,
): void {
  let problem = checkRepositoryPath(repository) ?? checkTag(tag);
  const name = `${registry}/${repository}`;
  if (!problem && name.length > maxNameLength) {
    problem = `the name ${name} is longer than ${maxNameLength} characters`;
  }
  if (problem) {
    throw new PpaLoadError(
      "CHART",
      `cannot push ${label} to ${name}:${tag}: ${problem}`,
      {
        hint: 'registries accept only lowercase repository names, and tags of letters, digits, "_", "." and "-", so rename the chart in its Chart.yaml and package it again, or choose a shorter repository path',
      },
    );
  }
}

/** Annotation keys that the chart's own annotations may not replace, as in Helm. */
const immutableAnnotations = new Set([
  "org.opencontainers.image.version",
  "org.opencontainers.image.title",
]);

/**
 * Returns the manifest annotations that Helm's `generateOCIAnnotations`
 * (pkg/registry) sets: description, title, version, url, created, source,
 * authors, then the chart's own annotations except title and version.
 */
export function chartAnnotations(
  metadata: ChartMetadata,
  created: Date | undefined,
): Record<string, string> {
  const annotations: Record<string, string> = {};
  const add = (key: string, value: string | undefined) => {
    if (value !== undefined && value.trim() !== "") annotations[key] = value;
  };
  add("org.opencontainers.image.description", metadata.description);
  add("org.opencontainers.image.title", metadata.name);
  add("org.opencontainers.image.version", metadata.version);
  add("org.opencontainers.image.url", metadata.home);
  if (created) add("org.opencontainers.image.created", rfc3339(created));
  add("org.opencontainers.image.source", metadata.sources?.[0]);
  if (metadata.maintainers?.length) {
    const authors = metadata.maintainers
      .map(
        (maintainer) =>
          (maintainer.name ?? "") +
          (maintainer.email ? ` (${maintainer.email})` : ""),
      )
      .join(", ");
    add("org.opencontainers.image.authors", authors);
  }
  for (const [key, value] of Object.entries(metadata.annotations ?? {})) {
    if (!immutableAnnotations.has(key)) annotations[key] = value;
  }
  return annotations;
}

/** Formats a time as Go's `time.RFC3339` does for UTC: whole seconds and "Z". */
function rfc3339(date: Date): string {
  return date.toISOString().replace(/\.\d{3}Z$/, "Z");
}

// ---------------------------------------------------------------------------
// JSON as Go's encoding/json writes it
// ---------------------------------------------------------------------------

/**
 * Serializes a value as Go's `json.Marshal` does, because Helm writes the
 * config and manifest with it: no white space, and "<", ">", "&", U+2028
 * and U+2029 escaped. Object keys keep their order, so callers put struct
 * fields in declaration order and sort map keys with `sortedObject`.
 */
export function goJson(value: unknown): string {
  return JSON.stringify(value).replace(
    /[<>&\u2028\u2029]/g,
    (character) =>
      `\\u${character.charCodeAt(0).toString(16).padStart(4, "0")}`,
  );
}

/** Returns a copy with keys sorted by their UTF-8 bytes, the order in which Go writes map keys. */
function sortedObject<T>(record: Record<string, T>): Record<string, T> {
  const keys = Object.keys(record).sort((a, b) =>
    Buffer.compare(Buffer.from(a), Buffer.from(b)),
  );
  return Object.fromEntries(keys.map((key) => [key, record[key]]));
}

/** Sorts the keys of every object inside a value of unknown shape, as Go does for `interface{}` maps. */
function sortedDeep(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(sortedDeep);
  if (value !== null && typeof value === "object") {
    const record = value as Record<string, unknown>;
    const sorted = sortedObject(record);
    for (const key of Object.keys(sorted)) {
      sorted[key] = sortedDeep(sorted[key]);
    }
    return sorted;
  }
  return value;
}

/**
 * Returns the config blob that `helm push` writes: the metadata as
 * `json.Marshal` writes Helm's `chart.Metadata`, with the fields in its
 * declaration order. Empty optional fields are already absent, as
 * `omitempty` leaves them out.
 */
export function chartConfig(metadata: ChartMetadata): Buffer {
  const ordered: Record<string, unknown> = {
    name: metadata.name,
    home: metadata.home,
    sources: metadata.sources,
    version: metadata.version,
    description: metadata.description,
    keywords: metadata.keywords,
    maintainers: metadata.maintainers,
    icon: metadata.icon,
    apiVersion: metadata.apiVersion,
    condition: metadata.condition,
    tags: metadata.tags,
    appVersion: metadata.appVersion,
    deprecated: metadata.deprecated,
    annotations: metadata.annotations && sortedObject(metadata.annotations),
    kubeVersion: metadata.kubeVersion,
    dependencies: metadata.dependencies?.map((dependency) => ({
      name: dependency.name,
      version: dependency.version,
      repository: dependency.repository,
      condition: dependency.condition,
      tags: dependency.tags,
      enabled: dependency.enabled,
      "import-values": sortedDeep(dependency["import-values"]),
      "export-values": sortedDeep(dependency["export-values"]),
      alias: dependency.alias,
    })),
    type: metadata.type,
  };
  // JSON.stringify leaves out undefined values, which are the empty fields.
  return Buffer.from(goJson(ordered));
}

// ---------------------------------------------------------------------------
// Reading Chart.yaml from a chart archive
// ---------------------------------------------------------------------------

interface TopLevelFile {
  /** Path with the chart folder removed, e.g. `Chart.yaml`. */
  name: string;
  data: Buffer;
  modified?: Date;
}

function chartError(message: string, hint?: string): PpaLoadError {
  return new PpaLoadError("CHART", message, {
    hint:
      hint ??
      "check the chart with helm lint, or package it again with helm package",
  });
}

/**
 * Reads the metadata of a chart archive as Helm's loader does: Chart.yaml
 * in the archive's top folder, merged with requirements.yaml (the
 * dependency file of apiVersion v1 charts), with strings cleaned and the
 * checks of Helm's `Metadata.Validate`. Throws a `CHART` error that names
 * `label` when the archive is not a valid chart.
 */
export async function readChartMetadata(
  chart: Buffer,
  label = "the chart",
): Promise<ChartInfo> {
  const files = await readTopLevelFiles(chart, label);
  const chartFiles = files.filter((file) => file.name === "Chart.yaml");
  if (chartFiles.length === 0) {
    throw chartError(
      `${label} has no Chart.yaml in its top folder`,
      "a chart archive contains one folder with Chart.yaml in it, so package the chart with helm package",
    );
  }

  // Helm decodes each Chart.yaml into the same struct, then
  // requirements.yaml, so later documents replace the fields they set.
  const documents = chartFiles.map((file) => parseYamlObject(file, label));
  for (const file of files) {
    if (file.name === "requirements.yaml") {
      documents.push(parseYamlObject(file, label));
    }
  }
  const metadata = decodeMetadata(documents, label);
  validateMetadata(metadata, label);
  return {
    metadata,
    chartYamlModified: chartFiles[chartFiles.length - 1].modified,
  };
}

/**
 * Reads the files directly inside the chart's top folder that the metadata
 * needs, and applies the path checks of Helm's `LoadArchiveFiles`.
 */
async function readTopLevelFiles(
  chart: Buffer,
  label: string,
): Promise<TopLevelFile[]> {
  if (chart.length < 2 || chart[0] !== 0x1f || chart[1] !== 0x8b) {
    throw chartError(
      `${label} is not a gzip-compressed tar archive`,
      "give the .tgz file that helm package writes",
    );
  }
  const neededFiles = new Set(["Chart.yaml", "requirements.yaml"]);
  const files: TopLevelFile[] = [];
  let problem: string | undefined;

  await new Promise<void>((resolve, reject) => {
    const parser = new Parser({
      strict: true,
      onReadEntry: (entry: ReadEntry) => {
        if (problem !== undefined || entry.type === "Directory") {
          entry.resume();
          return;
        }
        const name = chartEntryName(entry.path);
        if (typeof name !== "string") {
          problem = name.problem;
          entry.resume();
          return;
        }
        if (!neededFiles.has(name)) {
          entry.resume();
          return;
        }
        const chunks: Buffer[] = [];
        entry.on("data", (chunk: Buffer) => chunks.push(chunk));
        entry.on("end", () => {
          files.push({
            name,
            data: stripBom(Buffer.concat(chunks)),
            modified: entry.mtime,
          });
        });
      },
    });
    parser.on("error", (error: Error) =>
      reject(
        chartError(
          `${label} is not a readable tar archive: ${error.message}`,
          "check that the .tgz is complete, e.g. with tar -tzf",
        ),
      ),
    );
    parser.on("end", () => resolve());
    parser.end(chart);
  });

  if (problem !== undefined) throw chartError(`${label} ${problem}`);
  return files;
}

/**
 * Returns an entry's path without its first folder, as Helm reads it, or
 * the reason Helm rejects the path.
 */
function chartEntryName(path: string): string | { problem: string } {
  const delimiter = path.includes("\\") ? "\\" : "/";
  const parts = path.split(delimiter);
  if (parts[0] === "Chart.yaml") {
    return { problem: "has Chart.yaml outside a chart folder" };
  }
  const rest = parts.slice(1).join("/");
  if (rest.startsWith("/")) {
    return { problem: `contains the absolute path ${JSON.stringify(path)}` };
  }
  const cleaned = cleanPath(rest);
  if (cleaned === "." && parts.length === 1 && parts[0].startsWith("._")) {
    // macOS tar writes the extended attributes of the chart folder as ._NAME beside it.
    return {
      problem: `contains the macOS metadata file ${JSON.stringify(path)} outside the chart folder, which Helm also rejects; package the chart with helm package, or set COPYFILE_DISABLE=1 before tar on macOS so that it writes no ._ files`,
    };
  }
  if (cleaned === ".") {
    return {
      problem: `contains ${JSON.stringify(path)} outside the chart folder`,
    };
  }
  if (cleaned.startsWith("..")) {
    return {
      problem: `contains ${JSON.stringify(path)}, which leaves the chart folder`,
    };
  }
  if (/^[a-zA-Z]:\//.test(cleaned)) {
    return { problem: `contains the drive path ${JSON.stringify(path)}` };
  }
  return cleaned;
}

/** Cleans a relative slash path lexically, like Go's `path.Clean`. */
function cleanPath(path: string): string {
  const out: string[] = [];
  for (const part of path.split("/")) {
    if (part === "" || part === ".") continue;
    if (part === ".." && out.length > 0 && out[out.length - 1] !== "..") {
      out.pop();
    } else {
      out.push(part);
    }
  }
  return out.length ? out.join("/") : ".";
}

function stripBom(data: Buffer): Buffer {
  return data[0] === 0xef && data[1] === 0xbb && data[2] === 0xbf
    ? data.subarray(3)
    : data;
}

/**
 * The YAML 1.2 core schema with merge keys. It reads timestamps as text,
 * because every Chart.yaml field that could hold one is a string.
 */
const chartYamlSchema = yaml.CORE_SCHEMA.extend({
  // js-yaml 4 exports `types`, but @types/js-yaml does not declare it.
  implicit: [(yaml as unknown as { types: { merge: yaml.Type } }).types.merge],
});

function parseYamlObject(
  file: TopLevelFile,
  label: string,
): Record<string, unknown> {
  let parsed: unknown;
  try {
    parsed = yaml.load(file.data.toString("utf8"), { schema: chartYamlSchema });
  } catch (error) {
    throw chartError(
      `${label} has an invalid ${file.name}: ${errorMessage(error)}`,
    );
  }
  if (parsed === null || parsed === undefined) return {};
  if (typeof parsed !== "object" || Array.isArray(parsed)) {
    throw chartError(`${label} has a ${file.name} that is not a YAML mapping`);
  }
  return parsed as Record<string, unknown>;
}

// ---------------------------------------------------------------------------
// Decoding and validating the metadata
// ---------------------------------------------------------------------------

/**
 * Returns the value of a field across documents as Go's encoding/json
 * assigns it: an exact or case-insensitive key match, the last one winning.
 * A null value leaves the field as it was.
 */
function lookup(documents: Record<string, unknown>[], field: string): unknown {
  const lower = field.toLowerCase();
  let found: unknown;
  for (const document of documents) {
    for (const [key, value] of Object.entries(document)) {
      if ((key === field || key.toLowerCase() === lower) && value !== null) {
        found = value;
      }
    }
  }
  return found;
}

/**
 * Decodes a YAML scalar into a string field. Numbers and booleans become
 * their text, as sigs.k8s.io/yaml converts them for string fields.
 */
function decodeString(
  value: unknown,
  field: string,
  label: string,
): string | undefined {
  if (value === undefined || value === null) return undefined;
  if (typeof value === "string") return value;
  if (typeof value === "number" || typeof value === "boolean") {
    return String(value);
  }
  throw chartError(
    `${label} has an invalid Chart.yaml: ${field} must be a string`,
  );
}

function decodeStringList(
  value: unknown,
  field: string,
  label: string,
): string[] | undefined {
  if (value === undefined || value === null) return undefined;
  if (!Array.isArray(value)) {
    throw chartError(
      `${label} has an invalid Chart.yaml: ${field} must be a list`,
    );
  }
  return value.map(
    (item, index) => decodeString(item, `${field}[${index}]`, label) ?? "",
  );
}

function decodeRecord(
  value: unknown,
  field: string,
  label: string,
): Record<string, unknown> | undefined {
  if (value === undefined || value === null) return undefined;
  if (typeof value !== "object" || Array.isArray(value)) {
    throw chartError(
      `${label} has an invalid Chart.yaml: ${field} must be a mapping`,
    );
  }
  return value as Record<string, unknown>;
}

function decodeList(
  value: unknown,
  field: string,
  label: string,
): unknown[] | undefined {
  if (value === undefined || value === null) return undefined;
  if (!Array.isArray(value)) {
    throw chartError(
      `${label} has an invalid Chart.yaml: ${field} must be a list`,
    );
  }
  return value;
}

/**
 * Replaces white space with a space and removes characters that are not
 * printable, as Helm's `sanitizeString` does with Go's `unicode.IsSpace`
 * and `unicode.IsPrint`.
 */
export function sanitizeString(text: string): string {
  return text
    .replace(/[\t\n\v\f\r\u0085\u00a0\p{Zs}\u2028\u2029]/gu, " ")
    .replace(/[^\p{L}\p{M}\p{N}\p{P}\p{S} ]/gu, "");
}

/** Returns `value` unless it is empty, which `omitempty` leaves out. */
function nonEmpty<T extends string | unknown[]>(
  value: T | undefined,
): T | undefined {
  return value === undefined || value.length === 0 ? undefined : value;
}

function cleanString(value: string | undefined): string | undefined {
  return nonEmpty(value === undefined ? undefined : sanitizeString(value));
}

function decodeMaintainers(
  value: unknown,
  label: string,
): ChartMaintainer[] | undefined {
  const list = decodeList(value, "maintainers", label);
  if (!list?.length) return undefined;
  return list.map((item, index) => {
    const field = `maintainers[${index}]`;
    const record = decodeRecord(item, field, label);
    if (!record) {
      throw chartError(
        `${label} has an invalid Chart.yaml: ${field} is empty or null`,
      );
    }
    const documents = [record];
    const maintainer: ChartMaintainer = {
      name: cleanString(
        decodeString(lookup(documents, "name"), `${field}.name`, label),
      ),
      email: cleanString(
        decodeString(lookup(documents, "email"), `${field}.email`, label),
      ),
      url: cleanString(
        decodeString(lookup(documents, "url"), `${field}.url`, label),
      ),
    };
    return withoutUndefined(maintainer);
  });
}

/** The alias format that Helm's `Dependency.Validate` accepts. */
const aliasFormat = /^[a-zA-Z0-9_-]+$/;

function decodeDependencies(
  value: unknown,
  label: string,
): ChartDependency[] | undefined {
  const list = decodeList(value, "dependencies", label);
  if (!list?.length) return undefined;
  const seen = new Set<string>();
  return list.map((item, index) => {
    const field = `dependencies[${index}]`;
    const record = decodeRecord(item, field, label);
    if (!record) {
      throw chartError(
        `${label} has an invalid Chart.yaml: ${field} is empty or null`,
      );
    }
    const documents = [record];
    const text = (name: string) =>
      decodeString(lookup(documents, name), `${field}.${name}`, label);
    const enabled = lookup(documents, "enabled");
    if (enabled !== undefined && typeof enabled !== "boolean") {
      throw chartError(
        `${label} has an invalid Chart.yaml: ${field}.enabled must be true or false`,
      );
    }
    const dependency: ChartDependency = {
      name: sanitizeString(text("name") ?? ""),
      version: cleanString(text("version")),
      repository: sanitizeString(text("repository") ?? ""),
      condition: cleanString(text("condition")),
      tags: nonEmpty(
        decodeStringList(
          lookup(documents, "tags"),
          `${field}.tags`,
          label,
        )?.map(sanitizeString),
      ),
      enabled: enabled === true ? true : undefined,
      "import-values": nonEmpty(
        decodeList(
          lookup(documents, "import-values"),
          `${field}.import-values`,
          label,
        ),
      ),
      "export-values": nonEmpty(
        decodeList(
          lookup(documents, "export-values"),
          `${field}.export-values`,
          label,
        ),
      ),
      alias: nonEmpty(text("alias")),
    };
    if (dependency.alias !== undefined && !aliasFormat.test(dependency.alias)) {
      throw chartError(
        `${label} has an invalid Chart.yaml: dependency "${dependency.name}" has the alias "${dependency.alias}", which may contain only letters, digits, "_" and "-"`,
      );
    }
    const key = dependency.alias ?? dependency.name;
    if (seen.has(key)) {
      throw chartError(
        `${label} has an invalid Chart.yaml: more than one dependency has the name or alias "${key}"`,
      );
    }
    seen.add(key);
    return withoutUndefined(dependency);
  });
}

function decodeMetadata(
  documents: Record<string, unknown>[],
  label: string,
): ChartMetadata {
  const text = (field: string) =>
    decodeString(lookup(documents, field), field, label);
  const strings = (field: string) =>
    nonEmpty(
      decodeStringList(lookup(documents, field), field, label)?.map(
        sanitizeString,
      ),
    );

  const deprecated = lookup(documents, "deprecated");
  if (deprecated !== undefined && typeof deprecated !== "boolean") {
    throw chartError(
      `${label} has an invalid Chart.yaml: deprecated must be true or false`,
    );
  }
  const annotationRecord = decodeRecord(
    lookup(documents, "annotations"),
    "annotations",
    label,
  );
  let annotations: Record<string, string> | undefined;
  if (annotationRecord && Object.keys(annotationRecord).length > 0) {
    annotations = {};
    for (const [key, value] of Object.entries(annotationRecord)) {
      annotations[key] = decodeString(value, `annotations.${key}`, label) ?? "";
    }
  }

  const metadata: ChartMetadata = {
    name: sanitizeString(text("name") ?? ""),
    home: cleanString(text("home")),
    sources: strings("sources"),
    version: text("version") ?? "",
    description: cleanString(text("description")),
    keywords: strings("keywords"),
    maintainers: decodeMaintainers(lookup(documents, "maintainers"), label),
    icon: cleanString(text("icon")),
    // Helm 2 accepted charts without apiVersion, and Helm 3 loads them as v1.
    apiVersion: text("apiVersion") || "v1",
    condition: cleanString(text("condition")),
    tags: cleanString(text("tags")),
    appVersion: cleanString(text("appVersion")),
    deprecated: deprecated === true ? true : undefined,
    annotations,
    kubeVersion: cleanString(text("kubeVersion")),
    dependencies: decodeDependencies(lookup(documents, "dependencies"), label),
    type: nonEmpty(text("type")),
  };
  return withoutUndefined(metadata);
}

/**
 * The loose version form of Masterminds/semver v3 `NewVersion`, which Helm
 * validates chart versions with: an optional "v", one to three numbers,
 * then an optional pre-release and build metadata.
 */
const semverPattern =
  /^v?(\d+)(\.\d+)?(\.\d+)?(?:-([0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*))?(?:\+[0-9A-Za-z-]+(?:\.[0-9A-Za-z-]+)*)?$/;

/** Returns whether Helm accepts a chart version. */
export function isChartVersion(version: string): boolean {
  const match = semverPattern.exec(version);
  if (!match) return false;
  // Numeric pre-release identifiers may not have leading zeros.
  const prerelease = match[4];
  return !prerelease?.split(".").some((part) => /^0\d+$/.test(part));
}

function validateMetadata(metadata: ChartMetadata, label: string): void {
  const invalid = (problem: string) =>
    chartError(`${label} has an invalid Chart.yaml: ${problem}`);
  if (!metadata.name) throw invalid("name is missing");
  if (metadata.name === "." || metadata.name === "..") {
    throw invalid(`the name "${metadata.name}" is not allowed`);
  }
  if (metadata.name.includes("/")) {
    throw invalid(`the name "${metadata.name}" contains a folder separator`);
  }
  if (!metadata.version) throw invalid("version is missing");
  if (!isChartVersion(metadata.version)) {
    throw invalid(
      `the version "${metadata.version}" is not a semantic version such as 1.2.3`,
    );
  }
  if (
    metadata.type !== undefined &&
    metadata.type !== "application" &&
    metadata.type !== "library"
  ) {
    throw invalid(
      `type is "${metadata.type}", but must be application or library`,
    );
  }
}

function withoutUndefined<T extends object>(value: T): T {
  for (const key of Object.keys(value) as (keyof T)[]) {
    if (value[key] === undefined) delete value[key];
  }
  return value;
}
