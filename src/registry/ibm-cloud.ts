/**
 * Namespace rules of IBM Cloud Container Registry, checked before an import
 * so that a bad namespace fails before anything is read or uploaded.
 */

/** Hosts of IBM Cloud Container Registry: `icr.io`, regional and private hosts such as `us.icr.io` or `private.de.icr.io`, and the retired `registry.*.bluemix.net`. */
export function isIbmCloudRegistry(registry: string): boolean {
  const host = registry.replace(/:\d+$/, "").toLowerCase();
  return (
    host === "icr.io" ||
    host.endsWith(".icr.io") ||
    /^registry\.([a-z0-9-]+\.)*bluemix\.net$/.test(host)
  );
}

/**
 * Checks the first segment of `namespace`, which IBM Cloud Container
 * Registry treats as its namespace: 4 to 30 characters of lowercase letters,
 * digits and underscores, starting with a letter or digit. Returns the
 * problem, or undefined when the name is valid.
 */
export function ibmCloudNamespaceProblem(
  namespace: string,
): string | undefined {
  const name = namespace.split("/")[0];
  if (name.length < 4 || name.length > 30) {
    return `IBM Cloud Container Registry namespaces have 4 to 30 characters, and "${name}" has ${name.length}`;
  }
  if (!/^[a-z0-9_]+$/.test(name)) {
    return `IBM Cloud Container Registry namespaces contain only lowercase letters, digits and underscores, and "${name}" does not`;
  }
  if (!/^[a-z0-9]/.test(name)) {
    return `IBM Cloud Container Registry namespaces start with a letter or digit, and "${name}" does not`;
  }
  return undefined;
}
