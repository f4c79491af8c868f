/**
 * Image references as the distribution project's reference grammar defines
 * them (github.com/distribution/reference, regexp.go), and the names this
 * tool publishes to.
 */

const pathComponent = "[a-z0-9]+(?:(?:[._]|__|[-]+)[a-z0-9]+)*";
const domainComponent = "(?:[a-zA-Z0-9]|[a-zA-Z0-9][a-zA-Z0-9-]*[a-zA-Z0-9])";
const domainName = `${domainComponent}(?:\\.${domainComponent})*`;
const ipv6 = "\\[(?:[a-fA-F0-9:]+)\\]";
const host = `(?:${domainName}|${ipv6})(?::[0-9]+)?`;

const pathComponentRe = new RegExp(`^${pathComponent}$`);
const hostRe = new RegExp(`^${host}$`);
const tagRe = /^[\w][\w.-]{0,127}$/;
const digestRe = /^[a-z0-9]+(?:[.+_-][a-z0-9]+)*:[a-zA-Z0-9=_-]{32,}$/;

/** Longest repository name, host included, that registries accept. */
export const maxNameLength = 255;

export interface ParsedReference {
  /** Registry host with optional port, when the name starts with one. */
  host?: string;
  /** Repository path without the host, e.g. `ibmcom/mq`. */
  path: string;
  tag?: string;
  digest?: string;
}

/**
 * Splits a reference such as `quay.io/org/app:1.0` into host, path, tag and
 * digest without validating the parts. The first component is a host only
 * when it contains `.` or `:` or is `localhost`, as Docker decides.
 */
export function parseReference(text: string): ParsedReference {
  let rest = text.trim();
  let digest: string | undefined;
  const at = rest.indexOf("@");
  if (at >= 0) {
    digest = rest.slice(at + 1);
    rest = rest.slice(0, at);
  }

  let tag: string | undefined;
  const colon = rest.lastIndexOf(":");
  if (colon > rest.lastIndexOf("/")) {
    tag = rest.slice(colon + 1);
    rest = rest.slice(0, colon);
  }

  let hostPart: string | undefined;
  const slash = rest.indexOf("/");
  if (slash > 0) {
    const first = rest.slice(0, slash);
    if (first.includes(".") || first.includes(":") || first === "localhost") {
      hostPart = first;
      rest = rest.slice(slash + 1);
    }
  }
  return { host: hostPart, path: rest, tag, digest };
}

/** Returns the reference as text, e.g. `host/path:tag`. */
export function formatReference(ref: ParsedReference): string {
  let text = ref.host ? `${ref.host}/${ref.path}` : ref.path;
  if (ref.tag) text += `:${ref.tag}`;
  if (ref.digest) text += `@${ref.digest}`;
  return text;
}

/** Returns why a repository path is invalid, or undefined when it is valid. */
export function checkRepositoryPath(path: string): string | undefined {
  if (path === "") return "the repository name is empty";
  if (path.split("/").includes("")) {
    return `"${path}" has an empty path component: it starts or ends with "/", or has "//"`;
  }
  for (const component of path.split("/")) {
    if (!pathComponentRe.test(component)) {
      const lower = component.toLowerCase();
      if (lower !== component && pathComponentRe.test(lower)) {
        return `"${component}" has uppercase letters; repository names are lowercase`;
      }
      return `"${component}" is not a valid path component (lowercase letters, digits, and separators ".", "_", "__" or "-" between them)`;
    }
  }
  return undefined;
}

/** Returns why a tag is invalid, or undefined when it is valid. */
export function checkTag(tag: string): string | undefined {
  if (tagRe.test(tag)) return undefined;
  if (tag.length > 128) return `tag "${tag}" is longer than 128 characters`;
  if (tag.includes("+")) {
    return `tag "${tag}" contains "+", which tags may not contain`;
  }
  if (/^[.-]/.test(tag)) {
    return `tag "${tag}" starts with "${tag[0]}"; tags start with a letter, digit or "_"`;
  }
  return `tag "${tag}" may only contain letters, digits, "_", "." and "-"`;
}

/** Returns why a registry host is invalid, or undefined when it is valid. */
export function checkHost(value: string): string | undefined {
  if (hostRe.test(value)) return undefined;
  return `"${value}" is not a registry host (expected HOST or HOST:PORT, e.g. registry.example.com or 127.0.0.1:5000)`;
}

/**
 * Returns why a `--registry` value is invalid, with the fix for a URL or a
 * value with a path, or undefined when it is valid.
 */
export function checkRegistryOption(value: string): string | undefined {
  const problem = checkHost(value);
  if (!problem) return undefined;
  const url = /^([a-z][a-z0-9+.-]*):\/\/([^/]*)(.*)$/i.exec(value);
  const [host, rest] = url ? [url[2], url[3]] : value.split(/(?=\/)/, 2);
  if (checkHost(host) !== undefined) return problem;
  // The API root /v2/ is not part of a namespace.
  const path = (rest ?? "").replace(/^\/+|\/+$/g, "").replace(/^v2(\/|$)/, "");
  const fix = `write --registry ${host}${path ? ` --namespace ${path}` : ""}`;
  if (url) {
    return `${problem}: ${fix}, without "${url[1]}://"; ppa-load uses HTTPS, and plain HTTP for a loopback host or with --insecure`;
  }
  return `${problem}: ${fix}`;
}

/** Returns why a full reference is invalid, or undefined when it is valid. */
export function checkReference(text: string): string | undefined {
  const ref = parseReference(text);
  if (ref.host) {
    const problem = checkHost(ref.host);
    if (problem) return problem;
  }
  const pathProblem = checkRepositoryPath(ref.path);
  if (pathProblem) return pathProblem;
  if (ref.tag !== undefined) {
    const tagProblem = checkTag(ref.tag);
    if (tagProblem) return tagProblem;
  }
  if (ref.digest !== undefined && !digestRe.test(ref.digest)) {
    return `"${ref.digest}" is not a valid digest`;
  }
  const name = ref.host ? `${ref.host}/${ref.path}` : ref.path;
  if (name.length > maxNameLength) {
    return `the name "${name}" is longer than ${maxNameLength} characters`;
  }
  return undefined;
}

/** Strips a registry host from a source name: `quay.io/a/b` becomes `a/b`. */
export function stripHost(path: string): string {
  return parseReference(path).path;
}

/**
 * Returns the repository a source repository is published to:
 * `REGISTRY/NAMESPACE/PATH`, where PATH has any registry host removed.
 */
export function targetRepository(
  registry: string,
  namespace: string,
  sourceRepository: string,
): string {
  return `${registry}/${namespace}/${stripHost(sourceRepository)}`;
}
