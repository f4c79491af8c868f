import type { Platform } from "../manifest/model.js";
import type { ManifestDescriptor } from "../registry/client.js";
import { MediaType } from "../registry/media-types.js";

export interface ListMember extends ManifestDescriptor {
  platform: Platform;
}

/**
 * Builds a manifest list over per-architecture image manifests: a Docker
 * manifest list when every member is a Docker manifest, else an OCI index.
 * The bytes are deterministic, so a re-run writes the same digest.
 */
export function buildManifestList(members: ListMember[]): {
  mediaType: string;
  body: Buffer;
} {
  const allDocker = members.every(
    (m) => m.mediaType === MediaType.dockerManifest,
  );
  const mediaType = allDocker
    ? MediaType.dockerManifestList
    : MediaType.ociIndex;
  const list = {
    schemaVersion: 2,
    mediaType,
    manifests: members.map((member) => ({
      mediaType: member.mediaType,
      size: member.size,
      digest: member.digest,
      platform: {
        architecture: member.platform.architecture,
        os: member.platform.os,
        ...(member.platform.variant
          ? { variant: member.platform.variant }
          : {}),
      },
    })),
  };
  return { mediaType, body: Buffer.from(JSON.stringify(list, null, 2)) };
}
