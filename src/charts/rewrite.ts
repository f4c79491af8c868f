/**
 * Rewrites the image keys of a Helm chart's values files so that the chart
 * pulls the images this import published.
 *
 * Rules, for registry R and namespace N:
 *
 * - A `repository-keys` value is matched to a published image by name (see
 *   matchImage) and becomes `R/N/PATH`, the published repository. A tag in
 *   the value is kept (`R/N/PATH:TAG`), because a chart that puts a tag
 *   there uses the value as a whole image reference. A digest is dropped,
 *   because the published image has a digest of its own. A value that
 *   matches no published image, or several, is reported and left as it is.
 * - When the chart also lists `registry-keys`, the chart composes
 *   `REGISTRY/REPOSITORY`. Then each registry key becomes `R`, and each
 *   repository key composed with one becomes `N/PATH`, so that the two give
 *   `R/N/PATH`. A repository key is composed with a registry key in its own
 *   map (`image.registry` next to `image.repository`), or with a registry
 *   key in a map that has no repository key, such as `global.imageRegistry`.
 * - With `registry-keys` but no `repository-keys`, the repository values keep
 *   their paths without the namespace, so each registry key becomes `R/N`.
 *
 * A key is looked up in the chart's top `values.yaml`, and when it is not
 * there and its first component names a subchart folder `charts/NAME/`, in
 * that subchart's `values.yaml` with the rest of the key, recursively.
 * Subcharts packed as .tgz inside the chart are not rewritten.
 *
 * The chart's tar stream is copied block for block: every entry keeps its
 * header and body bytes, in the same order, and a changed values file gets
 * a new body and a header that differs only in its size and checksum.
 */
import { posix } from "node:path";
import { gzipSync, gunzipSync } from "node:zlib";

import { Header, type HeaderData, Pax } from "tar";

import { PpaLoadError, errorMessage } from "../errors.js";
import type { ChartSpec } from "../manifest/model.js";
import { parseReference } from "../reference.js";
import {
  AmbiguousImageError,
  type ImageMapping,
  matchImage,
  matchingNames,
  publishedTags,
} from "./image-names.js";
import {
  InvalidYamlError,
  type ScalarEdit,
  type ScalarEditResult,
  editYamlScalars,
  hasYamlPath,
  readYamlValue,
  yaml,
} from "./values-edit.js";

export interface RewriteChartOptions {
  spec: ChartSpec;
  mappings: ImageMapping[];
  /** Registry host, with port when it has one, e.g. `127.0.0.1:5000`. */
  registry: string;
  namespace: string;
  /** The chart's entry path in the archive, for messages. */
  chartEntry: string;
}

export interface ChartValueChange {
  /** The values file's path inside the chart archive, e.g. `app/values.yaml`. */
  file: string;
  /** The key as the manifest lists it. */
  key: string;
  from: string | null;
  to: string;
  /** The rule that gave the new value, and the reason for it. */
  reason: string;
}

export interface ChartValueProblem {
  file?: string;
  key: string;
  value?: string;
  message: string;
}

export interface ChartRewrite {
  /** The chart archive: the input itself when nothing changed. */
  chart: Buffer;
  name: string;
  version: string;
  changes: ChartValueChange[];
  /** Keys that were listed but not rewritten. */
  problems: ChartValueProblem[];
  warnings: string[];
}

// ---------------------------------------------------------------------------
// Tar blocks
// ---------------------------------------------------------------------------

const BLOCK_SIZE = 512;
const FILE_TYPES = new Set(["0", "", "7"]);

/** One entry of a tar stream and the byte ranges it occupies. */
interface TarMember {
  /** The entry path, with any pax or GNU long name applied. */
  path: string;
  typeKey: string;
  /** Offset of the entry's first block, pax or GNU long-name blocks included. */
  start: number;
  headerOffset: number;
  bodyOffset: number;
  size: number;
  /** Offset after the entry's last (padded) body block. */
  end: number;
  /** Whether a pax header gives the size, so the header's size field is unused. */
  paxSize: boolean;
}

interface TarLayout {
  members: TarMember[];
  /** Offset of the end-of-archive blocks and anything after them. */
  trailerOffset: number;
}

function paddedSize(size: number): number {
  return BLOCK_SIZE * Math.ceil(size / BLOCK_SIZE);
}

/**
 * Lists the entries of a tar stream with their block offsets. Headers are
 * decoded by node-tar's Header and Pax classes.
 */
function readTarLayout(tar: Buffer, chartEntry: string): TarLayout {
  const members: TarMember[] = [];
  let offset = 0;
  let extended: HeaderData | undefined;
  let global: HeaderData | undefined;
  let metadataStart: number | undefined;
  while (offset + BLOCK_SIZE <= tar.length) {
    const block = tar.subarray(offset, offset + BLOCK_SIZE);
    if (block.every((byte) => byte === 0)) break;
    const header = new Header(tar, offset, extended, global);
    if (!header.cksumValid) {
      throw new PpaLoadError(
        "CHART",
        `the chart ${chartEntry} is not a valid tar archive: the header at byte ${offset} of its tar stream has a wrong checksum`,
        { hint: "package the chart again with helm package" },
      );
    }
    const size = header.size ?? 0;
    const bodyOffset = offset + BLOCK_SIZE;
    const end = bodyOffset + paddedSize(size);
    if (end > tar.length) {
      throw new PpaLoadError(
        "CHART",
        `the chart ${chartEntry} is truncated: its entry ${header.path} needs ${size} bytes past the end of the tar stream`,
        { hint: "package the chart again with helm package" },
      );
    }
    const body = tar.subarray(bodyOffset, bodyOffset + size);
    const typeKey = header.typeKey;
    metadataStart ??= offset;
    if (typeKey === "x") {
      extended = Pax.parse(body.toString("utf8"), extended, false);
    } else if (typeKey === "g") {
      global = Pax.parse(body.toString("utf8"), global, true);
    } else if (typeKey === "L" || typeKey === "K") {
      const name = body.toString("utf8").replace(/\0.*$/s, "");
      extended = {
        ...extended,
        ...(typeKey === "L" ? { path: name } : { linkpath: name }),
      };
    } else {
      members.push({
        path: header.path ?? "",
        typeKey,
        start: metadataStart,
        headerOffset: offset,
        bodyOffset,
        size,
        end,
        paxSize: extended?.size !== undefined || global?.size !== undefined,
      });
      extended = undefined;
      metadataStart = undefined;
    }
    offset = end;
  }
  return { members, trailerOffset: metadataStart ?? offset };
}

/** Returns a copy of a file entry's header block with a new size and checksum. */
function resizedHeader(tar: Buffer, member: TarMember, size: number): Buffer {
  const header = Buffer.from(
    tar.subarray(member.headerOffset, member.headerOffset + BLOCK_SIZE),
  );
  header.write(`${size.toString(8).padStart(11, "0")}\0`, 124, 12, "latin1");
  // The checksum is the byte sum of the header with the checksum field read
  // as eight spaces, stored as six octal digits, NUL and space.
  header.fill(0x20, 148, 156);
  const sum = header.reduce((total, byte) => total + byte, 0);
  header.write(`${sum.toString(8).padStart(6, "0")}\0 `, 148, 8, "latin1");
  return header;
}

/** Rebuilds the tar stream with new bodies for some file entries. */
function replaceBodies(
  tar: Buffer,
  layout: TarLayout,
  bodies: Map<TarMember, Buffer>,
): Buffer {
  const parts: Buffer[] = [];
  for (const member of layout.members) {
    const body = bodies.get(member);
    if (!body) {
      parts.push(tar.subarray(member.start, member.end));
      continue;
    }
    parts.push(
      tar.subarray(member.start, member.headerOffset),
      resizedHeader(tar, member, body.length),
      body,
      Buffer.alloc(paddedSize(body.length) - body.length),
    );
  }
  parts.push(tar.subarray(layout.trailerOffset));
  return Buffer.concat(parts);
}

// Byte 9 of a gzip header names the operating system of the writer.
const GZIP_OS_BYTE = 9;
const GZIP_OS_UNIX = 3;

/**
 * Compresses at level 9 with mtime 0 and the OS byte set to Unix, so the
 * same tar stream gives the same bytes on every platform of one zlib build.
 */
function gzipChart(tar: Buffer): Buffer {
  const compressed = gzipSync(tar, { level: 9 });
  compressed[GZIP_OS_BYTE] = GZIP_OS_UNIX;
  return compressed;
}

// ---------------------------------------------------------------------------
// The chart's files
// ---------------------------------------------------------------------------

/**
 * Returns the path Helm reads an entry as: without a leading `./`, and with
 * backslashes as separators, as Helm's loader reads archives made on Windows.
 */
function normalizedPath(path: string): string {
  return path.replace(/\\/g, "/").replace(/^(\.\/)+/, "");
}

class ChartFiles {
  readonly tar: Buffer;
  readonly layout: TarLayout;
  readonly chartEntry: string;
  /** Every occurrence of each file path, in archive order. */
  readonly #occurrences = new Map<string, TarMember[]>();
  readonly #texts = new Map<string, string | Error>();

  constructor(chart: Buffer, chartEntry: string) {
    this.chartEntry = chartEntry;
    try {
      this.tar = gunzipSync(chart);
    } catch (error) {
      throw new PpaLoadError(
        "CHART",
        `the chart ${chartEntry} is not a gzip-compressed tar archive (${errorMessage(error)})`,
        { hint: "package the chart with helm package, which writes a .tgz" },
      );
    }
    this.layout = readTarLayout(this.tar, chartEntry);
    const members = this.layout.members.filter((member) =>
      FILE_TYPES.has(member.typeKey),
    );
    const top = onlyChartTop(
      members.map((member) => normalizedPath(member.path)),
    );
    for (const member of members) {
      const path = helmPath(normalizedPath(member.path), top);
      this.#occurrences.set(path, [
        ...(this.#occurrences.get(path) ?? []),
        member,
      ]);
    }
  }

  occurrences(path: string): TarMember[] {
    return this.#occurrences.get(path) ?? [];
  }

  body(member: TarMember): Buffer {
    return this.tar.subarray(
      member.bodyOffset,
      member.bodyOffset + member.size,
    );
  }

  /**
   * Returns a file's text as tar extraction leaves it (the last occurrence),
   * undefined when the chart has no such file, or an Error when it is not
   * UTF-8.
   */
  text(path: string): string | Error | undefined {
    const last = this.occurrences(path).at(-1);
    if (!last) return undefined;
    if (!this.#texts.has(path))
      this.#texts.set(path, decodeText(this.body(last)));
    return this.#texts.get(path);
  }

  /** Checks whether any file lies below a folder. */
  hasFolder(folder: string): boolean {
    const prefix = `${folder}/`;
    return this.filePaths().some((path) => path.startsWith(prefix));
  }

  filePaths(): string[] {
    return [...this.#occurrences.keys()];
  }
}

/** Returns the top folder of the chart's Chart.yaml when exactly one top folder has one. */
function onlyChartTop(paths: string[]): string | undefined {
  const tops = new Set(
    paths
      .filter((path) => /^[^/]+\/Chart\.yaml$/.test(path))
      .map((path) => path.split("/")[0]),
  );
  return tops.size === 1 ? [...tops][0] : undefined;
}

/**
 * Returns the name Helm's chart loader gives a file, below the chart's top
 * folder. The loader drops the first folder of each path, whatever its
 * name, and cleans the rest, so `app/./values.yaml`, `app/x/../values.yaml`
 * and `other/values.yaml` are all the chart's values.yaml, and the last of
 * them is the one Helm uses. Paths that the loader skips or rejects (a file
 * at the top, one that climbs out) keep their own name.
 */
function helmPath(path: string, top: string | undefined): string {
  const slash = path.indexOf("/");
  if (top === undefined || slash === -1) return path;
  const rest = posix.normalize(path.slice(slash + 1));
  if (
    rest === "." ||
    rest.startsWith("/") ||
    rest === ".." ||
    rest.startsWith("../")
  ) {
    return path;
  }
  return `${top}/${rest}`;
}

/** Decodes UTF-8 that encodes back to the same bytes, so edits lose nothing. */
function decodeText(body: Buffer): string | Error {
  const text = body.toString("utf8");
  if (!Buffer.from(text, "utf8").equals(body)) {
    return new Error("it is not valid UTF-8");
  }
  return text;
}

/** Finds the chart's top folder and reads name and version from Chart.yaml. */
function readChartMetadata(files: ChartFiles): {
  top: string;
  name: string;
  version: string;
} {
  const where = `the chart ${files.chartEntry}`;
  const hint =
    "give a Helm chart archive, as helm package writes it: one top folder that contains Chart.yaml";
  const tops = [
    ...new Set(
      files
        .filePaths()
        .filter((path) => /^[^/]+\/Chart\.yaml$/.test(path))
        .map((path) => path.split("/")[0]),
    ),
  ];
  if (tops.length === 0) {
    throw new PpaLoadError(
      "CHART",
      `${where} is not a Helm chart: it has no Chart.yaml in a top-level folder`,
      { hint },
    );
  }
  if (tops.length > 1) {
    throw new PpaLoadError(
      "CHART",
      `${where} has a Chart.yaml in each of the top-level folders ${tops.join(", ")}, so it is unclear which chart it is`,
      { hint },
    );
  }
  const [top] = tops;
  const text = files.text(`${top}/Chart.yaml`);
  let metadata: unknown;
  try {
    if (text instanceof Error) throw text;
    metadata = yaml().parse(text ?? "");
  } catch (error) {
    throw new PpaLoadError(
      "CHART",
      `${where}: ${top}/Chart.yaml cannot be read: ${errorMessage(error)}`,
      { hint },
    );
  }
  const record = (metadata ?? {}) as Record<string, unknown>;
  const field = (key: string): string => {
    const value = record[key];
    if (typeof value === "string" && value !== "") return value;
    if (typeof value === "number") return String(value);
    throw new PpaLoadError(
      "CHART",
      `${where}: ${top}/Chart.yaml has no ${key}, which every Helm chart needs`,
      { hint },
    );
  };
  return { top, name: field("name"), version: field("version") };
}

// ---------------------------------------------------------------------------
// Locating keys
// ---------------------------------------------------------------------------

type KeyKind = "repository" | "registry";

/** A listed key found in one values file. */
interface ResolvedKey {
  kind: KeyKind;
  /** The key as the manifest lists it. */
  key: string;
  file: string;
  /** The key's path inside that file. */
  path: string[];
}

function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

/** Returns the path of a packed subchart of this name below a chart folder. */
function packedSubchart(
  files: ChartFiles,
  folder: string,
  name: string,
): string | undefined {
  const pattern = new RegExp(
    `^${escapeRegExp(folder)}/charts/${escapeRegExp(name)}(-[^/]*)?\\.(tgz|tar\\.gz)$`,
  );
  return files.filePaths().find((path) => pattern.test(path));
}

function locateKey(
  files: ChartFiles,
  top: string,
  kind: KeyKind,
  key: string,
): ResolvedKey | ChartValueProblem {
  const where = `chart ${files.chartEntry}`;
  const fix = `Correct ${kind}-keys for this chart in the manifest.`;
  const parts = key.split(".");
  if (parts.some((part) => part === "")) {
    return {
      key,
      message: `${where}: the ${kind} key "${key}" has an empty component, so it names no value. ${fix}`,
    };
  }
  const tried: string[] = [];
  let folder = top;
  let path = parts;
  for (;;) {
    const file = `${folder}/values.yaml`;
    const text = files.text(file);
    if (text instanceof Error) {
      return {
        file,
        key,
        message: `${where}: ${file} cannot be edited because ${text.message}`,
      };
    }
    if (text !== undefined) {
      try {
        if (hasYamlPath(text, path)) return { kind, key, file, path };
      } catch (error) {
        if (!(error instanceof InvalidYamlError)) throw error;
        return {
          file,
          key,
          message: `${where}: ${file} is not valid YAML, so ${key} cannot be rewritten (${error.message})`,
        };
      }
      tried.push(file);
    }
    if (path.length < 2) break;
    const subchart = `${folder}/charts/${path[0]}`;
    if (files.hasFolder(subchart)) {
      folder = subchart;
      path = path.slice(1);
      continue;
    }
    const packed = packedSubchart(files, folder, path[0]);
    if (packed) {
      return {
        file: packed,
        key,
        message: `${where}: ${key} is not in ${tried.join(" or ")}, and its subchart ${path[0]} is packed as ${packed}, whose values this tool does not rewrite. Set ${key} in ${top}/values.yaml, or unpack the subchart into ${subchart}/ and package the chart again.`,
      };
    }
    break;
  }
  const searched =
    tried.length > 0 ? tried.join(" or ") : `${top}/values.yaml (missing)`;
  return {
    key,
    message: `${where}: the ${kind} key ${key} is not in ${searched}, nor in a subchart folder of that name, so nothing was rewritten for it. ${fix}`,
  };
}

/** Identifies the map a key sits in: its file and its parent path. */
function parentOf(resolved: ResolvedKey): string {
  return `${resolved.file}\0${resolved.path.slice(0, -1).join("\0")}`;
}

// ---------------------------------------------------------------------------
// New values
// ---------------------------------------------------------------------------

/** The new value of a key, or why it has none. */
type Decision =
  { to: string; reason: string; warnings: string[] } | { problem: string };

interface Context {
  options: RewriteChartOptions;
  files: ChartFiles;
  /** The chart's top folder. */
  top: string;
  /** Checks whether the chart composes a repository key with a registry key. */
  composed: (resolved: ResolvedKey) => boolean;
}

function describeValue(
  resolved: ResolvedKey,
  options: RewriteChartOptions,
): string {
  return `chart ${options.chartEntry}, ${resolved.file}: ${resolved.key}`;
}

function decideRepository(
  resolved: ResolvedKey,
  current: string,
  context: Context,
): Decision {
  const { options } = context;
  const where = describeValue(resolved, options);
  const value = current.trim();
  const match = value === "" ? undefined : matchImage(value, options.mappings);
  if (match instanceof AmbiguousImageError) {
    return {
      problem: `${where}: ${match.message}, so the value is left as it is. Set the value to the manifest's name of one image, e.g. ${match.candidates[0].source}.`,
    };
  }
  if (!match) {
    return {
      problem: `${where} is "${current}", which matches no image this import publishes, so it is left as it is. Add the image to the archive's manifest, or correct the key in repository-keys.`,
    };
  }

  const warnings: string[] = [];
  const reference = parseReference(value);
  const registryPrefix = `${options.registry}/`;
  const composed = context.composed(resolved);
  let repository = match.repository;
  if (composed && repository.startsWith(registryPrefix)) {
    repository = repository.slice(registryPrefix.length);
  }
  let tag = reference.tag;
  if (reference.digest !== undefined) {
    tag ??= match.tag;
    warnings.push(
      `${where} pins the digest ${reference.digest}, which the image published as ${match.repository} does not have, so the rewritten value uses the tag ${tag}. Pin the digest the import reports for ${match.repository}:${tag} if the chart needs one.`,
    );
  }
  const published = publishedTags(match.repository, options.mappings);
  if (tag !== undefined && !published.includes(tag)) {
    warnings.push(
      `${where} keeps the tag ${tag} of "${current}", but ${match.repository} is published with the tag ${published.join(", ")} only, so the chart will not find that image. Correct the tag in the chart's values.`,
    );
  }
  const matched = matchingNames(value, match).join(", ");
  const what =
    match.kind === "list"
      ? `manifest list ${match.source}`
      : `image ${match.source}`;
  const how = composed
    ? `, without the registry ${options.registry}, because the chart composes this key with a registry key`
    : "";
  return {
    to: tag === undefined ? repository : `${repository}:${tag}`,
    reason: `the published repository of the ${what}, named ${matched}${how}`,
    warnings,
  };
}

function decideRegistry(resolved: ResolvedKey, context: Context): Decision {
  const { options } = context;
  if (options.spec.repositoryKeys.length > 0) {
    return {
      to: options.registry,
      reason:
        "the registry alone, because the chart's repository keys carry the namespace",
      warnings: [],
    };
  }
  return {
    to: `${options.registry}/${options.namespace}`,
    reason:
      "the registry and the namespace, because the chart lists no repository keys, so its repository values keep paths without the namespace",
    warnings: registryOnlyWarnings(resolved, context),
  };
}

/**
 * Warns when a registry key is rewritten to `R/N` and the repository next to
 * it names an image that was published under another path.
 */
function registryOnlyWarnings(
  resolved: ResolvedKey,
  context: Context,
): string[] {
  const { options, files } = context;
  const text = files.text(resolved.file);
  if (typeof text !== "string") return [];
  const siblingPath = [...resolved.path.slice(0, -1), "repository"];
  const sibling = readYamlValue(text, siblingPath);
  if (!sibling.found || typeof sibling.value !== "string") return [];
  const match = matchImage(sibling.value, options.mappings);
  if (!match || match instanceof AmbiguousImageError) return [];
  const pulled = `${options.registry}/${options.namespace}/${parseReference(sibling.value).path}`;
  if (pulled === match.repository) return [];
  const siblingKey = [
    ...resolved.key.split(".").slice(0, -1),
    "repository",
  ].join(".");
  return [
    `chart ${options.chartEntry}, ${resolved.file}: ${siblingKey} is "${sibling.value}", so with ${resolved.key} set to ${options.registry}/${options.namespace} the chart pulls ${pulled}, but the image is published as ${match.repository}. List ${siblingKey} in repository-keys in the manifest.`,
  ];
}

/**
 * Warns about registry values that the chart may still prefix to rewritten
 * repositories: a `registry` key next to a rewritten repository key, and
 * `global.imageRegistry`, when the manifest does not list them.
 */
function foreignRegistryWarnings(
  rewritten: ResolvedKey[],
  context: Context,
): string[] {
  const { options, files } = context;
  const listed = new Set(options.spec.registryKeys);
  const warnings: string[] = [];
  const seen = new Set<string>();
  /** `rewrittenNow` names the rewritten keys, e.g. "a.repository now starts". */
  const check = (
    file: string,
    path: string[],
    key: string,
    rewrittenNow: string,
  ) => {
    if (listed.has(key) || seen.has(`${file}\0${key}`)) return;
    seen.add(`${file}\0${key}`);
    const text = files.text(file);
    if (typeof text !== "string") return;
    const found = readYamlValue(text, path);
    if (!found.found || typeof found.value !== "string") return;
    const value = found.value.trim();
    if (value === "" || value === options.registry) return;
    warnings.push(
      `chart ${options.chartEntry}, ${file}: ${key} is "${found.value}" and is not in registry-keys. ${rewrittenNow} with ${options.registry}/${options.namespace}/, so a template that joins the two pulls ${value}/${options.registry}/${options.namespace}/PATH, which no registry serves. List ${key} in registry-keys in the manifest, so that both keys are rewritten to compose ${options.registry}/${options.namespace}/PATH.`,
    );
  };
  for (const resolved of rewritten) {
    const siblingPath = [...resolved.path.slice(0, -1), "registry"];
    const siblingKey = [
      ...resolved.key.split(".").slice(0, -1),
      "registry",
    ].join(".");
    check(resolved.file, siblingPath, siblingKey, `${resolved.key} now starts`);
  }
  if (rewritten.length > 0) {
    check(
      `${context.top}/values.yaml`,
      ["global", "imageRegistry"],
      "global.imageRegistry",
      "The image repositories now start",
    );
  }
  return warnings;
}

// ---------------------------------------------------------------------------
// Editing the values files
// ---------------------------------------------------------------------------

function statusProblem(
  resolved: ResolvedKey,
  result: ScalarEditResult,
  options: RewriteChartOptions,
): string {
  const where = describeValue(resolved, options);
  const detail = result.detail ?? result.status;
  switch (result.status) {
    case "alias":
      return `${where} is not rewritten because ${detail}, and rewriting it would change every key that shares the anchor. Write the value itself at this key in the chart.`;
    case "block-scalar":
      return `${where} is a block scalar (| or >), which is not rewritten. Write the value as a plain or quoted scalar in the chart.`;
    case "duplicate-key":
      return `${where} is not rewritten because ${detail}. Remove the duplicate keys from the chart.`;
    case "not-a-string":
      return `${where} is ${detail}, not a string, so it is not rewritten. Correct ${resolved.kind}-keys for this chart in the manifest.`;
    default:
      return `${where} is not rewritten: ${detail}.`;
  }
}

/** Turns an edit result into a change or a problem, with any warnings. */
function record(
  resolved: ResolvedKey,
  result: ScalarEditResult,
  decision: Decision | undefined,
  options: RewriteChartOptions,
  rewrite: ChartRewrite,
): void {
  if (decision && "problem" in decision) {
    rewrite.problems.push({
      file: resolved.file,
      key: resolved.key,
      ...(typeof result.from === "string" ? { value: result.from } : {}),
      message: decision.problem,
    });
    return;
  }
  if (decision) rewrite.warnings.push(...decision.warnings);
  if (result.status === "changed" && result.aliasedAt) {
    const keys = result.aliasedAt.join(", ");
    const one = result.aliasedAt.length === 1;
    rewrite.warnings.push(
      `${describeValue(resolved, options)} is part of a value with a YAML anchor, and ${keys} ${one ? "is an alias" : "are aliases"} of it, so the new value ${result.to} appears there too. Write the old value out at ${keys} in the chart if ${one ? "it" : "they"} should keep it.`,
    );
  }
  if (result.status === "changed" && decision) {
    rewrite.changes.push({
      file: resolved.file,
      key: resolved.key,
      from: result.from ?? null,
      to: result.to!,
      reason: decision.reason,
    });
  } else if (result.status !== "unchanged") {
    rewrite.problems.push({
      file: resolved.file,
      key: resolved.key,
      message: statusProblem(resolved, result, options),
    });
  }
}

/**
 * Builds the edits of one values file. Each decision is kept by key, so the
 * last occurrence of the file reports it and earlier occurrences reuse it.
 */
function editsFor(
  keys: ResolvedKey[],
  context: Context,
  decisions: Map<ResolvedKey, Decision>,
): ScalarEdit[] {
  return keys.map((resolved) => ({
    path: resolved.path,
    acceptNull: resolved.kind === "registry",
    replace: (current: string | null) => {
      // Only registry keys accept null, so a repository value is a string.
      const decision =
        resolved.kind === "registry"
          ? decideRegistry(resolved, context)
          : decideRepository(resolved, current ?? "", context);
      decisions.set(resolved, decision);
      return "to" in decision ? decision.to : undefined;
    },
  }));
}

/**
 * Rewrites the repository and registry keys that a chart's manifest entry
 * lists, in the chart's values files. Returns the new chart archive (the
 * input itself when no value changed), the chart's name and version, each
 * change, each key that could not be rewritten, and warnings about values
 * that still point at another registry. Throws a PpaLoadError when the
 * archive is not a gzip-compressed Helm chart.
 */
export async function rewriteChart(
  chart: Buffer,
  options: RewriteChartOptions,
): Promise<ChartRewrite> {
  const files = new ChartFiles(chart, options.chartEntry);
  const { top, name, version } = readChartMetadata(files);
  const rewrite: ChartRewrite = {
    chart,
    name,
    version,
    changes: [],
    problems: [],
    warnings: [],
  };

  const resolved: ResolvedKey[] = [];
  const listed: [KeyKind, string[]][] = [
    ["repository", options.spec.repositoryKeys],
    ["registry", options.spec.registryKeys],
  ];
  for (const [kind, keys] of listed) {
    for (const key of keys) {
      const found = locateKey(files, top, kind, key);
      if ("kind" in found) resolved.push(found);
      else rewrite.problems.push(found);
    }
  }

  const registryParents = new Set(
    resolved.filter((r) => r.kind === "registry").map(parentOf),
  );
  const repositoryParents = new Set(
    resolved.filter((r) => r.kind === "repository").map(parentOf),
  );
  const globalRegistry = [...registryParents].some(
    (parent) => !repositoryParents.has(parent),
  );
  const context: Context = {
    options,
    files,
    top,
    composed: (key) => globalRegistry || registryParents.has(parentOf(key)),
  };

  const byFile = new Map<string, ResolvedKey[]>();
  for (const key of resolved) {
    byFile.set(key.file, [...(byFile.get(key.file) ?? []), key]);
  }
  const bodies = new Map<TarMember, Buffer>();
  const matched: ResolvedKey[] = [];
  /** Repository keys rewritten without the registry, for a registry key to give it. */
  const withoutRegistry: ResolvedKey[] = [];
  /** Registry keys that could not be rewritten. */
  const registryLeft: ResolvedKey[] = [];
  for (const [file, keys] of byFile) {
    const decisions = new Map<ResolvedKey, Decision>();
    const occurrences = files.occurrences(file);
    if (occurrences.some((member) => member.paxSize)) {
      for (const key of keys) {
        rewrite.problems.push({
          file,
          key: key.key,
          message: `chart ${options.chartEntry}: ${file} has its size in a pax extended header, which this tool does not rewrite, so ${key.key} was not rewritten. Package the chart again with helm package.`,
        });
      }
      continue;
    }
    // The last occurrence is the one tar extraction keeps, so it is the one
    // reported. Earlier copies of the same path get the same edits.
    for (const [index, member] of [...occurrences.entries()].reverse()) {
      const text =
        index === occurrences.length - 1
          ? files.text(file)
          : decodeText(files.body(member));
      if (typeof text !== "string") continue;
      const last = index === occurrences.length - 1;
      let edited: ReturnType<typeof editYamlScalars>;
      try {
        edited = editYamlScalars(text, editsFor(keys, context, decisions));
      } catch (error) {
        if (last || !(error instanceof InvalidYamlError)) throw error;
        rewrite.warnings.push(
          `chart ${options.chartEntry}: an earlier copy of ${file} in the archive is not valid YAML, so it was left as it is; tar extraction keeps the last copy, which was rewritten`,
        );
        continue;
      }
      if (edited.text !== text)
        bodies.set(member, Buffer.from(edited.text, "utf8"));
      if (!last) continue;
      edited.results.forEach((result, i) => {
        const decision = decisions.get(keys[i]);
        record(keys[i], result, decision, options, rewrite);
        if (keys[i].kind === "repository" && decision && "to" in decision) {
          matched.push(keys[i]);
          if (result.status === "changed" && context.composed(keys[i])) {
            withoutRegistry.push(keys[i]);
          }
        }
        if (
          keys[i].kind === "registry" &&
          result.status !== "changed" &&
          result.status !== "unchanged"
        ) {
          registryLeft.push(keys[i]);
        }
      });
    }
  }
  rewrite.warnings.push(...foreignRegistryWarnings(matched, context));
  if (withoutRegistry.length > 0 && registryLeft.length > 0) {
    const left = registryLeft.map((key) => key.key).join(", ");
    const rewritten = withoutRegistry.map((key) => key.key).join(", ");
    rewrite.warnings.push(
      `chart ${options.chartEntry}: ${rewritten} ${withoutRegistry.length === 1 ? "was" : "were"} rewritten without the registry ${options.registry}, for the registry key to give it, but ${left} ${registryLeft.length === 1 ? "was" : "were"} not rewritten, so the chart will not compose ${options.registry}/${options.namespace}/PATH. Fix ${left} in the chart (or registry-keys in the manifest) and run the import again.`,
    );
  }

  if (bodies.size > 0) {
    rewrite.chart = gzipChart(replaceBodies(files.tar, files.layout, bodies));
  }
  return rewrite;
}
