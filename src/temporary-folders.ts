import { rmSync } from "node:fs";

/** Temporary folders made in this process and not yet removed. */
const liveFolders = new Set<string>();

/**
 * Records a temporary folder, so that `removeTemporaryFoldersNow` removes it
 * when the process has to exit before its owner cleans up.
 */
export function trackTemporaryFolder(folder: string): void {
  liveFolders.add(folder);
}

/** Stops tracking a folder that its owner has removed. */
export function untrackTemporaryFolder(folder: string): void {
  liveFolders.delete(folder);
}

/**
 * Removes every tracked temporary folder at once, for a process that is
 * about to exit without waiting for their owners (a second Ctrl-C).
 * Returns how many folders it removed.
 */
export function removeTemporaryFoldersNow(): number {
  let removed = 0;
  for (const folder of liveFolders) {
    rmSync(folder, { recursive: true, force: true });
    liveFolders.delete(folder);
    removed += 1;
  }
  return removed;
}
