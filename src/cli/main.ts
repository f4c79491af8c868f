import {
  Command,
  CommanderError,
  InvalidArgumentError,
  Option,
} from "commander";
import { readFileSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { dirname, resolve } from "node:path";
import { text } from "node:stream/consumers";

import { ExitCode, PpaLoadError } from "../errors.js";
import type { ImportResult } from "../events.js";
import {
  type ImportOptions,
  checkOptions,
  pemCertificateProblem,
  importArchive,
} from "../import.js";
import { removeTemporaryFoldersNow } from "../temporary-folders.js";
import { ImportSession } from "../session.js";
import { countOf, printable } from "../text.js";
import { dryRunImport } from "../dry-run.js";
import { formatInspection, runInspect } from "./inspect-command.js";
import type { CliIO } from "./io.js";
import { JsonReporter } from "./json.js";
import { ProgressRenderer } from "./progress.js";
import {
  formatBulkSummary,
  formatDryRun,
  formatError,
  formatSummary,
} from "./render.js";

export type { CliIO } from "./io.js";

interface ImportFlags {
  archive?: string[];
  archiveList?: string;
  json?: boolean;
  dryRun?: boolean;
  namespace: string;
  registry?: string;
  outputDir: string;
  username?: string;
  passwordStdin?: boolean;
  insecure?: boolean;
  caCert?: string;
  docker?: boolean;
  compression?: "gzip" | "none";
  compressionLevel?: number;
  concurrency?: number;
  chunkSize?: number;
  requestTimeout?: number;
  tempDir?: string;
  rewriteValues: boolean;
  keepOriginalCharts?: boolean;
  chartmuseumUri?: string;
  chartmuseumUser?: string;
  chartmuseumPassword?: string;
  chartmuseumPasswordStdin?: boolean;
  chartmuseumToken?: string;
  force?: boolean;
  chartRegistry?: string;
  mapPlusInTags?: string;
  overwrite: boolean;
  quiet?: boolean;
  verbose?: boolean;
}

/** Parses a whole number option, failing with the option's name. */
function wholeNumber(option: string) {
  return (value: string): number => {
    if (!/^\d+$/.test(value)) {
      throw new InvalidArgumentError(
        `${option} needs a whole number, not "${value}"`,
      );
    }
    return Number(value);
  };
}

/** Maximum timer Node.js can set, in whole seconds: 2^31 - 1 milliseconds. */
const maxTimeoutSeconds = Math.floor((2 ** 31 - 1) / 1000);

/** Parses a whole number above 0, failing with the option's name. */
function positiveNumber(option: string) {
  return (value: string): number => {
    if (!/^\d+$/.test(value) || Number(value) === 0) {
      throw new InvalidArgumentError(
        `${option} needs a whole number above 0, not "${value}"`,
      );
    }
    return Number(value);
  };
}

const sizeUnits: Record<string, number> = {
  "": 1,
  k: 1024,
  kib: 1024,
  m: 1024 ** 2,
  mib: 1024 ** 2,
  g: 1024 ** 3,
  gib: 1024 ** 3,
};

/** Parses a byte size such as `5242880`, `512KiB` or `16M` (binary units). */
export function parseByteSize(value: string): number {
  const match = /^(\d+)\s*([a-z]*)$/i.exec(value.trim());
  const unit = match ? sizeUnits[match[2].toLowerCase()] : undefined;
  if (!match || unit === undefined) {
    throw new InvalidArgumentError(
      `"${value}" is not a size; write bytes, or a number with KiB, MiB or GiB, e.g. 16MiB`,
    );
  }
  return Number(match[1]) * unit;
}

function version(): string {
  const url = new URL("../../package.json", import.meta.url);
  return (JSON.parse(readFileSync(url, "utf8")) as { version: string }).version;
}

async function readPassword(
  stdin: NodeJS.ReadableStream,
  option: string,
): Promise<string> {
  const value = (await text(stdin)).replace(/\r?\n$/, "");
  if (!value) {
    throw new PpaLoadError(
      "USAGE",
      `${option} was given but standard input was empty`,
      {
        hint: `pipe the password in, e.g. printf %s "$PASSWORD" | ppa-load ... ${option}`,
      },
    );
  }
  return value;
}

async function readCaCert(path: string): Promise<Buffer> {
  let pem: Buffer;
  try {
    pem = await readFile(path);
  } catch (error) {
    throw new PpaLoadError(
      "USAGE",
      `cannot read the CA certificate ${path}: ${(error as Error).message}`,
      { hint: "give --ca-cert the path of a PEM file" },
    );
  }
  const problem = pemCertificateProblem(pem);
  if (problem) {
    throw new PpaLoadError("USAGE", `--ca-cert ${path} ${problem}`, {
      hint: "give the CA certificate in PEM form; convert a DER file with openssl x509 -inform der -in FILE -out ca.pem",
    });
  }
  return pem;
}

/**
 * Turns the first SIGINT or SIGTERM into a cancellation, so that uploads
 * stop, temporary files are removed and the summary is printed. A second
 * signal removes the temporary folders and exits at once. Returns a
 * function that removes the handlers.
 */
function cancelOnSignals(
  controller: AbortController,
  stderr: NodeJS.WriteStream,
  command: "import" | "inspect" = "import",
): () => void {
  const noun = command === "import" ? "import" : "inspection";
  let received = 0;
  const onSignal = (signal: NodeJS.Signals) => {
    received += 1;
    if (received > 1) {
      const removed = removeTemporaryFoldersNow();
      stderr.write(
        `${signal} again: quitting at once${removed > 0 ? `, after removing ${countOf(removed, "temporary folder")}` : ""}${command === "import" ? "; run the same command again to finish the import" : ""}\n`,
      );
      process.exit(ExitCode.interrupted);
    }
    stderr.write(
      command === "import"
        ? `\n${signal}: stopping after the requests in flight; send it again to quit at once\n`
        : `\n${signal}: stopping the inspection; send it again to quit at once\n`,
    );
    controller.abort(
      new PpaLoadError("ABORTED", `the ${noun} was stopped by ${signal}`),
    );
  };
  process.on("SIGINT", onSignal);
  process.on("SIGTERM", onSignal);
  return () => {
    process.off("SIGINT", onSignal);
    process.off("SIGTERM", onSignal);
  };
}

/**
 * Stops the run when standard output or error is a pipe whose reader has
 * gone (EPIPE, as with `| head`), as SIGPIPE stops other tools, so that
 * temporary files are removed. The listeners stay, so that later writes to
 * the closed stream do not throw.
 */
function stopOnClosedOutput(
  controller: AbortController,
  io: CliIO,
  noun: string,
): void {
  const onError = (error: NodeJS.ErrnoException) => {
    if (controller.signal.aborted) return;
    controller.abort(
      new PpaLoadError(
        "ABORTED",
        `the ${noun} was stopped because its output could not be written (${error.code ?? error.message})`,
      ),
    );
  };
  io.stdout.on("error", onError);
  io.stderr.on("error", onError);
}

/** Returns the exit code of one archive's import. */
function exitCodeOf(result: ImportResult, aborted: boolean): number {
  if (aborted) return ExitCode.interrupted;
  if (result.failures.length === 0) return ExitCode.success;
  const published =
    result.published.length + result.lists.length + result.charts.length;
  return published > 0 ? ExitCode.partial : ExitCode.failure;
}

/**
 * Returns the exit code of a run over several archives: success when every
 * archive succeeded, usage when every one had invalid options, failure when
 * none published anything, partial between.
 */
export function combinedExitCode(codes: number[]): number {
  if (codes.includes(ExitCode.interrupted)) return ExitCode.interrupted;
  if (codes.every((code) => code === ExitCode.success)) return ExitCode.success;
  if (codes.every((code) => code === ExitCode.usage)) return ExitCode.usage;
  if (
    codes.every((code) => code === ExitCode.failure || code === ExitCode.usage)
  ) {
    return ExitCode.failure;
  }
  return ExitCode.partial;
}

/**
 * Reads the archives of --archive-list: one path per line, with # comments
 * and blank lines ignored. Returns each path with the list line that names it.
 */
async function readArchiveList(
  file: string,
): Promise<{ path: string; where: string }[]> {
  let text: string;
  try {
    text = await readFile(file, "utf8");
  } catch (error) {
    throw new PpaLoadError(
      "USAGE",
      `cannot read the archive list ${file}: ${(error as Error).message}`,
      {
        hint: "give --archive-list a text file with one archive path per line",
      },
    );
  }
  const base = dirname(resolve(file));
  return text
    .split(/\r?\n/)
    .map((line, index) => ({ line: line.trim(), number: index + 1 }))
    .filter(({ line }) => line !== "" && !line.startsWith("#"))
    .map(({ line, number }) => ({
      path: resolve(base, line),
      where: `line ${number} of ${file}`,
    }));
}

/** Points the hint of an archive that cannot be opened at the list line that names it. */
function withListLine(error: unknown, where: string | undefined): unknown {
  if (
    where === undefined ||
    !(error instanceof PpaLoadError) ||
    error.code !== "ARCHIVE_UNREADABLE" ||
    !/^archive not found: |is a folder, not an archive$/.test(error.message)
  ) {
    return error;
  }
  return new PpaLoadError(error.code, `${error.message} (${where})`, {
    cause: error,
    hint: `correct ${where}`,
  });
}

async function runImport(flags: ImportFlags, io: CliIO): Promise<number> {
  const json = flags.json
    ? new JsonReporter({ stream: io.stdout, verbose: flags.verbose })
    : undefined;
  const renderer = json
    ? undefined
    : await ProgressRenderer.create({
        stream: io.stderr,
        quiet: flags.quiet,
        verbose: flags.verbose,
        color: !("NO_COLOR" in io.env) || io.env.NO_COLOR === "",
      });
  const controller = new AbortController();
  const removeHandlers = cancelOnSignals(controller, io.stderr);
  stopOnClosedOutput(controller, io, "import");
  const session = new ImportSession();
  const reportFatal = (caught: unknown, exitCode: number, archive = "") => {
    const error =
      caught instanceof PpaLoadError &&
      caught.code === "ABORTED" &&
      !caught.hint
        ? new PpaLoadError("ABORTED", caught.message, {
            cause: caught,
            hint: "run the same command again to finish the import; what is already in place is not uploaded again",
          })
        : caught;
    renderer?.stop();
    if (json) {
      json.startArchive(archive);
      json.fatal(error, exitCode, {
        registry: flags.registry ?? "",
        namespace: flags.namespace,
      });
    } else {
      io.stderr.write(`${printable(formatError(error))}\n`);
    }
  };
  /** The line of --archive-list that names each archive it lists. */
  const listedAt = new Map<string, string>();
  try {
    let common: Omit<ImportOptions, "archive">;
    let archives: string[];
    try {
      const listed = flags.archiveList
        ? await readArchiveList(flags.archiveList)
        : [];
      for (const { path, where } of listed) listedAt.set(path, where);
      archives = [...(flags.archive ?? []), ...listed.map(({ path }) => path)];
      if (archives.length === 0) {
        throw new PpaLoadError(
          "USAGE",
          "no archive given: use --archive FILE (several times for several archives) or --archive-list FILE",
        );
      }
      common = await importOptionsOf(flags, io);
      // Options that every archive shares are checked once, before any
      // archive is read, so that a typo stops the run with exit code 2.
      checkOptions({ ...common, archive: archives[0] });
    } catch (error) {
      const code =
        error instanceof PpaLoadError ? error.exitCode : ExitCode.failure;
      reportFatal(error, code);
      return code;
    }

    const outcomes: { archive: string; exitCode: number }[] = [];
    for (const [index, archive] of archives.entries()) {
      if (controller.signal.aborted) break;
      json?.startArchive(archive);
      if (archives.length > 1) {
        renderer?.heading(`[${index + 1}/${archives.length}] ${archive}`);
      }
      let exitCode: number;
      try {
        if (flags.dryRun) {
          const checked = await dryRunImport({
            ...common,
            archive,
            onEvent: renderer?.handle,
            signal: controller.signal,
          });
          exitCode = checked.inspection.importable
            ? ExitCode.success
            : ExitCode.failure;
          renderer?.stop();
          io.stdout.write(
            json
              ? `${JSON.stringify({ ...checked, exitCode })}\n`
              : printable(
                  `${formatInspection(checked.inspection)}\n${formatDryRun(checked, { noOverwrite: common.noOverwrite, docker: common.docker })}\n`,
                ),
          );
          outcomes.push({ archive, exitCode });
          continue;
        }
        const result = await importArchive({
          ...common,
          archive,
          session,
          onEvent: json?.handle ?? renderer?.handle,
          signal: controller.signal,
        });
        exitCode = exitCodeOf(result, controller.signal.aborted);
        renderer?.stop();
        if (json) json.summary(result, exitCode);
        else {
          const heading = archives.length > 1 ? `${archive}:\n` : "";
          io.stdout.write(printable(`${heading}${formatSummary(result)}\n`));
        }
      } catch (error) {
        exitCode = controller.signal.aborted
          ? ExitCode.interrupted
          : error instanceof PpaLoadError
            ? error.exitCode
            : ExitCode.failure;
        reportFatal(
          withListLine(error, listedAt.get(archive)),
          exitCode,
          archive,
        );
      }
      outcomes.push({ archive, exitCode });
    }
    const exitCode = combinedExitCode(outcomes.map((o) => o.exitCode));
    if (archives.length > 1) {
      if (json && flags.dryRun) {
        io.stdout.write(
          `${JSON.stringify({ archives: outcomes, exitCode })}\n`,
        );
      } else if (json) json.bulkSummary(outcomes, exitCode);
      else
        io.stdout.write(
          printable(`${formatBulkSummary(outcomes, archives)}\n`),
        );
    }
    return exitCode;
  } finally {
    renderer?.stop();
    await session.close().catch(() => undefined);
    removeHandlers();
  }
}

/** Builds the import options that every archive of a run shares. */
async function importOptionsOf(
  flags: ImportFlags,
  io: CliIO,
): Promise<Omit<ImportOptions, "archive">> {
  if (flags.passwordStdin && flags.chartmuseumPasswordStdin) {
    throw new PpaLoadError(
      "USAGE",
      "--password-stdin and --chartmuseum-password-stdin cannot both read standard input",
      {
        hint: "give the ChartMuseum password in CHARTMUSEUM_PASSWORD instead",
      },
    );
  }
  const password = flags.passwordStdin
    ? await readPassword(io.stdin, "--password-stdin")
    : undefined;
  const chartMuseumPassword = flags.chartmuseumPasswordStdin
    ? await readPassword(io.stdin, "--chartmuseum-password-stdin")
    : flags.chartmuseumPassword;
  const caCert = flags.caCert ? await readCaCert(flags.caCert) : undefined;
  return {
    namespace: flags.namespace,
    registry: flags.registry || undefined,
    outputDir: flags.outputDir,
    username: flags.username,
    password,
    insecure: flags.insecure,
    caCert,
    docker: flags.docker,
    compression: flags.compression,
    compressionLevel: flags.compressionLevel,
    concurrency: flags.concurrency,
    chunkSize: flags.chunkSize,
    requestTimeoutMs:
      flags.requestTimeout === undefined
        ? undefined
        : flags.requestTimeout * 1000,
    tempDir: flags.tempDir,
    rewriteValues: flags.rewriteValues,
    keepOriginalCharts: flags.keepOriginalCharts,
    chartMuseum: flags.chartmuseumUri
      ? {
          uri: flags.chartmuseumUri,
          username: flags.chartmuseumUser,
          password: chartMuseumPassword,
          token: flags.chartmuseumToken,
          force: flags.force,
        }
      : undefined,
    chartRegistry: flags.chartRegistry,
    mapPlusInTags: flags.mapPlusInTags,
    noOverwrite: !flags.overwrite,
  };
}

function buildProgram(io: CliIO, setExit: (code: number) => void): Command {
  const program = new Command("ppa-load")
    .description(
      "Import IBM Passport Advantage (PPA) archives into container registries.",
    )
    .version(version())
    .addHelpText(
      "after",
      "\nWithout a command, ppa-load runs import: run ppa-load import --help for its options.",
    )
    .exitOverride()
    .configureOutput({
      writeOut: (s) => io.stdout.write(s),
      writeErr: (s) => io.stderr.write(s),
    });

  program
    .command("import", { isDefault: true })
    .description(
      "publish the archive's images to a registry and write its charts",
    )
    .option(
      "--archive <file>",
      "PPA archive to import (.tgz); repeat it to import several archives in one run",
      (value: string, previous: string[] = []) => [...previous, value],
    )
    .option(
      "--archive-list <file>",
      "text file naming archives to import, one path per line (relative to the file)",
    )
    .requiredOption(
      "--namespace <namespace>",
      "registry path prefix for every image, e.g. team or team/product (required)",
    )
    .addOption(
      new Option(
        "--registry <host[:port]|oci:path>",
        "registry to push to, or oci:PATH for an OCI image layout (default: the OCI layout registry/ in the output folder, nothing pushed)",
      ).env("PPA_LOAD_REGISTRY"),
    )
    .option(
      "--output-dir <dir>",
      "folder for charts/ and the default OCI layout",
      "ppa-import",
    )
    .option(
      "--username <user>",
      "registry user, instead of the Docker config's credentials",
    )
    .option(
      "--password-stdin",
      "read the registry password from standard input",
    )
    .option(
      "--insecure",
      "use plain HTTP for a registry that is not on this machine",
    )
    .option(
      "--ca-cert <file>",
      "PEM file of a private CA that signed the registry's certificate",
    )
    .option(
      "--docker",
      "publish through the Docker Engine (load, tag, push), leaving the images in it",
    )
    .addOption(
      new Option(
        "--compression <algorithm>",
        "how uncompressed layers are stored in the registry",
      )
        .choices(["gzip", "none"])
        .default("gzip"),
    )
    .option(
      "--compression-level <level>",
      "gzip level, 0 (fastest) to 9 (smallest); 4 by default, within about 2% of level 6's size at 1.5 times its speed",
      wholeNumber("--compression-level"),
    )
    .option(
      "--concurrency <count>",
      "blob uploads in flight at once (default: twice the cores, at least 4)",
      wholeNumber("--concurrency"),
    )
    .option(
      "--chunk-size <size>",
      "upload blobs in chunks of this size, e.g. 16MiB, to pass a proxy's request size limit; 0 sends each blob in one request (default: 8MiB chunks for blobs of 128MiB or more, which a later run can resume)",
      parseByteSize,
    )
    .option(
      "--request-timeout <seconds>",
      "fail a registry request that sends and receives nothing for this long, or a non-blob response, token request or ChartMuseum request that takes twice this long; at most 2147483 (default: 120)",
      (value: string) => {
        const seconds = positiveNumber("--request-timeout")(value);
        if (seconds > maxTimeoutSeconds) {
          throw new InvalidArgumentError(
            `--request-timeout takes at most ${maxTimeoutSeconds} seconds (24 days), not ${value}`,
          );
        }
        return seconds;
      },
    )
    .option(
      "--temp-dir <dir>",
      "folder for temporary layer files (default: the system's temporary folder)",
    )
    .option(
      "--map-plus-in-tags <char>",
      "publish tags with + (semver build metadata), which registries reject, with + replaced by _, - or .",
    )
    .option(
      "--no-overwrite",
      "fail each image or manifest list whose tag already points at another digest, instead of moving the tag",
    )
    .option(
      "--no-rewrite-values",
      "write the charts as they came, without pointing their image keys at what was published",
    )
    .option(
      "--keep-original-charts",
      "keep each chart whose values were rewritten in charts/original/ too",
    )
    .option(
      "--chartmuseum-uri <uri>",
      "upload each chart to this ChartMuseum server (its root URL, with any context path)",
    )
    .option("--chartmuseum-user <user>", "ChartMuseum user for basic auth")
    .addOption(
      new Option(
        "--chartmuseum-password <password>",
        "ChartMuseum password (prefer CHARTMUSEUM_PASSWORD or --chartmuseum-password-stdin, which keep it out of the process list)",
      ).env("CHARTMUSEUM_PASSWORD"),
    )
    .option(
      "--chartmuseum-password-stdin",
      "read the ChartMuseum password from standard input",
    )
    .addOption(
      new Option(
        "--chartmuseum-token <token>",
        "ChartMuseum bearer token, in place of a user and password",
      ).env("CHARTMUSEUM_TOKEN"),
    )
    .option(
      "--force",
      "replace chart versions that ChartMuseum already has, instead of skipping them",
    )
    .option(
      "--chart-registry <oci://host/path>",
      "also push each chart to this OCI registry path, as helm push does",
    )
    .option("-q, --quiet", "print only errors and the summary")
    .option("-v, --verbose", "print every registry request")
    .option(
      "--json",
      "print newline-delimited JSON records on standard output instead of text (see docs/json.md)",
    )
    .option(
      "--dry-run",
      "read and plan the archive, check the registry's credentials and look up each tag, but upload, tag and write nothing",
    )
    .action(async (flags: ImportFlags) => setExit(await runImport(flags, io)));

  program
    .command("inspect")
    .description(
      "show what an import would publish where, without contacting a registry",
    )
    .requiredOption("--archive <file>", "PPA archive to read (.tgz)")
    .option(
      "--namespace <namespace>",
      "namespace to show in target names",
      "namespace",
    )
    .addOption(
      new Option(
        "--registry <host[:port]|oci:path>",
        "registry to show in target names, or oci:PATH for an import into an OCI layout (nothing is contacted)",
      ).env("PPA_LOAD_REGISTRY"),
    )
    .option(
      "--map-plus-in-tags <char>",
      "show tags with + replaced by _, - or ., as an import with this option publishes them",
    )
    .option(
      "--json",
      "print one JSON object (docs/schema/inspect.schema.json) instead of text",
    )
    .action(async (flags) => {
      // The first signal stops the reading, which removes the temporary
      // folder. A second one removes it and exits at once.
      const controller = new AbortController();
      const removeHandlers = cancelOnSignals(controller, io.stderr, "inspect");
      stopOnClosedOutput(controller, io, "inspection");
      try {
        setExit(await runInspect(flags, io, controller.signal));
      } finally {
        removeHandlers();
      }
    });

  return program;
}

/** Runs the CLI with `argv` as process.argv gives it; returns the exit code. */
export async function main(
  argv: string[],
  io: CliIO = {
    stdin: process.stdin,
    stdout: process.stdout,
    stderr: process.stderr,
    env: process.env,
  },
): Promise<number> {
  let exitCode: number = ExitCode.success;
  if (argv.length <= 2) {
    // Commander would name only the first missing required option.
    io.stderr.write(
      "error: no archive and no namespace given\nhint: run ppa-load --archive FILE.tgz --namespace NAMESPACE [--registry HOST[:PORT]], or ppa-load --help for every option\n",
    );
    return ExitCode.usage;
  }
  const program = buildProgram(io, (code) => (exitCode = code));
  try {
    await program.parseAsync(argv);
  } catch (error) {
    if (error instanceof CommanderError) {
      if (error.exitCode === 0) return ExitCode.success;
      return ExitCode.usage;
    }
    throw error;
  }
  return exitCode;
}
