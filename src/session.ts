import type { ImportResult } from "./events.js";
import type {
  RegistryClient,
  ResumeInfo,
  RetryInfo,
} from "./registry/client.js";

/** Callbacks of the import that is using a shared registry client. */
export interface ClientListeners {
  onRequest(info: { method: string; url: string; status: number }): void;
  onRetry(info: RetryInfo): void;
  onResume(info: ResumeInfo): void;
  onWarning(message: string): void;
}

/**
 * State that several imports share when they run one after another, as a
 * bulk import does. Each registry gets one client, so connections and
 * bearer tokens are reused. The session also records which repositories
 * hold each blob, so a blob that an earlier archive uploaded is mounted or
 * found instead of uploaded again. Imports that share a session must not
 * run at once.
 */
export class ImportSession {
  readonly #placed = new Map<string, Map<string, Set<string>>>();
  readonly #clients = new Map<string, RegistryClient>();
  #listeners: ClientListeners | undefined;
  #allSucceeded = true;

  /**
   * Returns the client cached under `key`, or one that `create` makes. The
   * client's callbacks go to whichever import called `use` last.
   */
  client(
    key: string,
    create: (listeners: ClientListeners) => RegistryClient,
  ): { client: RegistryClient; created: boolean } {
    const cached = this.#clients.get(key);
    if (cached) return { client: cached, created: false };
    const client = create({
      onRequest: (info) => this.#listeners?.onRequest(info),
      onRetry: (info) => this.#listeners?.onRetry(info),
      onResume: (info) => this.#listeners?.onResume(info),
      onWarning: (message) => this.#listeners?.onWarning(message),
    });
    this.#clients.set(key, client);
    return { client, created: true };
  }

  /**
   * Returns the repositories, as API paths, that hold each blob digest in
   * the registry or OCI layout that `target` names.
   */
  placed(target: string): Map<string, Set<string>> {
    let placed = this.#placed.get(target);
    if (!placed) {
      placed = new Map();
      this.#placed.set(target, placed);
    }
    return placed;
  }

  /** Routes the shared clients' callbacks to the import that starts now. */
  use(listeners: ClientListeners): void {
    this.#listeners = listeners;
  }

  /** Records how an import ended, for `close`. */
  finished(result: ImportResult | undefined): void {
    if (!result || result.failures.length > 0) this.#allSucceeded = false;
  }

  /**
   * Closes the clients. When every import succeeded, it first cancels the
   * upload sessions that the journal has listed for over a week, which no
   * run resumed.
   */
  async close(): Promise<void> {
    for (const client of this.#clients.values()) {
      if (this.#allSucceeded) await client.cancelRecordedUploads();
      client.close();
    }
    this.#clients.clear();
  }
}
