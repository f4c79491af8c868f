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

  constructor(init: {
    method: string;
    url: string;
    status: number;
    errors: RegistryErrorDetail[];
    body?: string;
    hint?: string;
  }) {
    const what = init.errors.length
      ? init.errors.map((e) => `${e.code}: ${e.message}`).join("; ")
      : (init.body ?? "").replace(/\s+/g, " ").trim().slice(0, 200) ||
        "no error body";
    super(
      "REGISTRY",
      `${init.method} ${init.url} failed: ${init.status}, ${what}`,
      {
        hint: init.hint ?? hintFor(init.status, init.errors),
      },
    );
    this.name = "RegistryError";
    this.status = init.status;
    this.method = init.method;
    this.url = init.url;
    this.errors = init.errors;
    this.retryable = retryableStatuses.has(init.status);
  }

  /** Whether the registry answered with this error code. */
  has(code: string): boolean {
    return this.errors.some((e) => e.code === code);
  }
}

function hintFor(
  status: number,
  errors: RegistryErrorDetail[],
): string | undefined {
  const codes = new Set(errors.map((e) => e.code));
  if (status === 401 || codes.has("UNAUTHORIZED")) {
    return "log in with docker login REGISTRY, or give --username and --password-stdin";
  }
  if (status === 403 || codes.has("DENIED")) {
    return "the account may not push to this namespace; check its permissions or quota";
  }
  if (codes.has("NAME_INVALID")) {
    return "the repository name breaks the registry's rules; check --namespace";
  }
  if (status === 413) {
    return "a proxy or the registry limits request size; raise that limit";
  }
  if (status === 429) return "the registry is rate limiting; try again later";
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
      }
    }
    return parsed.toString();
  } catch {
    return url;
  }
}
