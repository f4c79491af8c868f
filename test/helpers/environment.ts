import { existsSync } from "node:fs";
import { resolve } from "node:path";
import { fileURLToPath } from "node:url";

export const repoRoot = fileURLToPath(new URL("../..", import.meta.url));

/**
 * The folder of real-world PPA archives. `PPA_LOAD_CORPUS` points elsewhere;
 * the default is the folder shipped next to this repository.
 */
export const corpusDir = resolve(
  repoRoot,
  process.env.PPA_LOAD_CORPUS ?? "../shared/corpus",
);

const inCI = Boolean(process.env.CI);

/**
 * Whether the corpus is present. In CI a missing corpus fails the suite
 * instead of skipping it, so a broken checkout cannot pass silently.
 */
export function corpusAvailable(): boolean {
  if (existsSync(corpusDir)) return true;
  if (inCI) {
    throw new Error(
      `the corpus folder ${corpusDir} is missing; set PPA_LOAD_CORPUS to its path`,
    );
  }
  return false;
}

export interface Services {
  dockerHost: string;
  registry: string;
  authRegistry: string;
  authUser: string;
  authPassword: string;
}

/**
 * The Docker Engine and registries that test/services/services.sh starts.
 * Missing services fail the suite in CI and skip it elsewhere.
 */
export function services(): Services | undefined {
  const env = process.env;
  const found = {
    dockerHost: env.DOCKER_HOST ?? "",
    registry: env.PPA_TEST_REGISTRY ?? "",
    authRegistry: env.PPA_TEST_AUTH_REGISTRY ?? "",
    authUser: env.PPA_TEST_AUTH_USER ?? "",
    authPassword: env.PPA_TEST_AUTH_PASSWORD ?? "",
  };
  if (Object.values(found).every(Boolean)) return found;
  if (inCI) {
    throw new Error(
      "DOCKER_HOST and PPA_TEST_* are not set; start the services with: source test/services/services.sh && services_start",
    );
  }
  return undefined;
}

/** A namespace no other test run uses, so runs never see each other's tags. */
let namespaceCount = 0;

export function uniqueNamespace(prefix: string): string {
  namespaceCount += 1;
  return `${prefix}-${process.pid}-${Date.now().toString(36)}-${namespaceCount}`;
}
