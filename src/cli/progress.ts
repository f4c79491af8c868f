import type { Ora, Options as OraOptions } from "ora";

import type { ImportEvent, Phase } from "../events.js";
import { printable, withSubject } from "../text.js";
import { formatDuration, formatSize } from "./format.js";

/** Progress of one image that is being pushed. */
interface ImageProgress {
  target: string;
  digests: string[];
  size: number;
  started: number;
}

/** Progress of one blob: bytes sent so far, or its whole size once placed. */
interface BlobProgress {
  size: number;
  done: number;
}

/**
 * Keeps the progress of an import from its events: bytes of the archive
 * read, and bytes of each image's blobs placed. Time comes in as an
 * argument, so tests can drive it.
 */
export class ProgressState {
  phase: Phase | undefined;
  message = "";
  #phaseStarted = 0;
  #archive = "";
  #read = { bytes: 0, total: 0 };
  #planned = 0;
  #published = 0;
  readonly #images = new Map<string, ImageProgress>();
  readonly #blobs = new Map<string, BlobProgress>();
  /** The image tarball being read. */
  #tarball: { path: string; size: number } | undefined;

  /** Applies an event; returns true when the phase changed. */
  apply(event: ImportEvent, now: number): boolean {
    switch (event.type) {
      case "phase":
        if (event.phase === "read") {
          this.#archive = event.message.replace(/^reading /, "");
        }
        this.phase = event.phase;
        this.message = event.message;
        this.#phaseStarted = now;
        return true;
      case "read-progress":
        this.#read = { bytes: event.bytesRead, total: event.bytesTotal };
        break;
      case "entry":
        if (event.kind === "image") {
          this.#tarball = { path: event.path, size: event.size };
        }
        break;
      case "plan":
        this.#planned = event.plan.references.length;
        break;
      case "reference-started":
        this.#images.set(event.target, {
          target: event.target,
          digests: event.blobs.map((blob) => blob.digest),
          size: event.blobs.reduce((sum, blob) => sum + blob.size, 0),
          started: now,
        });
        for (const blob of event.blobs) {
          if (!this.#blobs.has(blob.digest)) {
            this.#blobs.set(blob.digest, { size: blob.size, done: 0 });
          }
        }
        break;
      case "blob-progress": {
        const blob = this.#blobs.get(event.digest) ?? {
          size: event.size,
          done: 0,
        };
        blob.done = Math.max(blob.done, Math.min(event.bytesSent, blob.size));
        this.#blobs.set(event.digest, blob);
        break;
      }
      case "blob-placed":
        this.#blobs.set(event.digest, { size: event.size, done: event.size });
        break;
      case "reference-pushed":
        this.#published += 1;
        this.#images.delete(event.reference.target);
        break;
      case "failure":
        this.#images.delete(event.failure.item);
        break;
      default:
        break;
    }
    return false;
  }

  /** Returns one line on the current phase, with sizes, rate and time left where known. */
  statusLine(now: number): string {
    const seconds = (now - this.#phaseStarted) / 1000;
    if (this.phase === "read" && this.#read.total > 0) {
      const { bytes, total } = this.#read;
      return `reading ${this.#archive}: ${amounts(bytes, total, seconds)}`;
    }
    if (this.phase === "push" && this.#planned > 0) {
      // Most blobs may have gone up while the archive was read, so a rate
      // over this phase alone would mislead. Each image line has its own.
      return `pushing: ${this.#published} of ${this.#planned} images published, ${formatSize(this.#pushBytes())} of blobs in place`;
    }
    return this.message;
  }

  /**
   * Lines under the status line. While the archive is read: the image
   * tarball being read, and the bytes uploaded meanwhile. While pushing: a
   * line per image in flight, oldest first, at most `limit` of them.
   */
  imageLines(now: number, limit: number): string[] {
    if (this.phase === "read") {
      const lines: string[] = [];
      if (this.#tarball) {
        lines.push(
          `  reading ${this.#tarball.path} (${formatSize(this.#tarball.size)})`,
        );
      }
      const sent = this.#pushBytes();
      if (sent > 0) {
        lines.push(`  uploaded while reading: ${formatSize(sent)}`);
      }
      return lines;
    }
    const images = [...this.#images.values()];
    const lines = images.slice(0, limit).map((image) => {
      const done = image.digests.reduce(
        (sum, digest) => sum + (this.#blobs.get(digest)?.done ?? 0),
        0,
      );
      const seconds = (now - image.started) / 1000;
      return `  ${image.target}  ${amounts(done, image.size, seconds)}`;
    });
    if (images.length > limit) {
      lines.push(`  and ${images.length - limit} more`);
    }
    return lines;
  }

  #pushBytes(): number {
    let sum = 0;
    for (const blob of this.#blobs.values()) sum += blob.done;
    return sum;
  }
}

/** Formats `done of total (percent), rate, time left` from the elapsed seconds. */
function amounts(done: number, total: number, seconds: number): string {
  const percent = total > 0 ? Math.floor((100 * done) / total) : 100;
  const parts = [`${formatSize(done)} of ${formatSize(total)} (${percent}%)`];
  if (seconds >= 1 && done > 0) {
    const rate = done / seconds;
    parts.push(`${formatSize(rate)}/s`);
    if (done < total)
      parts.push(`${formatDuration((total - done) / rate)} left`);
  }
  return parts.join(", ");
}

export interface ProgressOptions {
  /** Stream for progress: standard error. */
  stream: NodeJS.WriteStream;
  /** Print only errors; the summary goes to standard output either way. */
  quiet?: boolean;
  /** Print every registry request. */
  verbose?: boolean;
  /** Colour the spinner; false when NO_COLOR is set. */
  color?: boolean;
  /** Seconds between progress lines when the stream is not a terminal. */
  intervalSeconds?: number;
  /**
   * Creates the spinner. {@link ProgressRenderer.create} loads ora for a
   * terminal; without it the renderer prints plain lines.
   */
  spinner?: (options: OraOptions) => Ora;
}

/**
 * Returns whether a spinner can be drawn on `stream`: a terminal that
 * reports its width. Some pseudo-terminals report zero columns, in which ora cannot lay
 * out a spinner.
 */
function drawsSpinner(stream: NodeJS.WriteStream): boolean {
  return stream.isTTY === true && (stream.columns ?? 0) > 0;
}

/** Image lines shown under the spinner at most. */
const maxImageLines = 6;

/**
 * Draws import events on standard error. On a terminal, an ora spinner
 * shows the phase with sizes, rate and time left, and a line per image in
 * flight. Elsewhere (CI logs, pipes) it prints plain lines: each phase,
 * each result, and a progress line every few seconds, never spinner frames.
 */
export class ProgressRenderer {
  readonly #stream: NodeJS.WriteStream;
  readonly #quiet: boolean;
  readonly #verbose: boolean;
  readonly #spinner?: Ora;
  readonly #state = new ProgressState();
  readonly #timer?: NodeJS.Timeout;
  #lastStatus = "";

  constructor(options: ProgressOptions) {
    this.#stream = options.stream;
    this.#quiet = options.quiet ?? false;
    this.#verbose = options.verbose ?? false;
    if (this.#quiet) return;
    // ora turns itself off where CI is set or TERM is dumb, and then the
    // plain lines serve better than its one line per phase.
    const spinner =
      options.spinner && drawsSpinner(this.#stream)
        ? options.spinner({
            stream: this.#stream,
            discardStdin: false,
            color: options.color === false ? false : "cyan",
          })
        : undefined;
    if (spinner?.isEnabled) {
      this.#spinner = spinner;
      this.#timer = setInterval(() => this.#refresh(), 200);
    } else {
      const seconds = options.intervalSeconds ?? 5;
      this.#timer = setInterval(() => this.#printStatus(), seconds * 1000);
    }
    this.#timer.unref();
  }

  /**
   * Creates a renderer, loading ora only for a terminal: it adds several
   * megabytes to the process, which a run in a pipe or a CI log never uses.
   */
  static async create(options: ProgressOptions): Promise<ProgressRenderer> {
    if (options.quiet || options.spinner || !drawsSpinner(options.stream)) {
      return new ProgressRenderer(options);
    }
    const { default: ora } = await import("ora");
    return new ProgressRenderer({ ...options, spinner: ora });
  }

  /** Prints a heading, such as the archive a run over several starts on. */
  heading(text: string): void {
    if (this.#quiet) return;
    this.#line(text);
  }

  handle = (event: ImportEvent): void => {
    const now = Date.now();
    const phaseChanged = this.#state.apply(event, now);
    if (event.type === "warning") {
      if (!this.#quiet) this.#line(`warning: ${event.message}`);
      return;
    }
    if (event.type === "failure") {
      this.#line(
        `error: ${event.failure.message}${event.failure.hint ? `\n  hint: ${event.failure.hint}` : ""}`,
      );
      return;
    }
    if (this.#quiet) return;
    if (phaseChanged) {
      this.#lastStatus = "";
      if (event.type === "phase" && event.phase === "done") {
        this.#spinner?.stop();
      } else if (this.#spinner) {
        this.#spinner.start(this.#spinnerText(now));
      } else {
        this.#line(this.#state.message);
      }
      return;
    }
    const line = resultLine(event, this.#verbose);
    if (line !== undefined) this.#line(line);
  };

  stop(): void {
    clearInterval(this.#timer);
    this.#spinner?.stop();
  }

  #spinnerText(now: number): string {
    return printable(
      [
        this.#state.statusLine(now),
        ...this.#state.imageLines(now, maxImageLines),
      ].join("\n"),
    );
  }

  #refresh(): void {
    if (this.#spinner?.isSpinning) {
      this.#spinner.text = this.#spinnerText(Date.now());
    }
  }

  /** Prints the status line when it adds to the phase's message. */
  #printStatus(): void {
    const phase = this.#state.phase;
    if (phase !== "read" && phase !== "push") return;
    const status = this.#state.statusLine(Date.now());
    if (status === this.#state.message || status === this.#lastStatus) return;
    this.#lastStatus = status;
    this.#line(`  progress: ${status}`);
  }

  #line(raw: string): void {
    const text = printable(raw);
    if (this.#spinner?.isSpinning) {
      this.#spinner.clear();
      this.#stream.write(`${text}\n`);
      this.#spinner.render();
    } else {
      this.#stream.write(`${text}\n`);
    }
  }
}

/** Returns the line that reports a finished step, or undefined for none. */
function resultLine(event: ImportEvent, verbose: boolean): string | undefined {
  switch (event.type) {
    case "tarball-loaded":
      return `  read ${event.tarball}: ${event.images.map((i) => i.repoTags.join(", ") || i.imageId).join("; ")}`;
    case "tarball-failed":
      return `  failed to read ${withSubject(event.tarball, event.message)}`;
    case "reference-pushed":
      return `  published ${event.reference.target} ${event.reference.digest}`;
    case "list-pushed":
      return `  wrote manifest list ${event.list.target} ${event.list.digest}`;
    case "chart-written":
      return `  wrote ${event.chart.path}`;
    case "upload-resume":
      return event.outcome === "resumed"
        ? `  resuming blob ${event.digest} in ${event.repository} at ${formatSize(event.offset)} of ${formatSize(event.size)}`
        : `  the registry no longer holds the earlier upload of blob ${event.digest} in ${event.repository}; uploading it from the start`;
    case "request":
      return verbose
        ? `  ${event.method} ${event.url} ${event.status}`
        : undefined;
    default:
      return undefined;
  }
}
