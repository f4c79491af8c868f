/**
 * Reads a registry with plain fetch, independently of the client under test,
 * so that tests check the registry's own answers.
 */

const accept = [
  "application/vnd.docker.distribution.manifest.v2+json",
  "application/vnd.docker.distribution.manifest.list.v2+json",
  "application/vnd.oci.image.manifest.v1+json",
  "application/vnd.oci.image.index.v1+json",
].join(", ");

export interface FetchedManifest {
  mediaType: string;
  digest: string;
  /** Length of the manifest body in bytes. */
  size: number;
  json: any;
}

export class RegistryReader {
  constructor(
    readonly registry: string,
    readonly auth?: { user: string; password: string },
  ) {}

  #headers(extra: Record<string, string> = {}): Record<string, string> {
    const headers = { ...extra };
    if (this.auth) {
      headers.authorization = `Basic ${Buffer.from(`${this.auth.user}:${this.auth.password}`).toString("base64")}`;
    }
    return headers;
  }

  /** Returns the manifest, or undefined for 404. */
  async manifest(
    repository: string,
    reference: string,
  ): Promise<FetchedManifest | undefined> {
    const response = await fetch(
      `http://${this.registry}/v2/${repository}/manifests/${reference}`,
      {
        headers: this.#headers({ accept }),
      },
    );
    if (response.status === 404) return undefined;
    if (!response.ok)
      throw new Error(
        `GET manifest ${repository}:${reference}: ${response.status}`,
      );
    const body = Buffer.from(await response.arrayBuffer());
    return {
      mediaType: response.headers.get("content-type") ?? "",
      digest: response.headers.get("docker-content-digest") ?? "",
      size: body.length,
      json: JSON.parse(body.toString("utf8")),
    };
  }

  async blobJson(repository: string, digest: string): Promise<any> {
    const response = await fetch(
      `http://${this.registry}/v2/${repository}/blobs/${digest}`,
      { headers: this.#headers() },
    );
    if (!response.ok)
      throw new Error(`GET blob ${repository}@${digest}: ${response.status}`);
    return response.json();
  }

  /** Tells whether the repository contains the blob, from a HEAD request. */
  async hasBlob(repository: string, digest: string): Promise<boolean> {
    const response = await fetch(
      `http://${this.registry}/v2/${repository}/blobs/${digest}`,
      { method: "HEAD", headers: this.#headers() },
    );
    return response.status === 200;
  }

  async tags(repository: string): Promise<string[]> {
    const response = await fetch(
      `http://${this.registry}/v2/${repository}/tags/list`,
      { headers: this.#headers() },
    );
    if (response.status === 404) return [];
    if (!response.ok)
      throw new Error(`GET tags ${repository}: ${response.status}`);
    return ((await response.json()) as { tags: string[] | null }).tags ?? [];
  }

  /**
   * Tags under a namespace, as `REPOSITORY:TAG`. A repository can hold blobs
   * and no tag, when an import uploaded layers before it found a problem.
   */
  async tagged(namespace: string): Promise<string[]> {
    const found: string[] = [];
    for (const repository of await this.repositories(namespace)) {
      for (const tag of await this.tags(repository)) {
        found.push(`${repository}:${tag}`);
      }
    }
    return found;
  }

  /** Repositories under a namespace, from the catalog, page by page. */
  async repositories(namespace: string): Promise<string[]> {
    const found: string[] = [];
    let last = "";
    for (;;) {
      const url = `http://${this.registry}/v2/_catalog?n=1000${last ? `&last=${encodeURIComponent(last)}` : ""}`;
      const response = await fetch(url, { headers: this.#headers() });
      if (!response.ok) throw new Error(`GET catalog: ${response.status}`);
      const { repositories } = (await response.json()) as {
        repositories: string[];
      };
      found.push(...repositories);
      if (repositories.length < 1000 || !response.headers.get("link")) break;
      last = repositories[repositories.length - 1];
    }
    return found.filter((r) => r.startsWith(`${namespace}/`)).sort();
  }

  /** The architecture an image manifest's config gives. */
  async configOf(repository: string, reference: string): Promise<any> {
    const manifest = await this.manifest(repository, reference);
    if (!manifest) throw new Error(`${repository}:${reference} not found`);
    return this.blobJson(repository, manifest.json.config.digest);
  }
}
