/** Manifest media types of the Docker image format and the OCI image spec. */
export const MediaType = {
  dockerManifest: "application/vnd.docker.distribution.manifest.v2+json",
  dockerManifestList:
    "application/vnd.docker.distribution.manifest.list.v2+json",
  ociManifest: "application/vnd.oci.image.manifest.v1+json",
  ociIndex: "application/vnd.oci.image.index.v1+json",
} as const;

/** The `Accept` header for reading any single-image or list manifest. */
export const manifestAccept = Object.values(MediaType).join(", ");

export function isManifestList(mediaType: string): boolean {
  return (
    mediaType === MediaType.dockerManifestList ||
    mediaType === MediaType.ociIndex
  );
}
