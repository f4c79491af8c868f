import type Docker from "dockerode";
import type { Readable } from "node:stream";

import { PpaLoadError, errorMessage } from "../errors.js";
import type { Credentials } from "../registry/credentials.js";

/** What the engine reported while loading or pushing. */
interface ProgressMessage {
  stream?: string;
  status?: string;
  error?: string;
  errorDetail?: { message?: string };
  aux?: { Tag?: string; Digest?: string; Size?: number };
}

export interface PushResult {
  digest: string;
  size: number;
}

/** Returns where the engine is reached, for messages: `DOCKER_HOST` or the default socket. */
export function dockerEndpoint(env: NodeJS.ProcessEnv = process.env): string {
  return env.DOCKER_HOST || "unix:///var/run/docker.sock";
}

/**
 * Publishes images through a Docker Engine: load a tarball stream, tag the
 * loaded image by ID, push the tag.
 */
export class DockerEngine {
  #docker: Promise<Docker> | undefined;
  readonly endpoint: string;

  /** Uses `docker`, or a client for `DOCKER_HOST` made at first use. */
  constructor(docker?: Docker) {
    this.#docker = docker ? Promise.resolve(docker) : undefined;
    this.endpoint = dockerEndpoint();
  }

  /**
   * Returns the dockerode client. dockerode is loaded on first use, because
   * its SSH support allocates about 16 MB for a WebAssembly module at load,
   * which an import that never talks to Docker does not need.
   */
  #client(): Promise<Docker> {
    this.#docker ??= import("dockerode").then(
      ({ default: Dockerode }) => new Dockerode(),
    );
    return this.#docker;
  }

  async ping(): Promise<void> {
    try {
      await (await this.#client()).ping();
    } catch (error) {
      throw new PpaLoadError(
        "DOCKER",
        `cannot reach the Docker Engine at ${this.endpoint}: ${errorMessage(error)}`,
        {
          cause: error,
          hint: "start Docker, or set DOCKER_HOST to the engine's socket",
        },
      );
    }
  }

  /** Streams a `docker save` tarball into the engine (`docker load`). */
  async load(tarball: Readable, entryPath: string): Promise<void> {
    let response: NodeJS.ReadableStream;
    try {
      const docker = await this.#client();
      response = await docker.loadImage(tarball, { quiet: true });
    } catch (error) {
      throw new PpaLoadError(
        "DOCKER",
        `the Docker Engine could not load ${entryPath}: ${errorMessage(error)}`,
        {
          cause: error,
        },
      );
    }
    await this.#follow(
      response,
      (message) => `the Docker Engine could not load ${entryPath}: ${message}`,
    );
  }

  async tag(imageId: string, repository: string, tag: string): Promise<void> {
    try {
      const docker = await this.#client();
      await docker.getImage(imageId).tag({ repo: repository, tag });
    } catch (error) {
      throw new PpaLoadError(
        "DOCKER",
        `cannot tag image ${imageId} as ${repository}:${tag}: ${errorMessage(error)}`,
        {
          cause: error,
        },
      );
    }
  }

  /** Pushes `repository:tag` and returns the digest and size of the pushed manifest. */
  async push(
    repository: string,
    tag: string,
    registry: string,
    credentials?: Credentials,
  ): Promise<PushResult> {
    const authconfig = toAuthConfig(registry, credentials);
    const reference = `${repository}:${tag}`;
    let response: NodeJS.ReadableStream;
    try {
      const docker = await this.#client();
      response = await docker.getImage(reference).push({ tag, authconfig });
    } catch (error) {
      throw new PpaLoadError(
        "DOCKER",
        `the Docker Engine could not push ${reference}: ${errorMessage(error)}`,
        {
          cause: error,
        },
      );
    }
    const messages = await this.#follow(
      response,
      (message) => `the Docker Engine could not push ${reference}: ${message}`,
      registry,
    );
    const aux = messages.map((m) => m.aux).find((a) => a?.Digest);
    if (!aux?.Digest) {
      throw new PpaLoadError(
        "DOCKER",
        `the Docker Engine pushed ${reference} but reported no digest`,
      );
    }
    return { digest: aux.Digest, size: aux.Size ?? 0 };
  }

  async #follow(
    stream: NodeJS.ReadableStream,
    describe: (message: string) => string,
    registry?: string,
  ): Promise<ProgressMessage[]> {
    const docker = await this.#client();
    return new Promise((resolve, reject) => {
      docker.modem.followProgress(
        stream,
        (error: Error | null, output: ProgressMessage[]) => {
          const failed =
            error?.message ??
            output.find((m) => m.error || m.errorDetail)?.error;
          if (failed) {
            reject(
              new PpaLoadError("DOCKER", describe(failed), {
                hint: pushHint(failed, registry),
              }),
            );
          } else {
            resolve(output);
          }
        },
      );
    });
  }
}

/**
 * Errors of Go's HTTP client when a registry responds to HTTPS with plain
 * HTTP: the first when the response looks like HTTP, the second otherwise.
 */
const plainHttpAnswer =
  /server gave HTTP response to HTTPS client|first record does not look like a TLS handshake/i;

/** Errors of Go's TLS client for a certificate that no trusted CA signed. */
const untrustedCertificate =
  /x509: certificate signed by unknown authority|certificate is not trusted/i;

/** Returns what to do about an error the engine reported, or undefined. */
function pushHint(message: string, registry?: string): string | undefined {
  if (plainHttpAnswer.test(message) && registry) {
    return `${registry} speaks plain HTTP, and the Docker Engine uses HTTPS for every registry that is not on loopback unless its daemon.json (/etc/docker/daemon.json on Linux) lists the registry in "insecure-registries". Add "${registry}" there and restart the engine; --insecure changes only the requests of ppa-load itself`;
  }
  if (untrustedCertificate.test(message) && registry) {
    return `the Docker Engine does not trust the certificate of ${registry}. Copy the CA certificate to /etc/docker/certs.d/${registry}/ca.crt on the engine's host; --ca-cert changes only the requests of ppa-load itself`;
  }
  if (
    /unauthorized|authentication required|no basic auth credentials/i.test(
      message,
    )
  ) {
    return `log in with docker login ${registry ?? "REGISTRY"}, or give --username and --password-stdin`;
  }
  if (/invalid tar header|unexpected EOF/i.test(message)) {
    return "the image tarball is damaged or is not a docker save tarball; save the image again";
  }
  return undefined;
}

function toAuthConfig(
  registry: string,
  credentials?: Credentials,
): Docker.AuthConfigObject | undefined {
  if (!credentials) return undefined;
  if ("identityToken" in credentials) {
    return {
      identitytoken: credentials.identityToken,
      serveraddress: registry,
    };
  }
  return {
    username: credentials.username,
    password: credentials.password,
    serveraddress: registry,
  };
}
