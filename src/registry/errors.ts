import { PpaLoadError } from "../errors.js";

/** One entry of the `errors` list a registry returns, per the distribution spec. */
export interface RegistryErrorDetail {
  code: string;
  message: string;
  detail?: unknown;
}

/** Statuses worth retrying: the registry or a proxy may answer later. */
const retryableStatuses = new Set([408, 429, 500, 502, 503, 504]);

/** A failed registry request, with the decoded error body. */
export class RegistryError extends PpaLoadError {
  readonly status: number;
  readonly method: string;
  readonly url: string;
  readonly errors: RegistryErrorDetail[];
  readonly retryable: boolean;
  /** Whether the response body reports that the request used plain HTTP on an HTTPS port. */
  readonly speaksHttps: boolean;

  constructor(init: {
    method: string;
    url: string;
    status: number;
    errors: RegistryErrorDetail[];
    body?: string;
    hint?: string;
    /** Operation the request belongs to, e.g. `uploading blob sha256:… of 12 bytes to ns/app`, put at the start of the message. */
    context?: string;
  }) {
    const what = init.errors.length
      ? init.errors.map((e) => `${e.code}: ${e.message}`).join("; ")
      : summarizeBody(init.body ?? "");
    const prefix = init.context ? `${init.context}: ` : "";
    super(
      "REGISTRY",
      `${prefix}${init.method} ${init.url} failed: ${init.status}, ${what}`,
      {
        hint: init.hint ?? hintFor(init.status, init.errors, init.body ?? ""),
      },
    );
    this.name = "RegistryError";
    this.status = init.status;
    this.method = init.method;
    this.url = init.url;
    this.errors = init.errors;
    this.retryable = retryableStatuses.has(init.status);
    this.speaksHttps = isHttpToHttpsError(init.body ?? "");
  }

  /** Whether the registry answered with this error code. */
  has(code: string): boolean {
    return this.errors.some((e) => e.code === code);
  }
}

/** Maximum characters of a non-JSON error body that a message quotes. */
const maxBodyExcerpt = 200;

/**
 * Returns the part of an error body that a message quotes: the title of an
 * HTML page, which proxies and load balancers send, else the page's text
 * without its tags, style sheets and scripts, else the start of the body.
 */
export function summarizeBody(body: string): string {
  if (/^\s*(<!doctype html|<html)/i.test(body)) {
    const title = /<title[^>]*>([\s\S]*?)<\/title>/i.exec(body)?.[1];
    const text = (title?.trim() ? title : body)
      .replace(/<(script|style)\b[\s\S]*?<\/\1\s*>/gi, " ")
      .replace(/<[^>]*>/g, " ")
      .replace(/&nbsp;/g, " ")
      .replace(/&lt;/g, "<")
      .replace(/&gt;/g, ">")
      .replace(/&quot;/g, '"')
      .replace(/&#39;/g, "'")
      .replace(/&amp;/g, "&");
    const excerpt = collapse(text);
    return excerpt ? `HTML page: ${excerpt}` : "an HTML page without text";
  }
  return collapse(body) || "no error body";
}

function collapse(text: string): string {
  return text.replace(/\s+/g, " ").trim().slice(0, maxBodyExcerpt);
}

/**
 * Checks whether a response body reports that a plain-HTTP request reached
 * an HTTPS port. Go's HTTPS servers, the distribution registry among them,
 * send the first text, and nginx the second.
 */
export function isHttpToHttpsError(body: string): boolean {
  return /client sent an http request to an https server|plain http request was sent to https port/i.test(
    body,
  );
}

function hintFor(
  status: number,
  errors: RegistryErrorDetail[],
  body: string,
): string | undefined {
  const codes = new Set(errors.map((e) => e.code));
  const messages = errors.map((e) => e.message).join(" ");
  if (isHttpToHttpsError(body)) {
    return "the registry speaks HTTPS; leave out --insecure, and give --ca-cert if a private CA signed its certificate";
  }
  if (status === 401 || codes.has("UNAUTHORIZED")) {
    return "log in with docker login REGISTRY, or give --username and --password-stdin";
  }
  // Registries report a full quota under different codes and statuses, so
  // the message decides.
  if (/quota/i.test(messages)) {
    return "the repository or project has reached its storage quota; free space, or ask the registry's administrator to raise the quota";
  }
  if (status === 403 || codes.has("DENIED")) {
    return "the account may not push to this namespace; check its permissions or quota";
  }
  if (codes.has("NAME_INVALID")) {
    return "the repository name breaks the registry's rules; check --namespace";
  }
  if (codes.has("NAME_UNKNOWN")) {
    return "the registry does not create repositories on push; create the repository first, or choose another --namespace";
  }
  if (codes.has("BLOB_UNKNOWN") || codes.has("MANIFEST_BLOB_UNKNOWN")) {
    return "the registry does not have a blob that the manifest references; upload the blobs again, then the manifest";
  }
  if (codes.has("BLOB_UPLOAD_UNKNOWN")) {
    return "the registry reports the upload session as unknown, for example because it timed out; run the import again";
  }
  if (codes.has("BLOB_UPLOAD_INVALID")) {
    return "the registry rejected the upload; run the import again, and if --chunk-size is set, try without it or with a larger value";
  }
  if (codes.has("DIGEST_INVALID") || codes.has("SIZE_INVALID")) {
    return "the bytes the registry received do not match the blob's digest or size; run the import again";
  }
  if (status === 413) {
    return "a proxy or the registry limits request size; raise that limit";
  }
  if (status === 429 || codes.has("TOOMANYREQUESTS")) {
    return "the registry is rate limiting; wait a few minutes and try again, or log in to an account with a higher limit";
  }
  return undefined;
}

/** Decodes a registry error body, which may be JSON per the spec, HTML or empty. */
export function decodeErrorBody(body: string): RegistryErrorDetail[] {
  try {
    const parsed = JSON.parse(body) as { errors?: unknown };
    if (!Array.isArray(parsed.errors)) return [];
    return parsed.errors
      .filter(
        (e): e is Record<string, unknown> =>
          typeof e === "object" && e !== null,
      )
      .map((e) => ({
        code: String(e.code ?? "UNKNOWN"),
        message: String(e.message ?? ""),
        detail: e.detail,
      }));
  } catch {
    return [];
  }
}

/** Removes user info and query secrets from a URL before it is printed. */
export function redactUrl(url: string): string {
  try {
    const parsed = new URL(url);
    parsed.username = "";
    parsed.password = "";
    for (const key of [...parsed.searchParams.keys()]) {
      if (/token|secret|password|signature|credential/i.test(key)) {
        parsed.searchParams.set(key, "REDACTED");
      } else if (key === "_state") {
        // Distribution's upload state: a long signed value of no use in a message.
        parsed.searchParams.set(key, "...");
      }
    }
    return parsed.toString();
  } catch {
    return url;
  }
}
