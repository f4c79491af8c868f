import yaml from "js-yaml";
import { posix } from "node:path";

import { PpaLoadError } from "../errors.js";
import { parseReference } from "../reference.js";
import {
  type ChartSpec,
  type ImageSpec,
  type ManifestFile,
  type Platform,
  type PublishManifest,
  type ReferenceSpec,
  nameOf,
} from "./model.js";

type Json = Record<string, unknown>;

/** A problem found in a manifest, with the file and entry it concerns. */
export interface ManifestProblem {
  file: ManifestFile;
  message: string;
}

export interface ParsedManifest {
  file: ManifestFile;
  images: ImageSpec[];
  charts: ChartSpec[];
  warnings: ManifestProblem[];
}

function invalid(file: ManifestFile, message: string, hint?: string): never {
  throw new PpaLoadError("MANIFEST_INVALID", `${file}: ${message}`, { hint });
}

/**
 * Joins top-level `images:` blocks that a manifest repeats once per image.
 * YAML forbids duplicate keys, but manifests written by concatenating one
 * block per image are common in the wild.
 */
export function joinRepeatedImageBlocks(text: string): string {
  const lines = text.split(/\r?\n/);
  const header = /^images\s*:\s*(#.*)?$/;
  const topLevelKey = /^[^\s#\-][^:]*:/;
  const headers = lines.filter((line) => header.test(line)).length;
  if (headers < 2) return text;

  const imageItems: string[] = [];
  const others: string[] = [];
  let inImages = false;
  for (const line of lines) {
    if (header.test(line)) {
      inImages = true;
      continue;
    }
    if (topLevelKey.test(line) || line === "---" || line === "...") {
      inImages = false;
    }
    (inImages ? imageItems : others).push(line);
  }
  return [...others, "images:", ...imageItems].join("\n");
}

/** Returns a copy with every mapping key trimmed: `repository :` is `repository`. */
function trimKeys(value: unknown): unknown {
  if (Array.isArray(value)) return value.map(trimKeys);
  if (value === null || typeof value !== "object") return value;
  const out: Json = {};
  for (const [key, item] of Object.entries(value as Json)) {
    out[key.trim()] = trimKeys(item);
  }
  return out;
}

function asString(
  file: ManifestFile,
  where: string,
  value: unknown,
): string | undefined {
  if (value === undefined || value === null) return undefined;
  if (typeof value === "string") return value.trim();
  if (typeof value === "number") return String(value);
  invalid(file, `${where} must be a string, got ${JSON.stringify(value)}`);
}

function asList(file: ManifestFile, where: string, value: unknown): unknown[] {
  if (value === undefined || value === null) return [];
  if (!Array.isArray(value)) {
    invalid(file, `${where} must be a list, got ${JSON.stringify(value)}`);
  }
  return value;
}

function stringList(
  file: ManifestFile,
  where: string,
  value: unknown,
): string[] {
  return asList(file, where, value).map((item, i) => {
    const text = asString(file, `${where}[${i}]`, item);
    if (!text) invalid(file, `${where}[${i}] is empty`);
    return text;
  });
}

/** Splits `name:tag`, or `name` plus a separate tag, into repository and tag. */
function splitName(
  file: ManifestFile,
  where: string,
  name: string,
  separateTag?: string,
): { repository: string; tag: string } {
  const ref = parseReference(name);
  const tag = separateTag ?? ref.tag;
  if (!tag) {
    invalid(
      file,
      `${where} "${name}" has no tag`,
      `write it as NAME:TAG, or give the tag in a "tag" field`,
    );
  }
  if (ref.digest) {
    invalid(file, `${where} "${name}" names a digest; give a tag instead`);
  }
  return { repository: ref.path, tag };
}

function parsePlatform(
  file: ManifestFile,
  where: string,
  value: unknown,
): Platform | undefined {
  if (value === undefined || value === null) return undefined;
  if (typeof value !== "object") {
    invalid(file, `${where}.platform must be a mapping`);
  }
  const p = value as Json;
  const architecture = asString(
    file,
    `${where}.platform.architecture`,
    p.architecture,
  );
  if (!architecture) {
    invalid(file, `${where}.platform has no architecture`);
  }
  const os = asString(file, `${where}.platform.os`, p.os) ?? "linux";
  const variant = asString(file, `${where}.platform.variant`, p.variant);
  return variant ? { os, architecture, variant } : { os, architecture };
}

/**
 * Normalizes a chart or image path from a manifest: strips a `file:` prefix,
 * `./` and backslashes. The result may still climb out with `..`, because
 * manifests give chart paths relative to the chart sources; matching uses the
 * file name.
 */
export function normalizeManifestPath(path: string): string {
  let text = path
    .trim()
    .replace(/^file:(\/\/)?/, "")
    .replace(/\\/g, "/");
  text = posix.normalize(text);
  return text.replace(/^(\.\/)+/, "");
}

function parseCharts(file: ManifestFile, value: unknown): ChartSpec[] {
  return asList(file, "charts", value).map((item, i) => {
    const where = `charts[${i}]`;
    if (item === null || typeof item !== "object") {
      invalid(file, `${where} must be a mapping with an "archive" field`);
    }
    const chart = item as Json;
    const archive = asString(file, `${where}.archive`, chart.archive);
    if (!archive) invalid(file, `${where} has no "archive" field`);
    const normalized = normalizeManifestPath(archive);
    // manifest.json of the older format lists repository keys as "images".
    const repositoryKeys = [
      ...stringList(file, `${where}.repository-keys`, chart["repository-keys"]),
      ...stringList(file, `${where}.images`, chart.images),
    ];
    return {
      fileName: posix.basename(normalized),
      paths: [{ file, path: archive }],
      repositoryKeys,
      registryKeys: stringList(
        file,
        `${where}.registry-keys`,
        chart["registry-keys"],
      ),
    };
  });
}

function parseReferences(
  file: ManifestFile,
  where: string,
  value: unknown,
): ReferenceSpec[] {
  return asList(file, `${where}.references`, value).map((item, i) => {
    const refWhere = `${where}.references[${i}]`;
    if (item === null || typeof item !== "object") {
      invalid(file, `${refWhere} must be a mapping with a "repository" field`);
    }
    const ref = item as Json;
    const source = asString(file, `${refWhere}.repository`, ref.repository);
    if (!source) invalid(file, `${refWhere} has no "repository" field`);
    const archive = asString(file, `${refWhere}.archive`, ref.archive);
    return {
      ...splitName(file, `${refWhere}.repository`, source),
      source,
      pullRepository: asString(
        file,
        `${refWhere}.pull-repository`,
        ref["pull-repository"],
      ),
      platform: parsePlatform(file, refWhere, ref.platform),
      archive: archive ? normalizeManifestPath(archive) : undefined,
      declaredIn: [file],
    };
  });
}

function parseImage(file: ManifestFile, item: unknown, i: number): ImageSpec {
  const where = `images[${i}]`;
  if (item === null || typeof item !== "object") {
    invalid(file, `${where} must be a mapping with an "image" field`);
  }
  const image = item as Json;
  const source = asString(file, `${where}.image`, image.image);
  if (!source) invalid(file, `${where} has no "image" field`);
  const tagField = asString(file, `${where}.tag`, image.tag);
  const archive = asString(file, `${where}.archive`, image.archive);
  let references = parseReferences(file, where, image.references);

  let name: { repository: string; tag: string };
  if (!tagField && !parseReference(source).tag && references.length > 0) {
    // An image written without a tag takes the tag its references share.
    const tags = new Set(references.map((ref) => ref.tag));
    if (tags.size !== 1) {
      invalid(
        file,
        `${where}.image "${source}" has no tag and its references have different tags`,
      );
    }
    name = { repository: parseReference(source).path, tag: references[0].tag };
  } else {
    name = splitName(file, `${where}.image`, source, tagField);
  }

  if (references.length === 0) {
    // The flat format: the image is its own single reference.
    references = [
      {
        ...name,
        source: tagField ? `${source}:${tagField}` : source,
        platform: parsePlatform(file, where, image.platform),
        archive: archive ? normalizeManifestPath(archive) : undefined,
        declaredIn: [file],
      },
    ];
  }
  return { ...name, source, references, declaredIn: [file] };
}

function parseDocument(file: ManifestFile, document: unknown): ParsedManifest {
  if (document === null || document === undefined) {
    return { file, images: [], charts: [], warnings: [] };
  }
  if (typeof document !== "object" || Array.isArray(document)) {
    invalid(file, "the top level must be a mapping with images and charts");
  }
  const root = trimKeys(document) as Json;
  const images = asList(file, "images", root.images).map((item, i) =>
    parseImage(file, item, i),
  );
  return { file, images, charts: parseCharts(file, root.charts), warnings: [] };
}

/** Parses a manifest.yaml, accepting the quirks of published manifests. */
export function parseManifestYaml(text: string): ParsedManifest {
  const file = "manifest.yaml";
  let document: unknown;
  try {
    document = yaml.load(joinRepeatedImageBlocks(text), { filename: file });
  } catch (error) {
    const reason =
      error instanceof yaml.YAMLException ? error.message : String(error);
    invalid(file, `is not valid YAML: ${reason}`);
  }
  return parseDocument(file, document);
}

/** Parses a manifest.json, in the flat format or the one manifest.yaml uses. */
export function parseManifestJson(text: string): ParsedManifest {
  const file = "manifest.json";
  let document: unknown;
  try {
    document = JSON.parse(text.replace(/^\uFEFF/, ""));
  } catch (error) {
    invalid(file, `is not valid JSON: ${(error as Error).message}`);
  }
  return parseDocument(file, document);
}

function mergeReference(target: ReferenceSpec, from: ReferenceSpec): void {
  target.archive ??= from.archive;
  target.platform ??= from.platform;
  target.pullRepository ??= from.pullRepository;
  for (const file of from.declaredIn) {
    if (!target.declaredIn.includes(file)) target.declaredIn.push(file);
  }
}

/**
 * Merges the manifests of one archive into one model. Both files usually
 * describe the same images: manifest.yaml gives the multi-architecture
 * structure and manifest.json the file of each image, so references are
 * joined by `repository:tag`, and charts by file name.
 */
export function mergeManifests(parsed: ParsedManifest[]): {
  manifest: PublishManifest;
  warnings: ManifestProblem[];
} {
  const images: ImageSpec[] = [];
  const references = new Map<string, ReferenceSpec>();
  const charts = new Map<string, ChartSpec>();
  const warnings: ManifestProblem[] = [];

  // manifest.yaml first, so that its structure wins.
  const ordered = [...parsed]
    .sort((a, b) => a.file.localeCompare(b.file))
    .reverse();
  for (const manifest of ordered) {
    warnings.push(...manifest.warnings);
    for (const image of manifest.images) {
      const fresh = image.references.filter((ref) => {
        const known = references.get(nameOf(ref));
        if (known) mergeReference(known, ref);
        return !known;
      });
      if (fresh.length === 0) continue;
      const existing = images.find((other) => nameOf(other) === nameOf(image));
      if (existing) {
        existing.references.push(...fresh);
      } else {
        images.push({ ...image, references: fresh });
      }
      for (const ref of fresh) references.set(nameOf(ref), ref);
    }

    for (const chart of manifest.charts) {
      const known = charts.get(chart.fileName);
      if (!known) {
        charts.set(chart.fileName, { ...chart, paths: [...chart.paths] });
        continue;
      }
      known.paths.push(...chart.paths);
      for (const key of chart.repositoryKeys) {
        if (!known.repositoryKeys.includes(key)) known.repositoryKeys.push(key);
      }
      for (const key of chart.registryKeys) {
        if (!known.registryKeys.includes(key)) known.registryKeys.push(key);
      }
    }
  }

  return {
    manifest: {
      files: ordered.map((m) => m.file),
      images,
      charts: [...charts.values()],
    },
    warnings,
  };
}
