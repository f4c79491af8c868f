/**
 * Stable error codes. Scripts and tests match on these, never on message text.
 */
export type ErrorCode =
  | "USAGE"
  | "ARCHIVE_UNREADABLE"
  | "IMAGE_TARBALL_INVALID"
  | "MANIFEST_INVALID"
  | "PLAN_INVALID"
  /** Not raised: an invalid target is PLAN_INVALID. Kept for programs that match on it. */
  | "REFERENCE_INVALID"
  | "CREDENTIALS"
  | "DOCKER"
  | "REGISTRY"
  | "CHART"
  | "TAG_EXISTS"
  | "ABORTED";

/** Process exit codes of the CLI. */
export const ExitCode = {
  success: 0,
  failure: 1,
  usage: 2,
  partial: 3,
  /** SIGINT or SIGTERM stopped the run: 128 + 2, as shells report SIGINT. */
  interrupted: 130,
} as const;

export interface PpaLoadErrorOptions {
  /** The next step for the user, printed after the message. */
  hint?: string;
  cause?: unknown;
  /** Each problem when one error reports several at once. */
  problems?: string[];
}

/** An error of this tool, with a stable code and the exit code the CLI uses. */
export class PpaLoadError extends Error {
  readonly code: ErrorCode;
  readonly hint?: string;
  readonly problems: string[];

  constructor(
    code: ErrorCode,
    message: string,
    options: PpaLoadErrorOptions = {},
  ) {
    super(message, { cause: options.cause });
    this.name = "PpaLoadError";
    this.code = code;
    this.hint = options.hint;
    this.problems = options.problems ?? [];
  }

  get exitCode(): number {
    return this.code === "USAGE" ? ExitCode.usage : ExitCode.failure;
  }
}

/**
 * Returns the error for work stopped by `signal`: its reason when that is an
 * `ABORTED` error, such as one naming the signal that stopped the run.
 */
export function cancelledError(
  signal: AbortSignal | undefined,
  cause?: unknown,
): PpaLoadError {
  const reason: unknown = signal?.reason;
  if (reason instanceof PpaLoadError && reason.code === "ABORTED")
    return reason;
  return new PpaLoadError("ABORTED", "the import was cancelled", { cause });
}

/** Returns the message of any thrown value. */
export function errorMessage(error: unknown): string {
  if (error instanceof Error) return error.message;
  return String(error);
}
