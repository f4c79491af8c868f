// Measures createParallelGzip against zlib.createGzip, gzip(1) and pigz.
//
// Usage: npx tsc -p tsconfig.build.json && node bench/gzip-blocks.mjs [tar-file]
//
// Without an argument the input is the first 200 MB of `tar -cf - /usr`,
// written once to /tmp/ppa-load-gzip-bench.tar. The input is read into
// memory first, so the numbers measure compression, not the disk. Each
// method runs RUNS times and the run with the median wall time is printed.
// MB is 10^6 bytes.

import { execFileSync, spawn } from "node:child_process";
import { existsSync } from "node:fs";
import { readFile } from "node:fs/promises";
import { availableParallelism, cpus } from "node:os";
import { Readable, Writable } from "node:stream";
import { pipeline } from "node:stream/promises";
import zlib from "node:zlib";

import { createParallelGzip } from "../dist/blobs/gzip.js";

const DEFAULT_INPUT = "/tmp/ppa-load-gzip-bench.tar";
const INPUT_BYTES = 200 * 1000 * 1000;
const LEVELS = [1, 6];
const BLOCK_SIZES = [
  128 * 1024,
  512 * 1024,
  1024 * 1024,
  2 * 1024 * 1024,
  4 * 1024 * 1024,
];
/** Size of the writes fed to each compressor, like a file read stream's. */
const WRITE_SIZE = 64 * 1024;
const RUNS = 3;

const inputPath = process.argv[2] ?? DEFAULT_INPUT;
if (!existsSync(inputPath)) {
  if (inputPath !== DEFAULT_INPUT) {
    throw new Error(`Input file not found: ${inputPath}`);
  }
  console.log(
    `Writing the first ${INPUT_BYTES} bytes of a tar of /usr to ${inputPath}`,
  );
  // tar exits with an error on unreadable files and on the pipe closing early,
  // so its status is ignored and only the file size is checked.
  execFileSync(
    "sh",
    [
      "-c",
      `tar -cf - -C / usr 2>/dev/null | head -c ${INPUT_BYTES} > "$0"`,
      inputPath,
    ],
    { stdio: "inherit" },
  );
}
const input = await readFile(inputPath);
if (inputPath === DEFAULT_INPUT && input.length < INPUT_BYTES) {
  console.log(`Only ${input.length} bytes could be read from /usr.`);
}
const baselineSizes = new Map();

console.log(
  `input ${inputPath}: ${input.length} bytes; ${availableParallelism()} cores (${cpus()[0]?.model ?? "unknown"}); node ${process.version}`,
);
console.log(
  "method".padEnd(42) +
    "level".padStart(6) +
    "MB/s".padStart(9) +
    "CPU s".padStart(8) +
    "output bytes".padStart(14) +
    "vs zlib".padStart(9),
);

for (const level of LEVELS) {
  await report("zlib.createGzip", level, () =>
    compressInProcess(zlib.createGzip({ level })),
  );
  for (const blockSize of BLOCK_SIZES) {
    await report(`createParallelGzip ${formatSize(blockSize)}`, level, () =>
      compressInProcess(createParallelGzip({ level, blockSize })),
    );
  }
  await report("createParallelGzip 1 MiB, concurrency 1", level, () =>
    compressInProcess(
      createParallelGzip({ level, blockSize: 1024 * 1024, concurrency: 1 }),
    ),
  );
  for (const command of ["gzip", "pigz"]) {
    if (!hasCommand(command)) {
      console.log(`${command} -${level}: not installed`);
      continue;
    }
    await report(`${command} -c`, level, () =>
      compressWithCommand(command, level),
    );
  }
}

/**
 * Runs one compression RUNS times and prints the median run's throughput,
 * CPU time (user + system, all threads) and output size. `compress` returns
 * the output size and, for a child process, its CPU seconds.
 */
async function report(method, level, compress) {
  const runs = [];
  for (let i = 0; i < RUNS; i++) {
    const start = process.hrtime.bigint();
    const cpuStart = process.cpuUsage();
    const { outputBytes, childCpuSeconds } = await compress();
    const seconds = Number(process.hrtime.bigint() - start) / 1e9;
    const cpu = process.cpuUsage(cpuStart);
    const cpuSeconds = childCpuSeconds ?? (cpu.user + cpu.system) / 1e6;
    runs.push({ seconds, cpuSeconds, outputBytes });
  }
  runs.sort((a, b) => a.seconds - b.seconds);
  const { seconds, cpuSeconds, outputBytes } = runs[Math.floor(RUNS / 2)];
  if (method === "zlib.createGzip") baselineSizes.set(level, outputBytes);
  const relative = outputBytes / baselineSizes.get(level) - 1;
  console.log(
    method.padEnd(42) +
      String(level).padStart(6) +
      (input.length / 1e6 / seconds).toFixed(1).padStart(9) +
      cpuSeconds.toFixed(1).padStart(8) +
      String(outputBytes).padStart(14) +
      `${relative >= 0 ? "+" : ""}${(relative * 100).toFixed(2)}%`.padStart(9),
  );
}

/** Returns the output size of `transform` fed with the input in WRITE_SIZE writes. */
async function compressInProcess(transform) {
  let outputBytes = 0;
  await pipeline(
    Readable.from(writes(), { objectMode: false }),
    transform,
    new Writable({
      write(chunk, _encoding, callback) {
        outputBytes += chunk.length;
        callback();
      },
    }),
  );
  return { outputBytes };
}

function* writes() {
  for (let offset = 0; offset < input.length; offset += WRITE_SIZE) {
    yield input.subarray(offset, offset + WRITE_SIZE);
  }
}

/**
 * Returns the output size and CPU seconds of `command -c -LEVEL inputPath`.
 * The shell's `times` builtin prints the CPU time of its children to stderr.
 */
function compressWithCommand(command, level) {
  return new Promise((resolve, reject) => {
    const child = spawn(
      "sh",
      ["-c", `"$0" -c -${level} "$1" && times >&2`, command, inputPath],
      { stdio: ["ignore", "pipe", "pipe"] },
    );
    let outputBytes = 0;
    let stderr = "";
    child.stdout.on("data", (chunk) => (outputBytes += chunk.length));
    child.stderr.on("data", (chunk) => (stderr += chunk));
    child.on("error", reject);
    child.on("close", (code) => {
      if (code !== 0) {
        reject(
          new Error(
            `${command} -c -${level} exited with status ${code}: ${stderr}`,
          ),
        );
        return;
      }
      // The second line of `times` contains the children's user and system time, e.g. "0m9.52s 0m0.31s".
      const childTimes = stderr.trim().split("\n")[1] ?? "";
      const childCpuSeconds = childTimes
        .split(/\s+/)
        .map((field) => /^(\d+)m([\d.]+)s$/.exec(field))
        .reduce(
          (sum, match) =>
            sum + (match ? Number(match[1]) * 60 + Number(match[2]) : 0),
          0,
        );
      resolve({ outputBytes, childCpuSeconds });
    });
  });
}

function hasCommand(command) {
  try {
    execFileSync("sh", ["-c", `command -v ${command}`], { stdio: "ignore" });
    return true;
  } catch {
    return false;
  }
}

function formatSize(bytes) {
  return bytes >= 1024 * 1024
    ? `${bytes / 1024 / 1024} MiB`
    : `${bytes / 1024} KiB`;
}
