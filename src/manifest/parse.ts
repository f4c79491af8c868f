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
  needsManifestList,
} from "./model.js";

type Json = Record<string, unknown>;

/** A problem found in a manifest, with the file and entry it concerns. */
export interface ManifestProblem {
  file: ManifestFile;
  message: string;
}

export interface ParsedManifest {
  file: ManifestFile;
  /** True when the file is empty or contains only comments. */
  empty?: boolean;
  images: ImageSpec[];
  charts: ChartSpec[];
  warnings: ManifestProblem[];
  /**
   * Entries that are invalid and were left out, each as the error that
   * names the entry and its fix. Set only with `keepValidEntries`.
   */
  invalidEntries?: PpaLoadError[];
}

export interface ParseOptions {
  /**
   * Return the valid entries and list the invalid ones in `invalidEntries`,
   * instead of throwing, so that a caller can report every problem of the
   * archive at once. A file that is not valid YAML or JSON, or whose top
   * level is not a mapping, still throws.
   */
  keepValidEntries?: boolean;
}

function invalid(file: ManifestFile, message: string, hint?: string): never {
  throw new PpaLoadError("MANIFEST_INVALID", `${file}: ${message}`, { hint });
}

/**
 * Parses each item of a list, collecting the MANIFEST_INVALID error of each
 * item that fails instead of stopping at the first, so that one run reports
 * every invalid entry. Returns the items that parsed.
 */
function parseEach<T>(
  items: unknown[],
  problems: PpaLoadError[],
  parse: (item: unknown, index: number) => T,
): T[] {
  const parsed: T[] = [];
  items.forEach((item, index) => {
    try {
      parsed.push(parse(item, index));
    } catch (error) {
      if (!(error instanceof PpaLoadError)) throw error;
      problems.push(error);
    }
  });
  return parsed;
}

/** Throws the problems collected from one manifest: the error itself when there is one. */
function throwProblems(file: ManifestFile, problems: PpaLoadError[]): void {
  if (problems.length === 0) return;
  if (problems.length === 1) throw problems[0];
  throw new PpaLoadError(
    "MANIFEST_INVALID",
    `${file} has ${problems.length} invalid entries`,
    {
      problems: problems.map((problem) =>
        problem.hint ? `${problem.message}; ${problem.hint}` : problem.message,
      ),
      hint: `correct each entry in ${file}`,
    },
  );
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

/**
 * The maximum number of values a manifest may contain once its YAML aliases
 * are expanded. Nine levels of nine aliases, about 300 bytes of YAML, expand
 * to 9^9 (about 387 million) values.
 * NOTE: the limit is an estimate, chosen far above what a manifest of a few
 * thousand images and their references contains.
 */
export const MAX_MANIFEST_VALUES = 1_000_000;

/**
 * The deepest nesting of lists and mappings a manifest may have. A PPA
 * manifest nests about five levels (images, references, platform), and far
 * deeper input would overflow the stack of the checks that walk it.
 */
export const MAX_MANIFEST_DEPTH = 100;

/**
 * Returns a copy with every mapping key trimmed: `repository :` is
 * `repository`. js-yaml 4 loads each alias as the same object as its anchor,
 * so each object is copied once and the copy keeps that sharing. Throws when
 * the document, with its aliases expanded, would contain more than
 * MAX_MANIFEST_VALUES values, or when an alias refers to a value that
 * contains it.
 */
function trimKeys(file: ManifestFile, document: unknown): unknown {
  const copies = new Map<object, unknown>();
  /** The expanded number of values of each copied object, capped just above the maximum. */
  const sizes = new Map<object, number>();

  const visit = (
    value: unknown,
    depth = 0,
  ): { copy: unknown; size: number } => {
    if (value === null || typeof value !== "object") {
      return { copy: value, size: 1 };
    }
    if (depth >= MAX_MANIFEST_DEPTH) {
      invalid(
        file,
        `nests lists and mappings more than ${MAX_MANIFEST_DEPTH} levels deep, and a PPA manifest has about five. Check that this is the archive's manifest and that it was not damaged.`,
      );
    }
    if (copies.has(value)) {
      const size = sizes.get(value);
      if (size === undefined) {
        invalid(
          file,
          "a YAML alias (*NAME) refers to a value that contains it, so the manifest is infinite. Write the entries out without that alias.",
        );
      }
      return { copy: copies.get(value), size };
    }

    let size = 1;
    let copy: unknown;
    if (Array.isArray(value)) {
      const items: unknown[] = [];
      copies.set(value, items);
      for (const item of value) {
        const child = visit(item, depth + 1);
        items.push(child.copy);
        size = Math.min(size + child.size, MAX_MANIFEST_VALUES + 1);
      }
      copy = items;
    } else {
      const out: Json = {};
      copies.set(value, out);
      for (const [key, item] of Object.entries(value as Json)) {
        const child = visit(item, depth + 1);
        // An own property even for `__proto__`, which as an assignment would
        // replace the copy's prototype with the manifest's value.
        Object.defineProperty(out, key.trim(), {
          value: child.copy,
          enumerable: true,
          writable: true,
          configurable: true,
        });
        size = Math.min(size + child.size, MAX_MANIFEST_VALUES + 1);
      }
      copy = out;
    }
    sizes.set(value, size);
    return { copy, size };
  };

  const { copy, size } = visit(document);
  if (size > MAX_MANIFEST_VALUES) {
    invalid(
      file,
      `expands to too many entries: more than ${MAX_MANIFEST_VALUES} values once its YAML aliases (*NAME) are expanded. Write the entries out, or remove the aliases that repeat other aliases.`,
    );
  }
  return copy;
}

/** Describes a manifest value for an error message, in at most about 80 characters. */
function describeValue(value: unknown): string {
  const max = 80;
  let text = "";
  const write = (item: unknown): void => {
    if (Array.isArray(item)) {
      text += "[";
      for (let i = 0; i < item.length && text.length <= max; i++) {
        if (i > 0) text += ",";
        write(item[i]);
      }
      text += "]";
    } else if (item !== null && typeof item === "object") {
      text += "{";
      const entries = Object.entries(item as Json);
      for (let i = 0; i < entries.length && text.length <= max; i++) {
        if (i > 0) text += ",";
        text += `${JSON.stringify(entries[i][0])}:`;
        write(entries[i][1]);
      }
      text += "}";
    } else {
      text += JSON.stringify(item) ?? String(item);
    }
  };
  write(value);
  return text.length > max ? `${text.slice(0, max)}...` : text;
}

function asString(
  file: ManifestFile,
  where: string,
  value: unknown,
): string | undefined {
  if (value === undefined || value === null) return undefined;
  if (typeof value === "string") return value.trim();
  if (typeof value === "number") return String(value);
  invalid(file, `${where} must be a string, got ${describeValue(value)}`);
}

function asList(file: ManifestFile, where: string, value: unknown): unknown[] {
  if (value === undefined || value === null) return [];
  if (!Array.isArray(value)) {
    invalid(file, `${where} must be a list, got ${describeValue(value)}`);
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

function parseCharts(
  file: ManifestFile,
  value: unknown,
  problems: PpaLoadError[],
): ChartSpec[] {
  return parseEach(asList(file, "charts", value), problems, (item, i) => {
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
  problems: PpaLoadError[],
): ReferenceSpec[] {
  const items = asList(file, `${where}.references`, value);
  return parseEach(items, problems, (item, i) => {
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

function parseImage(
  file: ManifestFile,
  item: unknown,
  i: number,
  problems: PpaLoadError[],
): ImageSpec | undefined {
  const where = `images[${i}]`;
  if (item === null || typeof item !== "object") {
    invalid(file, `${where} must be a mapping with an "image" field`);
  }
  const image = item as Json;
  const source = asString(file, `${where}.image`, image.image);
  if (!source) invalid(file, `${where} has no "image" field`);
  // JSON keeps no trace of how a number was written, so 1.10 and 1.1 are
  // the same there. A tag written as a number is therefore ambiguous.
  if (typeof image.tag === "number") {
    invalid(
      file,
      `${where}.tag is the number ${image.tag}, which may have been written differently (1.10 reads as 1.1); write the tag as a string, e.g. "tag": "${image.tag}"`,
    );
  }
  const tagField = asString(file, `${where}.tag`, image.tag);
  const archive = asString(file, `${where}.archive`, image.archive);
  const found = problems.length;
  let references = parseReferences(file, where, image.references, problems);
  // The manifest is rejected for the invalid references, so the image is
  // not parsed further, which could only report more of the same problem.
  if (problems.length > found) return undefined;

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

function parseDocument(
  file: ManifestFile,
  document: unknown,
  options: ParseOptions,
): ParsedManifest {
  if (document === null || document === undefined) {
    return {
      file,
      empty: true,
      images: [],
      charts: [],
      warnings: [
        { file, message: `${file} is empty or contains only comments` },
      ],
    };
  }
  if (typeof document !== "object" || Array.isArray(document)) {
    invalid(file, "the top level must be a mapping with images and charts");
  }
  const root = trimKeys(file, document) as Json;
  const problems: PpaLoadError[] = [];
  const images = parseEach(
    asList(file, "images", root.images),
    problems,
    (item, i) => parseImage(file, item, i, problems),
  ).filter((image): image is ImageSpec => image !== undefined);
  const charts = parseCharts(file, root.charts, problems);
  if (options.keepValidEntries) {
    return { file, images, charts, warnings: [], invalidEntries: problems };
  }
  throwProblems(file, problems);
  return { file, images, charts, warnings: [] };
}

/**
 * YAML schema of manifest.yaml: strings, null, booleans and merge keys, but
 * no numbers, so that an unquoted tag such as `1.10` stays `1.10` instead of
 * becoming the number 1.1. js-yaml's type list is missing from its typings.
 */
const yamlTypes = (yaml as unknown as { types: Record<string, yaml.Type> })
  .types;
const manifestSchema = yaml.FAILSAFE_SCHEMA.extend({
  implicit: [yamlTypes.null, yamlTypes.bool, yamlTypes.merge],
});

/** Parses a manifest.yaml, accepting the quirks of published manifests. */
export function parseManifestYaml(
  text: string,
  options: ParseOptions = {},
): ParsedManifest {
  const file = "manifest.yaml";
  let document: unknown;
  try {
    document = yaml.load(joinRepeatedImageBlocks(text), {
      filename: file,
      schema: manifestSchema,
    });
  } catch (error) {
    const reason =
      error instanceof yaml.YAMLException ? error.message : String(error);
    invalid(file, `is not valid YAML: ${reason}`);
  }
  return parseDocument(file, document, options);
}

/** Parses a manifest.json, in the flat format or the one manifest.yaml uses. */
export function parseManifestJson(
  text: string,
  options: ParseOptions = {},
): ParsedManifest {
  const file = "manifest.json";
  let document: unknown;
  try {
    document = JSON.parse(text.replace(/^\uFEFF/, ""));
  } catch (error) {
    invalid(file, `is not valid JSON: ${(error as Error).message}`);
  }
  return parseDocument(file, document, options);
}

function samePlatform(a: Platform, b: Platform): boolean {
  return (
    a.os === b.os &&
    a.architecture === b.architecture &&
    a.variant === b.variant
  );
}

/**
 * Checks whether two entries of one `repository:tag` can describe the same
 * image: no `archive` or `platform` that both give differs.
 */
function compatible(a: ReferenceSpec, b: ReferenceSpec): boolean {
  if (a.archive && b.archive && a.archive !== b.archive) return false;
  if (a.platform && b.platform && !samePlatform(a.platform, b.platform)) {
    return false;
  }
  return true;
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
 * Checks whether an image can be joined into an earlier one of the same
 * name: each of its references is already there or has a name the earlier
 * one does not use.
 */
function canJoin(target: ImageSpec, from: ImageSpec): boolean {
  const names = new Set(target.references.map(nameOf));
  return from.references.every(
    (ref) => target.references.includes(ref) || !names.has(nameOf(ref)),
  );
}

function joinImage(target: ImageSpec, from: ImageSpec): void {
  for (const ref of from.references) {
    if (!target.references.includes(ref)) target.references.push(ref);
  }
  for (const file of from.declaredIn) {
    if (!target.declaredIn.includes(file)) target.declaredIn.push(file);
  }
}

/**
 * Merges the manifests of one archive into one model. Both files usually
 * describe the same images: manifest.yaml gives the multi-architecture
 * structure and manifest.json the file of each image.
 *
 * Entries of one `repository:tag` that agree (no `archive` or `platform` that
 * both give differs) become one reference, which every image naming it
 * shares. Entries that disagree stay separate references, so the plan
 * reports them when they would publish different images under one name.
 * Images of one name are joined unless that would give one name to two
 * different references. Charts are joined by file name.
 */
export function mergeManifests(parsed: ParsedManifest[]): {
  manifest: PublishManifest;
  warnings: ManifestProblem[];
} {
  const images: ImageSpec[] = [];
  /** Each distinct reference of a `repository:tag`, in the order first met. */
  const references = new Map<string, ReferenceSpec[]>();
  const charts = new Map<string, ChartSpec>();
  const warnings: ManifestProblem[] = [];
  const emptyFiles: ManifestFile[] = [];

  const shared = (ref: ReferenceSpec): ReferenceSpec => {
    const known = references.get(nameOf(ref)) ?? [];
    const match = known.find((other) => compatible(other, ref));
    if (match) {
      mergeReference(match, ref);
      return match;
    }
    const copy = { ...ref, declaredIn: [...ref.declaredIn] };
    references.set(nameOf(ref), [...known, copy]);
    return copy;
  };

  // manifest.yaml first, so that its structure wins.
  const ordered = [...parsed]
    .sort((a, b) => a.file.localeCompare(b.file))
    .reverse();
  for (const manifest of ordered) {
    warnings.push(...manifest.warnings);
    if (manifest.empty) emptyFiles.push(manifest.file);
    for (const parsedImage of manifest.images) {
      const refs: ReferenceSpec[] = [];
      for (const ref of parsedImage.references.map(shared)) {
        if (!refs.includes(ref)) refs.push(ref);
      }
      const image: ImageSpec = {
        ...parsedImage,
        references: refs,
        declaredIn: [...parsedImage.declaredIn],
      };
      // manifest.json of the flat format lists each reference as an image of
      // its own. Such an image adds nothing when another image already
      // publishes its reference.
      const alreadyPublished =
        !needsManifestList(image) &&
        images.some((other) => other.references.includes(refs[0]));
      if (alreadyPublished) continue;
      const sameName = images.find(
        (other) => nameOf(other) === nameOf(image) && canJoin(other, image),
      );
      if (sameName) {
        joinImage(sameName, image);
      } else {
        images.push(image);
      }
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
      emptyFiles,
      images,
      charts: [...charts.values()],
    },
    warnings,
  };
}
