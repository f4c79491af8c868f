import type { EntryKind } from "./archive/entries.js";
import type { Platform } from "./manifest/model.js";
import type { Plan, SkippedItem } from "./plan.js";

export type Phase =
  "connect" | "read" | "plan" | "push" | "lists" | "charts" | "done";

/** Progress of an import, delivered to `onEvent` as it happens. */
export type ImportEvent =
  | { type: "phase"; phase: Phase; message: string }
  | { type: "entry"; path: string; kind: EntryKind; size: number }
  | {
      /** Bytes of the archive file read so far, at most four events a second. */
      type: "read-progress";
      bytesRead: number;
      bytesTotal: number;
    }
  | { type: "tarball-loaded"; tarball: string; images: LoadedImage[] }
  | { type: "tarball-failed"; tarball: string; message: string }
  | { type: "plan"; plan: Plan }
  | {
      type: "reference-started";
      /** `REGISTRY/NAMESPACE/PATH:TAG`. */
      target: string;
      source: string;
      platform: Platform;
      /** The config and layer blobs of the image manifest. */
      blobs: { digest: string; size: number }[];
    }
  | {
      type: "blob-progress";
      /** Repository path in the registry's API, without the registry host. */
      repository: string;
      digest: string;
      size: number;
      /** Bytes handed to the connection so far; at most four events a second per blob. */
      bytesSent: number;
    }
  | {
      type: "blob-placed";
      repository: string;
      digest: string;
      size: number;
      outcome: "uploaded" | "mounted" | "exists";
    }
  | { type: "reference-pushed"; reference: PublishedReference }
  | { type: "list-pushed"; list: PublishedList }
  | { type: "chart-written"; chart: WrittenChart }
  | { type: "failure"; failure: Failure }
  | { type: "warning"; message: string }
  | { type: "request"; method: string; url: string; status: number }
  | {
      type: "upload-resume";
      repository: string;
      digest: string;
      size: number;
      /**
       * `resumed`: the registry still held the upload session of an earlier
       * run, and `offset` bytes of it are not sent again. `expired`: it no
       * longer did, so the blob is uploaded from the start.
       */
      outcome: "resumed" | "expired";
      offset: number;
    };

export interface LoadedImage {
  imageId: string;
  repoTags: string[];
  platform: Platform;
}

export interface PublishedReference {
  /** The name the manifest gives the image. */
  source: string;
  /** `REGISTRY/NAMESPACE/PATH:TAG`. */
  target: string;
  digest: string;
  mediaType: string;
  size: number;
  platform: Platform;
  tarball: string;
  /** The digest the tag pointed at before, when publishing moved it. */
  previousDigest?: string;
}

export interface PublishedList {
  source: string;
  target: string;
  digest: string;
  mediaType: string;
  platforms: Platform[];
  /** The digest the tag pointed at before, when publishing moved it. */
  previousDigest?: string;
}

export interface WrittenChart {
  /** The chart's entry in the archive. */
  entry: string;
  /** Path of the written chart; a rewritten chart is named `NAME-VERSION.tgz`. */
  path: string;
  /** Each values key that was rewritten, with the file that contains it. */
  changes?: { file: string; key: string; from: string | null; to: string }[];
  /** Path of the original chart, when it was kept. */
  original?: string;
  /** The ChartMuseum upload: `exists` when the server already had this version. */
  chartMuseum?: { status: "uploaded" | "exists" | "replaced"; url: string };
  /** The OCI reference and manifest digest the chart was pushed to. */
  oci?: { reference: string; digest: string };
}

export interface Failure {
  /** The item that failed: a target reference, a chart or a tarball entry. */
  item: string;
  code: string;
  message: string;
  hint?: string;
}

export interface ImportResult {
  archive: string;
  registry: string;
  namespace: string;
  published: PublishedReference[];
  lists: PublishedList[];
  charts: WrittenChart[];
  skipped: SkippedItem[];
  warnings: string[];
  failures: Failure[];
  /**
   * Counts of the blobs the direct path placed: uploaded, mounted from
   * another repository, or already in the repository. All zero with
   * `docker: true`, where the engine pushes.
   */
  blobs: {
    uploaded: number;
    mounted: number;
    existing: number;
    /** Bytes sent for uploaded blobs, without the parts that resumed uploads did not send again. */
    bytesUploaded: number;
    /** Uploads that continued an earlier run's upload session. */
    resumed: number;
    /** Bytes that resumed uploads did not send again. */
    bytesResumed: number;
  };
  /** Maximum of layer bytes in temporary files at one time. */
  peakTemporaryBytes: number;
  /** Wall time of the import in milliseconds. */
  durationMs: number;
}

export type EventListener = (event: ImportEvent) => void;

export function formatPlatform(platform: Platform): string {
  return [platform.os, platform.architecture, platform.variant]
    .filter(Boolean)
    .join("/");
}
