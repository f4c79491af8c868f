/**
 * The names a chart may use for each image of an import, mapped to the
 * repository the image is published as.
 */
import type { Plan, PlannedList, PlannedReference } from "../plan.js";
import { parseReference } from "../reference.js";

export interface ImageMapping {
  /** The published repository without a tag, e.g. `R/N/ibmcase/elasticsearch`. */
  repository: string;
  /** The published tag. */
  tag: string;
  /** A manifest list over per-architecture images, or one image. */
  kind: "list" | "reference";
  /** The manifest's name of the image, e.g. `ibmcase/elasticsearch:6.6.1`. */
  source: string;
  /**
   * Every name that maps to this repository: the manifest's names, the names
   * the image tarball carries (RepoTags), `pull-repository`, and the
   * published reference itself, so that a rewritten value maps to itself.
   */
  names: string[];
  /** For a reference that is a member of a manifest list, that list's target. */
  memberOf?: string[];
}

/** Two or more published repositories match one value. */
export class AmbiguousImageError extends Error {
  readonly value: string;
  readonly candidates: ImageMapping[];

  constructor(value: string, candidates: ImageMapping[]) {
    const described = candidates
      .map(
        (candidate) =>
          `${candidate.repository} (${candidate.kind === "list" ? "manifest list" : "image"} ${candidate.source}, named ${matchingNames(value, candidate).join(", ")})`,
      )
      .join(", ");
    super(
      `"${value}" matches images published to different repositories: ${described}`,
    );
    this.name = "AmbiguousImageError";
    this.value = value;
    this.candidates = candidates;
  }
}

const dockerHubHosts = new Set([
  "docker.io",
  "index.docker.io",
  "registry-1.docker.io",
]);

/**
 * Returns the repository path a name refers to, for comparing names: without
 * tag, digest and registry host, and with Docker Hub's `library/` left out,
 * so that `quay.io/a/b` is `a/b` and `docker.io/library/x:1`, `library/x`, `docker.io/x` and `x` are all
 * `x`. Returns undefined for a name with no path.
 */
export function comparableName(name: string): string | undefined {
  const ref = parseReference(name);
  let path = ref.path.replace(/\/+$/, "");
  // `library/` is Docker Hub's namespace of official images only.
  if (!ref.host || dockerHubHosts.has(ref.host.toLowerCase())) {
    path = path.replace(/^library\//, "");
  }
  return path === "" ? undefined : path;
}

function targetName(target: { repository: string; tag: string }): string {
  return `${target.repository}:${target.tag}`;
}

function unique(names: (string | undefined)[]): string[] {
  return [...new Set(names.filter((name): name is string => Boolean(name)))];
}

function referenceMapping(
  ref: PlannedReference,
  lists: PlannedList[],
): ImageMapping {
  const memberOf = lists
    .filter((list) => list.members.includes(ref))
    .map((list) => targetName(list.target));
  return {
    repository: ref.target.repository,
    tag: ref.target.tag,
    kind: "reference",
    source: ref.source,
    names: unique([
      ref.source,
      ref.declaredAs?.name,
      ...ref.image.repoTags,
      ref.pullRepository,
      targetName(ref.target),
    ]),
    ...(memberOf.length > 0 ? { memberOf } : {}),
  };
}

function listMapping(list: PlannedList): ImageMapping {
  return {
    repository: list.target.repository,
    tag: list.target.tag,
    kind: "list",
    source: list.source,
    names: unique([
      list.source,
      list.declaredAs?.name,
      targetName(list.target),
    ]),
  };
}

/**
 * Returns one mapping per manifest list and one per published reference,
 * lists first, each with every name a chart may use for it.
 */
export function imageMappings(plan: Plan): ImageMapping[] {
  return [
    ...plan.lists.map(listMapping),
    ...plan.references.map((ref) => referenceMapping(ref, plan.lists)),
  ];
}

/** Returns the names of a mapping that match a value. */
export function matchingNames(value: string, mapping: ImageMapping): string[] {
  const wanted = comparableName(value);
  return mapping.names.filter((name) => comparableName(name) === wanted);
}

/**
 * Narrows candidates to those with a name of the value's tag, when the value
 * has one and that leaves a single repository.
 */
function narrowByTag(
  value: string,
  candidates: ImageMapping[],
): ImageMapping[] {
  const tag = parseReference(value).tag;
  if (tag === undefined) return candidates;
  const tagged = candidates.filter((candidate) =>
    matchingNames(value, candidate).some(
      (name) => (parseReference(name).tag ?? "latest") === tag,
    ),
  );
  return new Set(tagged.map((c) => c.repository)).size === 1
    ? tagged
    : candidates;
}

/**
 * Finds the published image a chart value names. Tags, digests and registry
 * hosts are ignored, and Docker Hub's short forms are equal to the long ones.
 * A manifest list wins over its own members, so a chart points at the list.
 * Returns undefined when nothing matches, and an AmbiguousImageError when
 * images published to different repositories match (unless the value's tag
 * picks one of them).
 */
export function matchImage(
  value: string,
  mappings: ImageMapping[],
): ImageMapping | AmbiguousImageError | undefined {
  if (comparableName(value) === undefined) return undefined;
  let candidates = mappings.filter(
    (mapping) => matchingNames(value, mapping).length > 0,
  );
  const lists = new Set(
    candidates
      .filter((candidate) => candidate.kind === "list")
      .map((candidate) => targetName(candidate)),
  );
  candidates = candidates.filter(
    (candidate) => !candidate.memberOf?.some((list) => lists.has(list)),
  );
  if (candidates.length === 0) return undefined;
  if (new Set(candidates.map((c) => c.repository)).size > 1) {
    candidates = narrowByTag(value, candidates);
  }
  if (new Set(candidates.map((c) => c.repository)).size > 1) {
    return new AmbiguousImageError(value, candidates);
  }
  return candidates.find((c) => c.kind === "list") ?? candidates[0];
}

/** Returns every published tag of a repository. */
export function publishedTags(
  repository: string,
  mappings: ImageMapping[],
): string[] {
  return unique(
    mappings
      .filter((mapping) => mapping.repository === repository)
      .map((mapping) => mapping.tag),
  );
}
