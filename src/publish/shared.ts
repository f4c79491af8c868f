import { PpaLoadError, errorMessage } from "../errors.js";
import type {
  Failure,
  ImportEvent,
  ImportResult,
  PublishedList,
  PublishedReference,
} from "../events.js";
import type { PlannedList, PlannedReference } from "../plan.js";
import type { ListMember } from "./manifest-list.js";

/**
 * Returns the repository path the registry API uses: the target without its
 * registry host. An OCI layout has no host, so its targets stay as they are.
 */
export function apiRepository(
  targetRepository: string,
  registry: string,
): string {
  const prefix = registry ? `${registry}/` : "";
  return targetRepository.startsWith(prefix)
    ? targetRepository.slice(prefix.length)
    : targetRepository;
}

/** Turns a caught error into a failure of `item`, keeping a PpaLoadError's code and hint. */
export function failureOf(
  item: string,
  error: unknown,
  fallbackCode = "UNEXPECTED",
): Failure {
  if (error instanceof PpaLoadError) {
    return { item, code: error.code, message: error.message, hint: error.hint };
  }
  return { item, code: fallbackCode, message: errorMessage(error) };
}

/** Records a failure in the result and reports it as an event. */
export function reportFailure(
  result: ImportResult,
  emit: (event: ImportEvent) => void,
  failure: Failure,
): void {
  result.failures.push(failure);
  emit({ type: "failure", failure });
}

/**
 * Runs `task` for each item, `concurrency` at a time. No task starts after
 * `signal` aborts or a task rejects, and the tasks already running are
 * waited for, so that none of them reports anything after this returns.
 * Then it rejects with the first task's error, or with the abort reason.
 */
export async function forEachConcurrently<T>(
  items: T[],
  concurrency: number,
  task: (item: T) => Promise<void>,
  signal?: AbortSignal,
): Promise<void> {
  const queue = [...items];
  let failed = false;
  const work = async () => {
    for (let item = queue.shift(); item !== undefined; item = queue.shift()) {
      if (failed || signal?.aborted) return;
      try {
        await task(item);
      } catch (error) {
        failed = true;
        throw error;
      }
    }
  };
  const workers = Math.max(1, Math.min(concurrency, queue.length));
  const settled = await Promise.allSettled(
    Array.from({ length: workers }, work),
  );
  for (const outcome of settled) {
    if (outcome.status === "rejected") throw outcome.reason;
  }
  signal?.throwIfAborted();
}

/**
 * Pairs each member of a planned list with its published reference, and
 * returns the failure to report when a member was not published.
 */
export function listMembers(
  list: PlannedList,
  result: ImportResult,
):
  | { members: { member: PlannedReference; published: PublishedReference }[] }
  | { failure: Failure } {
  const target = `${list.target.repository}:${list.target.tag}`;
  const found = list.members.map((member) => ({
    member,
    published: result.published.find(
      (p) => p.target === `${member.target.repository}:${member.target.tag}`,
    ),
  }));
  const missing = found.filter((m) => !m.published);
  if (missing.length > 0) {
    return {
      failure: {
        item: target,
        code: "REGISTRY",
        message: `${target}: the manifest list was not written because ${missing.map((m) => m.member.source).join(", ")} failed to publish`,
      },
    };
  }
  return {
    members: found.map(({ member, published }) => ({
      member,
      published: published!,
    })),
  };
}

/** Returns the entries of a manifest list over published members. */
export function listEntries(
  members: { member: PlannedReference; published: PublishedReference }[],
): ListMember[] {
  return members.map(({ member, published }) => ({
    mediaType: published.mediaType,
    digest: published.digest,
    size: published.size,
    platform: member.platform,
  }));
}

/** Records a written manifest list in the result and reports it as an event. */
export function reportList(
  list: PlannedList,
  written: { digest: string; mediaType: string; previousDigest?: string },
  result: ImportResult,
  emit: (event: ImportEvent) => void,
): void {
  const published: PublishedList = {
    source: list.source,
    target: `${list.target.repository}:${list.target.tag}`,
    digest: written.digest,
    mediaType: written.mediaType,
    platforms: list.members.map((m) => m.platform),
    ...(written.previousDigest
      ? { previousDigest: written.previousDigest }
      : {}),
  };
  result.lists.push(published);
  emit({ type: "list-pushed", list: published });
}

/**
 * Compares the digest a tag points at with the digest about to be put
 * there. Returns the old digest when the tag moves, and throws
 * `TAG_EXISTS` instead when `noOverwrite` forbids moving it.
 */
export function checkTagMove(
  target: string,
  previous: string | undefined,
  next: string,
  noOverwrite: boolean | undefined,
): string | undefined {
  if (previous === undefined || previous === next) return undefined;
  if (noOverwrite) {
    throw new PpaLoadError(
      "TAG_EXISTS",
      `${target} already points at ${previous}, and publishing would move it to ${next}`,
      {
        hint: "drop --no-overwrite to move the tag, or publish under another namespace",
      },
    );
  }
  return previous;
}
