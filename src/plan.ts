import { posix } from "node:path";

import type { SavedImage, TarballContents } from "./archive/image-tarball.js";
import { chartFileNameProblem } from "./charts/stage.js";
import { formatPlatform } from "./events.js";
import {
  type ChartSpec,
  type ImageSpec,
  type ManifestFile,
  type Platform,
  type PublishManifest,
  type ReferenceSpec,
  nameOf,
  needsManifestList,
} from "./manifest/model.js";
import { normalizeManifestPath } from "./manifest/parse.js";
import { checkReference, parseReference, stripHost } from "./reference.js";
import { withSubject } from "./text.js";

/** An image tarball read from the archive, or why it could not be read. */
export interface TarballRecord {
  entry: string;
  size: number;
  contents?: TarballContents;
  error?: { code: string; message: string; hint?: string };
}

/** A chart file found under `charts/` in the archive. */
export interface ChartRecord {
  entry: string;
  fileName: string;
  /** Reason the entry is not a Helm chart this tool can read, when it is not. */
  problem?: string;
}

export interface PublishTarget {
  /** `REGISTRY/NAMESPACE/PATH`. */
  repository: string;
  tag: string;
}

/** The name a manifest entry wrote and the manifest files that contain it. */
export interface Declaration {
  name: string;
  files: ManifestFile[];
}

export interface PlannedReference {
  /** The name the manifest (or, with no manifest, the tarball) gives it. */
  source: string;
  /** The manifest entry that names it, absent when there is no manifest. */
  declaredAs?: Declaration;
  tarball: string;
  image: SavedImage;
  platform: Platform;
  target: PublishTarget;
  /** The manifest's `pull-repository`: the name the image was pulled from. */
  pullRepository?: string;
}

export interface PlannedList {
  source: string;
  declaredAs?: Declaration;
  target: PublishTarget;
  members: PlannedReference[];
}

export interface PlannedChart {
  entry: string;
  fileName: string;
  spec?: ChartSpec;
}

export interface SkippedItem {
  item: string;
  reason: string;
}

export interface Plan {
  references: PlannedReference[];
  lists: PlannedList[];
  charts: PlannedChart[];
  skipped: SkippedItem[];
  warnings: string[];
  /** Problems that stop the import before anything is published. */
  errors: string[];
}

export interface PlanInput {
  manifest?: PublishManifest;
  tarballs: TarballRecord[];
  charts: ChartRecord[];
  /**
   * Every entry path of the archive, normalized, in archive order. It
   * explains an archive with nothing to publish and a chart that was skipped.
   */
  entryPaths?: string[];
  /** Entries the archive reader passed over, with the reason. */
  skipped?: { item: string; reason: string }[];
  registry: string;
  namespace: string;
  /**
   * Character that replaces `+` in target tags, which the reference grammar
   * does not allow, e.g. `_` to publish `1.0+7` as `1.0_7`. Without it, a
   * tag with `+` is a plan error.
   */
  plusInTags?: string;
}

/**
 * Returns the names a reference may be written as, for matching: with and
 * without the registry host, and with Docker Hub's `library/` left out.
 */
export function matchKeys(name: string): string[] {
  const ref = parseReference(name);
  const tag = ref.tag ?? "latest";
  const path = ref.path.replace(/^library\//, "");
  const keys = [`${path}:${tag}`];
  if (
    ref.host &&
    !/^(docker\.io|index\.docker\.io|registry-1\.docker\.io)$/.test(ref.host)
  ) {
    keys.push(`${ref.host}/${path}:${tag}`);
  }
  return keys;
}

function carriesName(image: SavedImage, names: string[]): boolean {
  const wanted = new Set(names.flatMap(matchKeys));
  return image.repoTags.some((tag) =>
    matchKeys(tag).some((key) => wanted.has(key)),
  );
}

function namesOf(ref: ReferenceSpec): string[] {
  const names = [ref.source, nameOf(ref)];
  if (ref.pullRepository) names.push(ref.pullRepository);
  return names;
}

function target(
  input: PlanInput,
  repository: string,
  tag: string,
): PublishTarget {
  return {
    repository: `${input.registry ? `${input.registry}/` : ""}${input.namespace}/${stripHost(repository)}`,
    tag: input.plusInTags ? tag.replaceAll("+", input.plusInTags) : tag,
  };
}

/** Adds how to publish a tag with `+` to a problem about such a tag. */
function withPlusHint(problem: string, target: PublishTarget): string {
  if (!target.tag.includes("+")) return problem;
  return `${problem}. To publish it, give --map-plus-in-tags _ (or - or .), which writes ${target.tag.replaceAll("+", "_")}`;
}

/** Finds the tarball a manifest's `archive` path names, by path, else by file name. */
function findTarball(
  tarballs: TarballRecord[],
  archive: string,
): { tarball?: TarballRecord; byFileName: boolean } {
  const exact = tarballs.find((t) => t.entry === archive);
  if (exact) return { tarball: exact, byFileName: false };
  const name = posix.basename(archive);
  const matches = tarballs.filter((t) => posix.basename(t.entry) === name);
  return {
    tarball: matches.length === 1 ? matches[0] : undefined,
    byFileName: true,
  };
}

/** Adds what to do about an unreadable tarball to a problem about it. */
function withHint(problem: string, tarball: TarballRecord): string {
  const hint = tarball.error?.hint;
  return hint ? `${problem}; ${hint}` : problem;
}

function describeFiles(ref: ReferenceSpec): string {
  return ref.declaredIn.join(" and ");
}

/** Picks the image of a tarball that a reference publishes. */
function pickImage(
  ref: ReferenceSpec,
  tarball: TarballRecord,
  plan: Plan,
): SavedImage | undefined {
  const images = tarball.contents?.images ?? [];
  if (images.length === 1) return images[0];
  const named = images.filter((image) => carriesName(image, namesOf(ref)));
  if (named.length === 1) return named[0];
  plan.errors.push(
    `${tarball.entry} holds ${images.length} images and ${named.length === 0 ? "none" : "several"} of them is named ${nameOf(ref)}, so it is unclear which one ${describeFiles(ref)} means`,
  );
  return undefined;
}

function locateReference(
  ref: ReferenceSpec,
  input: PlanInput,
  plan: Plan,
): { tarball: TarballRecord; image: SavedImage } | undefined {
  if (ref.archive) {
    const { tarball, byFileName } = findTarball(input.tarballs, ref.archive);
    if (!tarball) {
      const skipped = input.skipped?.find(
        (entry) => entry.item === normalizeManifestPath(ref.archive!),
      );
      plan.errors.push(
        skipped
          ? `${describeFiles(ref)} maps ${nameOf(ref)} to ${ref.archive}, an entry that was skipped: ${skipped.reason}`
          : `${describeFiles(ref)} maps ${nameOf(ref)} to ${ref.archive}, which the archive does not contain`,
      );
      return undefined;
    }
    if (byFileName) {
      plan.warnings.push(
        `${describeFiles(ref)} maps ${nameOf(ref)} to ${ref.archive}; using ${tarball.entry}, the only image tarball of that file name`,
      );
    }
    if (tarball.error) {
      plan.errors.push(
        withHint(
          `${tarball.error.message} (the manifest maps ${nameOf(ref)} to it)`,
          tarball,
        ),
      );
      return undefined;
    }
    const image = pickImage(ref, tarball, plan);
    if (image) warnIfNamedElsewhere(ref, tarball, image, input, plan);
    return image ? { tarball, image } : undefined;
  }

  const candidates: { tarball: TarballRecord; image: SavedImage }[] = [];
  for (const tarball of input.tarballs) {
    for (const image of tarball.contents?.images ?? []) {
      if (carriesName(image, namesOf(ref))) candidates.push({ tarball, image });
    }
  }
  const distinct = new Set(candidates.map((c) => c.image.imageId));
  if (distinct.size === 1) return candidates[0];
  if (distinct.size > 1) {
    // Per-architecture saves of one multi-architecture image carry the
    // same name, so the platform that the manifest gives picks one.
    const onPlatform = ref.platform
      ? candidates.filter((c) => fitsPlatform(c.image.platform, ref.platform!))
      : [];
    if (new Set(onPlatform.map((c) => c.image.imageId)).size === 1) {
      return onPlatform[0];
    }
    plan.errors.push(
      duplicateEntries(candidates.map((c) => c.tarball.entry))
        ? `${nameOf(ref)} is carried by different images in archive entries that share the path ${candidates[0].tarball.entry}; remove all but one of them from the archive`
        : `${nameOf(ref)} is carried by different images in ${[...new Set(candidates.map((c) => c.tarball.entry))].join(", ")}; add an "archive" field for it in manifest.json to say which file it is`,
    );
    return undefined;
  }
  const unreadable = input.tarballs.filter((t) => t.error);
  plan.errors.push(
    `${describeFiles(ref)} names ${nameOf(ref)}, but no image tarball in the archive carries that name` +
      (unreadable.length
        ? ` (unreadable: ${unreadable.map((t) => withSubject(t.entry, t.error?.message ?? "unknown reason")).join("; ")})`
        : "") +
      unnamedImages(ref, input),
  );
  return undefined;
}

/**
 * Checks whether every path of a list is the same one, as with an entry
 * that an archive repeats.
 */
function duplicateEntries(paths: string[]): boolean {
  return paths.length > 1 && new Set(paths).size === 1;
}

/**
 * Warns when a manifest maps a name with "archive" to a tarball whose image
 * carries other names while another tarball carries that very name, because
 * the archive field may point at the wrong file. The field wins, as it must
 * for images saved by ID, which carry no name.
 */
function warnIfNamedElsewhere(
  ref: ReferenceSpec,
  tarball: TarballRecord,
  image: SavedImage,
  input: PlanInput,
  plan: Plan,
): void {
  if (image.repoTags.length === 0 || carriesName(image, namesOf(ref))) return;
  const elsewhere = input.tarballs.filter(
    (other) =>
      other !== tarball &&
      (other.contents?.images ?? []).some((candidate) =>
        carriesName(candidate, namesOf(ref)),
      ),
  );
  if (elsewhere.length === 0) return;
  plan.warnings.push(
    `${describeFiles(ref)} maps ${nameOf(ref)} to ${tarball.entry}, whose image is named ${image.repoTags.join(", ")}, while ${elsewhere.map((other) => other.entry).join(", ")} carries ${nameOf(ref)}; publishing the image of ${tarball.entry} as ${nameOf(ref)}, as the archive field says. Check that field if this is not the image you mean.`,
  );
}

/**
 * Returns a sentence that lists the images saved by ID, which carry no
 * name, as the ones a reference may mean, with the field that maps the
 * reference to its file. Returns "" when there are none.
 */
function unnamedImages(ref: ReferenceSpec, input: PlanInput): string {
  const unnamed = input.tarballs.flatMap((tarball) =>
    (tarball.contents?.images ?? [])
      .filter((image) => image.repoTags.length === 0)
      .map((image) => ({ tarball, image })),
  );
  if (unnamed.length === 0) return "";
  const listed = unnamed
    .map(
      ({ tarball, image }) => `${tarball.entry} holds image ${image.imageId}`,
    )
    .join(", ");
  const [first] = unnamed;
  return `. Images saved by ID carry no name: ${listed}. If ${nameOf(ref)} is one of them, add "archive: ${first.tarball.entry}" (its file) to the entry of ${ref.source} in ${describeFiles(ref)}`;
}

/**
 * Checks an image config's platform against the one a manifest gives. A
 * manifest platform without a variant matches every variant.
 */
function fitsPlatform(image: Platform, expected: Platform): boolean {
  return (
    image.os === expected.os &&
    image.architecture === expected.architecture &&
    (expected.variant === undefined || image.variant === expected.variant)
  );
}

function platformsEqual(a: Platform, b: Platform): boolean {
  return formatPlatform(a) === formatPlatform(b);
}

function targetText(target: PublishTarget): string {
  return `${target.repository}:${target.tag}`;
}

/**
 * Adds a planned reference, or returns the one already planned that
 * publishes the same image with the same platform to the same target.
 */
function addReference(plan: Plan, planned: PlannedReference): PlannedReference {
  const same = plan.references.find(
    (other) =>
      targetText(other.target) === targetText(planned.target) &&
      other.image.imageId === planned.image.imageId &&
      platformsEqual(other.platform, planned.platform),
  );
  if (same) return same;
  plan.references.push(planned);
  return planned;
}

/**
 * The planned result of each manifest reference during one build, so that a
 * reference shared by several images is located and reported once.
 */
type PlannedByReference = Map<ReferenceSpec, PlannedReference | undefined>;

function planReference(
  ref: ReferenceSpec,
  input: PlanInput,
  plan: Plan,
  planned: PlannedByReference,
): PlannedReference | undefined {
  if (planned.has(ref)) return planned.get(ref);
  const found = locateReference(ref, input, plan);
  let result: PlannedReference | undefined;
  if (found) {
    if (
      ref.platform &&
      ref.platform.architecture !== found.image.platform.architecture
    ) {
      plan.warnings.push(
        `${describeFiles(ref)} says ${nameOf(ref)} is for ${ref.platform.architecture}, but the image config in ${found.tarball.entry} says ${found.image.platform.architecture}; publishing it as ${ref.platform.architecture}`,
      );
    }
    result = addReference(plan, {
      source: nameOf(ref),
      declaredAs: { name: ref.source, files: ref.declaredIn },
      tarball: found.tarball.entry,
      image: found.image,
      platform: ref.platform ?? found.image.platform,
      target: target(input, ref.repository, ref.tag),
      ...(ref.pullRepository ? { pullRepository: ref.pullRepository } : {}),
    });
  }
  planned.set(ref, result);
  return result;
}

function planImage(
  image: ImageSpec,
  input: PlanInput,
  plan: Plan,
  planned: PlannedByReference,
): void {
  const members: PlannedReference[] = [];
  for (const ref of image.references) {
    const member = planReference(ref, input, plan, planned);
    if (member && !members.includes(member)) members.push(member);
  }
  const located = image.references.every((ref) => planned.get(ref));
  if (!needsManifestList(image) || !located) return;
  const list: PlannedList = {
    source: nameOf(image),
    declaredAs: { name: image.source, files: image.declaredIn },
    target: target(input, image.repository, image.tag),
    members,
  };
  const same = plan.lists.some(
    (other) =>
      targetText(other.target) === targetText(list.target) &&
      describeMembers(other) === describeMembers(list),
  );
  if (!same) plan.lists.push(list);
}

function planWithoutManifest(input: PlanInput, plan: Plan): void {
  for (const tarball of input.tarballs) {
    for (const image of tarball.contents?.images ?? []) {
      if (image.repoTags.length === 0) {
        const entry = JSON.stringify({
          images: [{ image: "NAME", tag: "TAG", archive: tarball.entry }],
        });
        plan.errors.push(
          `${tarball.entry} holds image ${image.imageId} with no name (saved by ID) and the archive has no manifest to name it. Add a manifest.json to the archive that names it, such as ${entry}, or save the image again by name: docker save -o FILE NAME:TAG`,
        );
      }
      for (const repoTag of image.repoTags) {
        const ref = parseReference(repoTag);
        addReference(plan, {
          source: repoTag,
          tarball: tarball.entry,
          image,
          platform: image.platform,
          target: target(input, ref.path, ref.tag ?? "latest"),
        });
      }
    }
  }
}

/**
 * Returns the chart records with each entry path once, and reports every
 * path that the archive contains more than once.
 */
function uniqueChartEntries(input: PlanInput, plan: Plan): ChartRecord[] {
  const counts = new Map<string, number>();
  for (const chart of input.charts) {
    counts.set(chart.entry, (counts.get(chart.entry) ?? 0) + 1);
  }
  const unique = new Map<string, ChartRecord>();
  for (const chart of input.charts) {
    if (unique.has(chart.entry)) continue;
    unique.set(chart.entry, chart);
    const count = counts.get(chart.entry)!;
    if (count > 1) {
      plan.errors.push(
        `the archive contains the chart entry ${chart.entry} ${count} times, so it is unclear which copy to write. Pack the archive again with one copy.`,
      );
    }
  }
  return [...unique.values()];
}

/**
 * Explains why the archive has no chart for a manifest entry: the entry path
 * exists but was skipped for its file name, the file name is one this tool
 * skips, or nothing of that name exists.
 */
function reportMissingChart(
  spec: ChartSpec,
  input: PlanInput,
  plan: Plan,
): void {
  const named = spec.paths
    .map((p) => `${p.file} names chart ${p.path}`)
    .join(" and ");
  const paths = spec.paths.map((p) => normalizeManifestPath(p.path));
  const entries = (input.entryPaths ?? []).filter(
    (path) =>
      path.startsWith("charts/") && !input.charts.some((c) => c.entry === path),
  );
  const skipped =
    entries.find((path) => paths.includes(path)) ??
    entries.find((path) => posix.basename(path) === spec.fileName);
  const problem = chartFileNameProblem(
    skipped ? posix.basename(skipped) : spec.fileName,
  );
  const rename = `Rename the chart file to a name of at most 255 ASCII letters, digits, ".", "_", "+" and "-" that starts with a letter or digit and ends in .tgz or .tar.gz, in the archive and in the manifest.`;
  if (skipped && problem) {
    plan.errors.push(
      `${named}. The archive contains ${skipped}, but it was skipped because its file name ${problem}. ${rename}`,
    );
  } else if (problem) {
    plan.errors.push(
      `${named}, but a chart of that file name is skipped because the file name ${problem}. ${rename}`,
    );
  } else {
    plan.errors.push(`${named}, which the archive does not contain`);
  }
}

/** Reports chart entries that would be written to the same file. */
function checkChartFileNames(plan: Plan): void {
  const byFileName = new Map<string, PlannedChart[]>();
  for (const chart of plan.charts) {
    byFileName.set(chart.fileName, [
      ...(byFileName.get(chart.fileName) ?? []),
      chart,
    ]);
  }
  for (const [fileName, charts] of byFileName) {
    if (charts.length < 2) continue;
    const entries = charts.map((c) => c.entry);
    plan.errors.push(
      `the chart entries ${entries.slice(0, -1).join(", ")} and ${entries.at(-1)} would be written to the same file charts/${fileName}, so only the last one would remain. Remove or rename all but one of them in the archive.`,
    );
  }
}

function planCharts(input: PlanInput, plan: Plan): void {
  const records = uniqueChartEntries(input, plan);
  const specs = input.manifest?.charts ?? [];
  const used = new Set<string>();
  for (const spec of specs) {
    const exact = records.find((c) =>
      spec.paths.some((p) => c.entry === normalizeManifestPath(p.path)),
    );
    const chart = exact ?? records.find((c) => c.fileName === spec.fileName);
    for (const p of spec.paths) {
      if (chart && chart.entry !== normalizeManifestPath(p.path)) {
        plan.warnings.push(
          `${p.file} names chart ${p.path}, which the archive does not contain; using ${chart.entry}`,
        );
      }
    }
    if (!chart) {
      reportMissingChart(spec, input, plan);
      continue;
    }
    used.add(chart.entry);
    if (chart.problem) {
      plan.errors.push(chart.problem);
      continue;
    }
    plan.charts.push({ entry: chart.entry, fileName: chart.fileName, spec });
  }
  for (const chart of records) {
    if (used.has(chart.entry)) continue;
    if (chart.problem) {
      plan.warnings.push(`${chart.problem}; writing it as it is`);
    } else if (specs.length > 0) {
      plan.warnings.push(
        `${chart.entry} is not named by the manifest; writing it as it is`,
      );
    }
    plan.charts.push({ entry: chart.entry, fileName: chart.fileName });
  }
  checkChartFileNames(plan);
}

function reportUnpublished(input: PlanInput, plan: Plan): void {
  const published = new Set(plan.references.map((r) => r.image.imageId));
  for (const tarball of input.tarballs) {
    if (tarball.error) {
      const mapped = input.manifest?.images.some((image) =>
        image.references.some((ref) => ref.archive === tarball.entry),
      );
      if (mapped) continue;
      if (input.manifest) {
        plan.skipped.push({
          item: tarball.entry,
          reason: `unreadable and not named by the manifest: ${tarball.error.message}`,
        });
      } else if (!input.manifest) {
        plan.errors.push(withHint(tarball.error.message, tarball));
      }
      continue;
    }
    for (const image of tarball.contents?.images ?? []) {
      if (published.has(image.imageId)) continue;
      const name = image.repoTags.join(", ") || image.imageId;
      const mappedAway = input.manifest?.images
        .flatMap((entry) => entry.references)
        .find(
          (ref) =>
            ref.archive !== undefined &&
            ref.archive !== tarball.entry &&
            carriesName(image, namesOf(ref)),
        );
      plan.skipped.push({
        item: `${tarball.entry} (${name})`,
        reason: mappedAway
          ? `the manifest maps ${nameOf(mappedAway)} to ${mappedAway.archive} instead`
          : "no manifest entry names this image",
      });
    }
  }
}

/** Describes a planned reference for a message: name, manifest files, tarball and platform. */
function describePlanned(ref: PlannedReference): string {
  const where = `${ref.tarball}, ${formatPlatform(ref.platform)}`;
  if (!ref.declaredAs) return `${ref.source} (${where})`;
  return `${ref.declaredAs.name} (${ref.declaredAs.files.join(" and ")}: ${where})`;
}

function describeMembers(list: PlannedList): string {
  return list.members
    .map(
      (member) =>
        `${member.source} (${member.tarball}, ${formatPlatform(member.platform)})`,
    )
    .join(", ");
}

function describeList(list: PlannedList): string {
  if (!list.declaredAs) return list.source;
  return `${list.declaredAs.name} (${list.declaredAs.files.join(" and ")})`;
}

/** Warns about each target tag that differs from its source because `+` was replaced. */
function reportMappedTags(plan: Plan): void {
  for (const item of [...plan.references, ...plan.lists]) {
    const sourceTag = item.source.slice(item.source.lastIndexOf(":") + 1);
    if (!sourceTag.includes("+") || sourceTag === item.target.tag) continue;
    plan.warnings.push(
      `${item.source} is published with the tag ${item.target.tag}, because --map-plus-in-tags replaces + in tags`,
    );
  }
}

function checkTargets(plan: Plan): void {
  const fix = plan.references.some((ref) => ref.declaredAs)
    ? "Correct the manifest so that each name maps to one image."
    : "Save one of the images under another tag.";
  const seen = new Map<string, PlannedReference>();
  for (const ref of plan.references) {
    const text = targetText(ref.target);
    const problem = checkReference(text);
    if (problem)
      plan.errors.push(
        `cannot publish ${ref.source} as ${text}: ${withPlusHint(problem, ref.target)}`,
      );
    const other = seen.get(text);
    if (!other) {
      seen.set(text, ref);
      continue;
    }
    const difference =
      other.image.imageId !== ref.image.imageId
        ? "they are different images"
        : "they are given different platforms";
    plan.errors.push(
      `${describePlanned(other)} and ${describePlanned(ref)} would both be published as ${text}, but ${difference}. ${fix}`,
    );
  }

  const lists = new Map<string, PlannedList>();
  for (const list of plan.lists) {
    const text = targetText(list.target);
    const problem = checkReference(text);
    if (problem)
      plan.errors.push(
        `cannot publish the manifest list ${list.source} as ${text}: ${withPlusHint(problem, list.target)}`,
      );
    if (seen.has(text)) {
      plan.errors.push(
        `the manifest list ${list.source} and the image ${seen.get(text)!.source} would both be published as ${text}`,
      );
    }
    const other = lists.get(text);
    if (!other) {
      lists.set(text, list);
      continue;
    }
    plan.errors.push(
      `the manifest lists ${describeList(other)} and ${describeList(list)} would both be published as ${text}, with different members [${describeMembers(other)}] and [${describeMembers(list)}]. ${fix}`,
    );
  }
}

/**
 * Warns about manifest files that name nothing, because the plan then falls
 * back to publishing every tag, or uses the other manifest file alone.
 */
function reportEmptyManifests(manifest: PublishManifest, plan: Plan): void {
  const emptyFiles = manifest.emptyFiles ?? [];
  const namesNothing = manifest.images.length + manifest.charts.length === 0;
  const fallBack =
    "so every tagged image in the archive is published under the tags it was saved with";
  for (const file of emptyFiles) {
    const others = manifest.files.filter((f) => !emptyFiles.includes(f));
    if (namesNothing || others.length === 0) {
      plan.warnings.push(
        `${file} is empty or contains only comments, ${fallBack}. List the images and charts to publish in ${file}, or remove it.`,
      );
    } else {
      plan.warnings.push(
        `${file} is empty or contains only comments, so only ${others.join(" and ")} is used`,
      );
    }
  }
  const written = manifest.files.filter((f) => !emptyFiles.includes(f));
  if (namesNothing && written.length > 0) {
    plan.warnings.push(
      `${written.join(" and ")} ${written.length > 1 ? "name" : "names"} no images and no charts, ${fallBack}`,
    );
  }
}

/** Checks whether a path is a manifest, image tarball or chart at the top of `folder`. */
function isPpaContent(path: string, folder: string): boolean {
  const inner = path.slice(folder.length + 1);
  return (
    /^manifest\.(yaml|yml|json)$/.test(inner) ||
    inner.startsWith("images/") ||
    inner.startsWith("charts/")
  );
}

/**
 * Reports an archive with nothing to publish. When its entry paths show the
 * cause, the error names it: the PPA contents are under one top-level
 * folder, or the archive is a Helm chart.
 */
function reportNothingToPublish(input: PlanInput, plan: Plan): void {
  const namesSomething =
    input.manifest &&
    input.manifest.images.length + input.manifest.charts.length > 0;
  if (namesSomething || input.tarballs.length + input.charts.length > 0) {
    return;
  }
  // macOS adds ._NAME and __MACOSX/ entries of its own to archives it packs.
  const paths = (input.entryPaths ?? []).filter(
    (path) =>
      !posix.basename(path).startsWith("._") && !path.startsWith("__MACOSX/"),
  );
  const manifestEntry = paths.some((path) =>
    /^manifest\.(yaml|yml|json)$/.test(path),
  );
  // A manifest that could not be read is reported on its own, as the reason.
  if (!input.manifest && manifestEntry) return;

  const nothing =
    "the archive has no image tarball under images/, no chart under charts/ and no manifest naming an image or chart at its top level, so there is nothing to publish";
  const folders = new Set(paths.map((path) => path.split("/")[0]));
  const [folder] = folders;
  const nested =
    folders.size === 1 && paths.every((path) => path.includes("/"))
      ? paths.filter((path) => isPpaContent(path, folder))
      : [];
  const chart = paths.find((path) => /^([^/]+\/)?Chart\.yaml$/.test(path));
  // A chart's own folder contains charts/ (its subcharts) too, so Chart.yaml at
  // the top of the folder decides that the archive is a chart.
  if (nested.length > 0 && !chart) {
    plan.errors.push(
      `${nothing}. Its entries are under the top-level folder ${folder}/ (for example ${nested[0]}). Extract the archive and pack the contents of ${folder}/ again without the folder, e.g. tar -czf NEW.tgz -C ${folder} .`,
    );
  } else if (chart) {
    plan.errors.push(
      `the archive is a Helm chart (it contains ${chart}), not a PPA archive, so there is nothing to publish. Give a PPA archive, with manifest.yaml, images/ and charts/ at its top level.`,
    );
  } else {
    plan.errors.push(
      `${nothing}. Check that the file is a PPA archive, with manifest.yaml, images/ and charts/ at its top level.`,
    );
  }
}

/** Decides what to publish where, and collects every problem at once. */
export function buildPlan(input: PlanInput): Plan {
  const plan: Plan = {
    references: [],
    lists: [],
    charts: [],
    skipped: [],
    warnings: [],
    errors: [],
  };
  if (input.manifest) reportEmptyManifests(input.manifest, plan);
  reportNothingToPublish(input, plan);
  if (
    input.manifest &&
    input.manifest.images.length + input.manifest.charts.length > 0
  ) {
    const planned: PlannedByReference = new Map();
    for (const image of input.manifest.images) {
      planImage(image, input, plan, planned);
    }
  } else {
    input = { ...input, manifest: undefined };
    planWithoutManifest(input, plan);
  }
  planCharts(input, plan);
  reportUnpublished(input, plan);
  if (input.plusInTags) reportMappedTags(plan);
  checkTargets(plan);
  return plan;
}
