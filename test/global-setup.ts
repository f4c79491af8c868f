import { mkdtempSync, rmSync } from "node:fs";
import { tmpdir } from "node:os";
import { join } from "node:path";

/**
 * Gives the test run a temporary folder of its own, through TMPDIR, which
 * the test workers and the CLI processes they start inherit, and removes it
 * afterwards, so archives and outputs that tests write do not pile up.
 */
export default function setup(): () => void {
  const folder = mkdtempSync(join(tmpdir(), "ppa-load-tests-"));
  const previous = process.env.TMPDIR;
  process.env.TMPDIR = folder;
  return () => {
    if (previous === undefined) delete process.env.TMPDIR;
    else process.env.TMPDIR = previous;
    rmSync(folder, { recursive: true, force: true });
  };
}
