/** The model of what a PPA archive asks to publish, merged from its manifests. */

export type ManifestFile = "manifest.yaml" | "manifest.json";

export interface Platform {
  os: string;
  architecture: string;
  variant?: string;
}

/** One per-architecture image: the unit that is loaded and pushed. */
export interface ReferenceSpec {
  /** Repository path with any registry host removed, e.g. `ibmcom/mq`. */
  repository: string;
  tag: string;
  /** The reference as the manifest wrote it. */
  source: string;
  /** `pull-repository`: the name the image was pulled from, when given. */
  pullRepository?: string;
  platform?: Platform;
  /** The image tarball's entry path, from manifest.json's `archive`. */
  archive?: string;
  declaredIn: ManifestFile[];
}

/** A (possibly multi-architecture) image and its per-architecture references. */
export interface ImageSpec {
  /** Repository path with any registry host removed. */
  repository: string;
  tag: string;
  source: string;
  /**
   * The image's references. Images that name the same reference share one
   * ReferenceSpec object.
   */
  references: ReferenceSpec[];
  declaredIn: ManifestFile[];
}

export interface ChartSpec {
  /** The chart's file name, e.g. `ibm-mq-6.0.0.tgz`: how entries are matched. */
  fileName: string;
  /** Each path a manifest gave for the chart, as written, by manifest file. */
  paths: { file: ManifestFile; path: string }[];
  repositoryKeys: string[];
  registryKeys: string[];
}

export interface PublishManifest {
  /** The manifest files the model was built from; empty when there were none. */
  files: ManifestFile[];
  /** The manifest files that were empty or contained only comments. */
  emptyFiles?: ManifestFile[];
  images: ImageSpec[];
  charts: ChartSpec[];
}

/** `repository:tag` of a reference or image, used as a key. */
export function nameOf(spec: { repository: string; tag: string }): string {
  return `${spec.repository}:${spec.tag}`;
}

/**
 * Whether an image needs a manifest list over its references: true unless its
 * only reference is the image itself.
 */
export function needsManifestList(image: ImageSpec): boolean {
  if (image.references.length !== 1) return image.references.length > 0;
  return nameOf(image.references[0]) !== nameOf(image);
}
