// Benchmark of ppa-load against the Docker CLI, skopeo and hardware floors.
//
// Usage (as root, from the repository root, after `npm run build`):
//   node bench/run.mjs [--scale S] [--runs N] [--methods ID,...] [--namespace NS] [--build ID]
//
// --scale    size of the generated archive, 1 = about 540 MB (default 0.25)
// --runs     runs of every method; the table shows medians (default 3)
// --methods  comma-separated subset of the method ids below (default all)
// --build    measure the build snapshot .bench/builds/ID of an earlier run
//
// ppa-load runs from a copy of bin/, dist/ and package.json under
// .bench/builds/ID, made at the start, so that a rebuild of the work tree
// during the benchmark does not change the code under measurement.
//
// Every run of a registry method gets a new, empty `docker-registry` on a free
// 127.0.0.1 port with its own storage folder. Every run of a Docker method
// also gets a new dockerd (vfs storage driver, own data root, Unix socket, no
// bridge or iptables), so no layer is cached from an earlier run. The
// archive, layers and unpacked files stay in the page cache between runs, so
// the numbers are warm-cache numbers.
//
// Measured per run:
// - wall time;
// - user+sys CPU of the command and its children (GNU time);
// - CPU of dockerd and the registry, read from /proc because they are not
//   children of the command;
// - peak RSS of the largest process of the command (GNU time %M) and of
//   dockerd (VmHWM, reset before the run);
// - bytes in the registry's storage folder afterwards;
// - peak size of the command's temporary folder (`du -sb` every 100 ms);
// - size of the engine's data root afterwards;
// - "other CPU": busy CPU time of the whole machine during the run
//   (/proc/stat) less the command, dockerd and the registry. It counts other
//   jobs on the machine, kernel work and the du polls, and a high value marks
//   a disturbed run.
//
// The floor estimate is the least wall time an importer needs for the
// archive's serial gunzip, a sha256 of every layer byte (openssl, the library
// Node.js hashes with) and gzip of the unique layer bytes spread over all
// cores. It leaves out the registry and the disk, so it is a lower bound.
//
// Results: a Markdown table on standard output and JSON in
// .bench/results-<date>.json. Needs root, docker.io (dockerd and docker),
// docker-registry, skopeo, GNU time (/usr/bin/time), gzip, coreutils and
// openssl. MB is 10^6 bytes.

import { execFileSync, spawn, spawnSync } from "node:child_process";
import { once } from "node:events";
import {
  appendFileSync,
  copyFileSync,
  existsSync,
  mkdirSync,
  openSync,
  closeSync,
  readFileSync,
  readdirSync,
  writeFileSync,
} from "node:fs";
import { mkdir, mkdtemp, writeFile } from "node:fs/promises";
import http from "node:http";
import net from "node:net";
import { availableParallelism, totalmem } from "node:os";
import { dirname, join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { createHash, randomBytes } from "node:crypto";
import { setTimeout as sleep } from "node:timers/promises";

import { archiveFolder, ensureArchive } from "./make-archive.mjs";

const MB = 1000 * 1000;
const REPOSITORY_ROOT = resolve(fileURLToPath(new URL("..", import.meta.url)));
const BENCH_ROOT = join(REPOSITORY_ROOT, ".bench");
const TIME = "/usr/bin/time";
const CORES = availableParallelism();
const CLOCK_TICKS = Number(
  execFileSync("getconf", ["CLK_TCK"], { encoding: "utf8" }).trim(),
);
/** Interval of the `du -sb` polls of temporary folders. */
const POLL_MS = 100;
/** Seconds a daemon gets to become ready, and to exit after SIGTERM. */
const START_TIMEOUT_S = 60;
const STOP_TIMEOUT_S = 30;

// ---------------------------------------------------------------------------
// Arguments
// ---------------------------------------------------------------------------

const METHODS = [
  {
    id: "direct",
    label: "ppa-load (direct)",
    group: "ppa-load",
    registry: true,
  },
  {
    id: "direct-level1",
    label: "ppa-load (direct, --compression-level 1)",
    group: "ppa-load",
    registry: true,
  },
  {
    id: "direct-level6",
    label: "ppa-load (direct, --compression-level 6)",
    group: "ppa-load",
    registry: true,
  },
  {
    id: "direct-uncompressed",
    label: "ppa-load (direct, --compression none)",
    group: "ppa-load",
    registry: true,
  },
  {
    id: "docker-path",
    label: "ppa-load --docker",
    group: "ppa-load",
    registry: true,
    docker: true,
  },
  {
    id: "docker-cli",
    label: "docker load + tag + push",
    group: "peer",
    registry: true,
    docker: true,
  },
  { id: "skopeo", label: "skopeo copy", group: "peer", registry: true },
  { id: "gunzip", label: "gzip -dc archive", group: "floor" },
  {
    id: "floor",
    label: `floor: gzip -dc archive beside gzip -4 of unique layers on ${CORES} cores`,
    group: "floor",
  },
  { id: "gzip1-1core", label: "gzip -1 unique layers, 1 core", group: "floor" },
  {
    id: "gzip1-all",
    label: `gzip -1 unique layers, ${CORES} cores`,
    group: "floor",
  },
  { id: "gzip6-1core", label: "gzip -6 unique layers, 1 core", group: "floor" },
  {
    id: "gzip6-all",
    label: `gzip -6 unique layers, ${CORES} cores`,
    group: "floor",
  },
  { id: "sha256sum", label: "sha256sum all layer bytes", group: "floor" },
  {
    id: "openssl-sha256",
    label: "openssl sha256 all layer bytes",
    group: "floor",
  },
];

function parseArguments(argv) {
  const options = {
    build: undefined,
    scale: 0.25,
    runs: 3,
    methods: METHODS.map((m) => m.id),
    namespace: "bench",
  };
  for (let i = 0; i < argv.length; i += 1) {
    const argument = argv[i];
    const value = argv[i + 1];
    if (argument === "--scale") {
      options.scale = Number(value);
      i += 1;
    } else if (argument === "--runs") {
      options.runs = Number(value);
      i += 1;
    } else if (argument === "--methods") {
      options.methods = String(value).split(",").filter(Boolean);
      i += 1;
    } else if (argument === "--namespace") {
      options.namespace = String(value);
      i += 1;
    } else if (argument === "--build") {
      options.build = String(value);
      i += 1;
    } else {
      throw new Error(
        `Unknown argument ${argument}; usage: run.mjs [--scale S] [--runs N] [--methods ID,...] [--namespace NS] [--build ID]`,
      );
    }
  }
  if (!(options.scale > 0)) {
    throw new Error(
      `Invalid --scale ${options.scale}: expected a number greater than 0`,
    );
  }
  if (!Number.isInteger(options.runs) || options.runs < 1) {
    throw new Error(
      `Invalid --runs ${options.runs}: expected a whole number of at least 1`,
    );
  }
  const known = new Set(METHODS.map((m) => m.id));
  for (const id of options.methods) {
    if (!known.has(id)) {
      throw new Error(
        `Unknown method ${id}; expected one of ${[...known].join(", ")}`,
      );
    }
  }
  return options;
}

function checkPrerequisites() {
  if (process.getuid?.() !== 0) {
    throw new Error(
      "The benchmark must run as root, because it starts dockerd",
    );
  }
  const missing = [];
  for (const command of [
    "dockerd",
    "docker",
    "docker-registry",
    "skopeo",
    "gzip",
    "sha256sum",
    "openssl",
    "split",
    "tar",
    "du",
    "unshare",
  ]) {
    if (spawnSync("sh", ["-c", `command -v ${command}`]).status !== 0) {
      missing.push(command);
    }
  }
  if (!existsSync(TIME)) {
    missing.push(TIME);
  }
  if (missing.length > 0) {
    throw new Error(
      `Missing commands: ${missing.join(", ")}. Install them with: ` +
        "apt-get install -y docker.io docker-registry skopeo time gzip coreutils openssl util-linux",
    );
  }
  if (!existsSync(join(REPOSITORY_ROOT, "dist", "cli", "main.js"))) {
    throw new Error("dist/cli/main.js not found; run npm run build first");
  }
}

// ---------------------------------------------------------------------------
// Build snapshot
// ---------------------------------------------------------------------------

/** Lists the files of a folder tree, relative to it, sorted. */
function listFiles(root, prefix = "") {
  return readdirSync(join(root, prefix), { withFileTypes: true })
    .sort((a, b) => (a.name < b.name ? -1 : 1))
    .flatMap((entry) => {
      const relative = join(prefix, entry.name);
      return entry.isDirectory() ? listFiles(root, relative) : [relative];
    });
}

/**
 * Copies bin/, dist/ and package.json to .bench/builds/ID, where ID is the
 * first 12 hex digits of a sha256 over their paths and contents, and returns
 * ID. Other builds of the work tree then cannot change the code under
 * measurement, and results with the same ID measured the same code. The copy
 * still loads its dependencies from the repository's node_modules.
 */
function snapshotBuild() {
  const files = [
    "package.json",
    "bin/ppa-load.js",
    ...listFiles(join(REPOSITORY_ROOT, "dist")).map((file) =>
      join("dist", file),
    ),
  ];
  const hash = createHash("sha256");
  for (const file of files) {
    hash.update(`${file}\0`);
    hash.update(readFileSync(join(REPOSITORY_ROOT, file)));
  }
  const id = hash.digest("hex").slice(0, 12);
  const folder = join(BENCH_ROOT, "builds", id);
  if (!existsSync(join(folder, "source.json"))) {
    for (const file of files) {
      mkdirSync(dirname(join(folder, file)), { recursive: true });
      copyFileSync(join(REPOSITORY_ROOT, file), join(folder, file));
    }
    // Written last, so that it marks a complete copy.
    writeFileSync(
      join(folder, "source.json"),
      `${JSON.stringify(sourceRevision(), null, 2)}\n`,
    );
  }
  return id;
}

/** Returns the CLI path and the source.json contents of a build snapshot. */
function loadBuild(id) {
  const folder = join(BENCH_ROOT, "builds", id);
  if (!existsSync(join(folder, "source.json"))) {
    throw new Error(
      `Build ${id} not found in ${join(BENCH_ROOT, "builds")}; pass an ID that an earlier run printed`,
    );
  }
  return {
    id,
    cli: join(folder, "bin", "ppa-load.js"),
    source: JSON.parse(readFileSync(join(folder, "source.json"), "utf8")),
  };
}

// ---------------------------------------------------------------------------
// Processes and /proc
// ---------------------------------------------------------------------------

/** Processes started here that must not outlive the benchmark. */
const liveDaemons = new Set();

function killLiveDaemons() {
  for (const child of liveDaemons) {
    child.kill("SIGKILL");
  }
}
process.on("exit", killLiveDaemons);
for (const signal of ["SIGINT", "SIGTERM"]) {
  process.on(signal, () => {
    killLiveDaemons();
    process.exit(130);
  });
}

/** Reads [ppid, utime+stime ticks, children's utime+stime ticks] of a pid, or undefined once it is gone. */
function readStat(pid) {
  let text;
  try {
    text = readFileSync(`/proc/${pid}/stat`, "utf8");
  } catch {
    return undefined;
  }
  // Fields after the command name, which is in parentheses and may contain spaces.
  const fields = text.slice(text.lastIndexOf(")") + 2).split(" ");
  const number = (field) => Number(fields[field - 3]);
  return {
    ppid: number(4),
    ticks: number(14) + number(15),
    childTicks: number(16) + number(17),
  };
}

/** Seconds of CPU used by pid, its reaped children and its live descendants. */
function treeCpuSeconds(rootPid) {
  const stats = new Map();
  for (const name of readdirSync("/proc")) {
    if (/^\d+$/.test(name)) {
      const stat = readStat(Number(name));
      if (stat) {
        stats.set(Number(name), stat);
      }
    }
  }
  let ticks = 0;
  const pending = [rootPid];
  while (pending.length > 0) {
    const pid = pending.pop();
    const stat = stats.get(pid);
    if (!stat) {
      continue;
    }
    ticks += stat.ticks + stat.childTicks;
    for (const [childPid, childStat] of stats) {
      if (childStat.ppid === pid) {
        pending.push(childPid);
      }
    }
  }
  return ticks / CLOCK_TICKS;
}

function readStatusKilobytes(pid, key) {
  try {
    const match = readFileSync(`/proc/${pid}/status`, "utf8").match(
      new RegExp(`^${key}:\\s+(\\d+) kB`, "m"),
    );
    return match ? Number(match[1]) : undefined;
  } catch {
    return undefined;
  }
}

/** Resets the peak RSS (VmHWM) of a process to its current RSS. */
function resetPeakRss(pid) {
  writeFileSync(`/proc/${pid}/clear_refs`, "5");
}

/** Busy CPU seconds of the whole machine since boot, from the first line of /proc/stat. */
function machineBusySeconds() {
  const fields = readFileSync("/proc/stat", "utf8")
    .split("\n")[0]
    .trim()
    .split(/\s+/)
    .slice(1)
    .map(Number);
  // user nice system idle iowait irq softirq steal: all but idle and iowait are busy.
  const [user, nice, system, , , irq, softirq, steal] = fields;
  return (user + nice + system + irq + softirq + (steal ?? 0)) / CLOCK_TICKS;
}

async function duBytes(path) {
  const child = spawn("du", ["-sb", path], {
    stdio: ["ignore", "pipe", "ignore"],
  });
  let output = "";
  child.stdout.on("data", (chunk) => (output += chunk));
  await once(child, "close");
  const bytes = Number(output.split("\t")[0]);
  return Number.isFinite(bytes) ? bytes : 0;
}

/** Polls `du -sb path` every POLL_MS until stop() and returns the maximum seen. */
function pollPeakBytes(path) {
  let peak = 0;
  let running = true;
  const loop = (async () => {
    while (running) {
      const started = Date.now();
      peak = Math.max(peak, await duBytes(path));
      await sleep(Math.max(0, POLL_MS - (Date.now() - started)));
    }
    peak = Math.max(peak, await duBytes(path));
  })();
  return {
    async stop() {
      running = false;
      await loop;
      return peak;
    },
  };
}

function freePort() {
  return new Promise((resolvePort, reject) => {
    const server = net.createServer();
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => {
      const { port } = server.address();
      server.close(() => resolvePort(port));
    });
  });
}

/** Sends a GET over TCP or a Unix socket and returns the status code, or 0 when the request fails. */
function httpStatus(options) {
  return new Promise((resolveStatus) => {
    const request = http.get({ ...options, timeout: 5000 }, (response) => {
      response.resume();
      resolveStatus(response.statusCode ?? 0);
    });
    request.on("timeout", () => request.destroy());
    request.on("error", () => resolveStatus(0));
  });
}

async function waitReady(name, child, logPath, check) {
  const deadline = Date.now() + START_TIMEOUT_S * 1000;
  while (!(await check())) {
    if (child.exitCode !== null || child.signalCode !== null) {
      throw new Error(`${name} exited before it was ready; see ${logPath}`);
    }
    if (Date.now() > deadline) {
      throw new Error(
        `${name} was not ready after ${START_TIMEOUT_S} s; see ${logPath}`,
      );
    }
    await sleep(200);
  }
}

async function stopProcess(child) {
  if (child.exitCode !== null || child.signalCode !== null) {
    liveDaemons.delete(child);
    return;
  }
  const exited = once(child, "exit");
  child.kill("SIGTERM");
  const timer = sleep(STOP_TIMEOUT_S * 1000).then(() => "timeout");
  if ((await Promise.race([exited, timer])) === "timeout") {
    child.kill("SIGKILL");
    await exited;
  }
  liveDaemons.delete(child);
}

/** Deletes a folder that a daemon used, after unmounting anything below it. */
function removeFolder(path) {
  const mounts = readFileSync("/proc/self/mountinfo", "utf8")
    .split("\n")
    .map((line) => line.split(" ")[4])
    .filter((point) => point === path || point?.startsWith(`${path}/`))
    .sort()
    .reverse();
  for (const point of mounts) {
    spawnSync("umount", [point]);
  }
  const result = spawnSync("rm", ["-rf", "--one-file-system", path]);
  if (result.status !== 0) {
    console.error(`warning: failed to delete ${path}: ${result.stderr}`);
  }
}

// ---------------------------------------------------------------------------
// Services: registry and dockerd
// ---------------------------------------------------------------------------

/** Starts an empty Docker Distribution registry on a free 127.0.0.1 port. */
async function startRegistry(folder) {
  const port = await freePort();
  const storage = join(folder, "registry-storage");
  await mkdir(storage, { recursive: true });

  const configPath = join(folder, "registry.yml");
  // Access logs are off, so that log writing does not count as registry CPU.
  await writeFile(
    configPath,
    [
      "version: 0.1",
      "log:",
      "  level: warn",
      "  accesslog:",
      "    disabled: true",
      "storage:",
      "  filesystem:",
      `    rootdirectory: ${storage}`,
      "  delete:",
      "    enabled: true",
      "http:",
      `  addr: 127.0.0.1:${port}`,
      `  secret: ${randomBytes(32).toString("hex")}`,
      "",
    ].join("\n"),
  );

  const logPath = join(folder, "registry.log");
  const log = openSync(logPath, "a");
  const child = spawn("docker-registry", ["serve", configPath], {
    stdio: ["ignore", log, log],
  });
  closeSync(log);
  liveDaemons.add(child);

  await waitReady(
    "docker-registry",
    child,
    logPath,
    async () =>
      (await httpStatus({ host: "127.0.0.1", port, path: "/v2/" })) === 200,
  );
  return { address: `127.0.0.1:${port}`, storage, child, pid: child.pid };
}

/** Starts dockerd with an empty vfs data root below a new short folder in /tmp. */
async function startDockerd() {
  // Unix socket paths are limited to 107 bytes, and containerd puts its
  // sockets below the exec root, so the folder path must stay short.
  const folder = await mkdtemp("/tmp/ppab-");
  const socket = join(folder, "docker.sock");

  const config = join(folder, "daemon.json");
  // An empty config file keeps /etc/docker/daemon.json out.
  await writeFile(config, "{}\n");

  // No bridge network and no firewall rules, because the benchmark only
  // loads, tags and pushes images. vfs copies every layer in full, which is
  // slow, but it works on any file system and matches the integration tests.
  const logPath = join(folder, "dockerd.log");
  const log = openSync(logPath, "a");
  const child = spawn(
    "dockerd",
    [
      "--config-file",
      config,
      "--iptables=false",
      "--ip6tables=false",
      "--bridge=none",
      "--storage-driver=vfs",
      "--data-root",
      join(folder, "docker"),
      "--exec-root",
      join(folder, "exec"),
      "--pidfile",
      join(folder, "dockerd.pid"),
      "-H",
      `unix://${socket}`,
    ],
    { stdio: ["ignore", log, log] },
  );
  closeSync(log);
  liveDaemons.add(child);

  await waitReady(
    "dockerd",
    child,
    logPath,
    async () =>
      (await httpStatus({ socketPath: socket, path: "/_ping" })) === 200,
  );
  return {
    folder,
    host: `unix://${socket}`,
    dataRoot: join(folder, "docker"),
    child,
    pid: child.pid,
  };
}

// ---------------------------------------------------------------------------
// Commands of each method
// ---------------------------------------------------------------------------

function shellQuote(value) {
  return `'${String(value).replaceAll("'", "'\\''")}'`;
}

/** Layer files in image order, each as often as the image tarballs contain it. */
function allLayerPaths(corpus) {
  return corpus.images.flatMap((image) =>
    image.layers.map((key) => corpus.layers[key].path),
  );
}

/**
 * Returns the command of one run: [program, args], the folder whose peak
 * size is polled, and extra environment.
 */
function methodCommand(
  method,
  { corpus, registry, dockerd, work, namespace, cli },
) {
  const archive = corpus.archive;
  const unique = corpus.uniqueLayers;
  const unpacked = join(work, "unpacked");
  const tempDir = join(work, "temp");
  const importArgs = [
    cli,
    "import",
    "--archive",
    archive,
    "--namespace",
    namespace,
    "--registry",
    registry?.address,
    "--output-dir",
    join(work, "output"),
    "--temp-dir",
    tempDir,
  ];
  const shell = (script) => ({
    program: "bash",
    args: ["-c", `set -euo pipefail\n${script}`],
  });
  const parallelGzip = (level) =>
    shell(
      [
        "pids=()",
        `for k in $(seq 1 ${CORES}); do`,
        `  split -n "$k/${CORES}" ${shellQuote(unique)} | gzip -${level} -c >/dev/null &`,
        '  pids+=("$!")',
        "done",
        'for pid in "${pids[@]}"; do wait "$pid"; done',
      ].join("\n"),
    );
  const target = (repoTag) => `${registry.address}/${namespace}/${repoTag}`;

  switch (method.id) {
    case "direct":
      return {
        program: process.execPath,
        args: importArgs,
        poll: tempDir,
        phases: true,
      };
    case "direct-level1":
      return {
        program: process.execPath,
        args: [...importArgs, "--compression-level", "1"],
        poll: tempDir,
        phases: true,
      };
    case "direct-level6":
      return {
        program: process.execPath,
        args: [...importArgs, "--compression-level", "6"],
        poll: tempDir,
        phases: true,
      };
    case "direct-uncompressed":
      return {
        program: process.execPath,
        args: [...importArgs, "--compression", "none"],
        poll: tempDir,
        phases: true,
      };
    case "docker-path":
      return {
        program: process.execPath,
        args: [...importArgs, "--docker"],
        poll: tempDir,
        phases: true,
        env: { DOCKER_HOST: dockerd.host },
      };
    case "docker-cli": {
      // The steps a user's script would take, one image after another.
      const lines = [
        `mkdir -p ${shellQuote(unpacked)}`,
        `tar -xzf ${shellQuote(archive)} -C ${shellQuote(unpacked)}`,
      ];
      for (const image of corpus.images) {
        lines.push(
          `docker load -i ${shellQuote(join(unpacked, image.file))}`,
          `docker tag ${shellQuote(image.repoTag)} ${shellQuote(target(image.repoTag))}`,
          `docker push ${shellQuote(target(image.repoTag))}`,
        );
      }
      return {
        ...shell(lines.join("\n")),
        poll: unpacked,
        env: { DOCKER_HOST: dockerd.host },
      };
    }
    case "skopeo": {
      // skopeo records which compressed blob each layer became in
      // /var/lib/containers/cache. A tmpfs over it in a private mount
      // namespace gives each run an empty cache and leaves the host's alone.
      const lines = [
        "mkdir -p /var/lib/containers/cache",
        "mount -t tmpfs tmpfs /var/lib/containers/cache",
        `mkdir -p ${shellQuote(unpacked)}`,
        `tar -xzf ${shellQuote(archive)} -C ${shellQuote(unpacked)}`,
      ];
      for (const image of corpus.images) {
        lines.push(
          `skopeo copy --dest-tls-verify=false docker-archive:${shellQuote(join(unpacked, image.file))} ` +
            `docker://${shellQuote(target(image.repoTag))}`,
        );
      }
      const script = `set -euo pipefail\n${lines.join("\n")}`;
      return {
        program: "unshare",
        args: ["--mount", "--propagation", "private", "bash", "-c", script],
        poll: unpacked,
      };
    }
    case "gunzip":
      return shell(`gzip -dc ${shellQuote(archive)} >/dev/null`);
    case "floor":
      // The work no importer of this archive avoids, at ppa-load's default
      // level: the one serial gunzip of the archive, while every core
      // compresses an equal part of the distinct layer bytes.
      return shell(
        [
          "pids=()",
          `gzip -dc ${shellQuote(archive)} >/dev/null &`,
          'pids+=("$!")',
          `for k in $(seq 1 ${CORES}); do`,
          `  split -n "$k/${CORES}" ${shellQuote(unique)} | gzip -4 -c >/dev/null &`,
          '  pids+=("$!")',
          "done",
          'for pid in "${pids[@]}"; do wait "$pid"; done',
        ].join("\n"),
      );
    case "gzip1-1core":
      return shell(`gzip -1 -c <${shellQuote(unique)} >/dev/null`);
    case "gzip6-1core":
      return shell(`gzip -6 -c <${shellQuote(unique)} >/dev/null`);
    case "gzip1-all":
      return parallelGzip(1);
    case "gzip6-all":
      return parallelGzip(6);
    case "sha256sum":
      return shell(
        `sha256sum ${allLayerPaths(corpus).map(shellQuote).join(" ")} >/dev/null`,
      );
    case "openssl-sha256":
      return shell(
        `openssl dgst -sha256 ${allLayerPaths(corpus).map(shellQuote).join(" ")} >/dev/null`,
      );
    default:
      throw new Error(`No command for method ${method.id}`);
  }
}

/** Progress lines of `ppa-load import` that start each phase, as it prints them without a terminal. */
const PHASE_PATTERNS = [
  ["connect", /^checking /],
  ["read", /^reading /],
  ["plan", /^matching images/],
  ["push", /^(pushing|writing) \d+ images? to /],
  ["lists", /^writing \d+ manifest lists?/],
  ["charts", /^writing \d+ charts? to /],
];

/**
 * Copies a ppa-load progress stream to the log file and records, for each
 * phase, the seconds after `started` at which its first line arrived.
 */
function recordPhases(stream, started, logPath) {
  const phaseStarts = {};
  let pending = "";
  stream.setEncoding("utf8");
  stream.on("data", (text) => {
    const seconds = Number(process.hrtime.bigint() - started) / 1e9;
    appendFileSync(logPath, text);
    pending += text;
    const lines = pending.split("\n");
    pending = lines.pop();
    for (const line of lines) {
      const match = PHASE_PATTERNS.find(([, pattern]) => pattern.test(line));
      if (match && phaseStarts[match[0]] === undefined) {
        phaseStarts[match[0]] = seconds;
      }
    }
  });
  return phaseStarts;
}

/** Interval of the CPU samples of a ppa-load process. */
const CPU_SAMPLE_MS = 250;

/**
 * Samples [seconds after `started`, CPU seconds of the process tree of pid]
 * every CPU_SAMPLE_MS until stop(), which returns the samples.
 */
function sampleCpu(pid, started) {
  const samples = [];
  const timer = setInterval(() => {
    const seconds = Number(process.hrtime.bigint() - started) / 1e9;
    samples.push([seconds, treeCpuSeconds(pid)]);
  }, CPU_SAMPLE_MS);
  return {
    stop() {
      clearInterval(timer);
      return samples;
    },
  };
}

/** Interpolates the CPU seconds used by `time` from sorted [time, CPU] samples. */
function cpuAt(samples, time) {
  const after = samples.findIndex(([sampleTime]) => sampleTime >= time);
  if (after <= 0) {
    return after === 0 ? samples[0][1] : samples.at(-1)[1];
  }
  const [t0, c0] = samples[after - 1];
  const [t1, c1] = samples[after];
  return t1 === t0 ? c1 : c0 + ((c1 - c0) * (time - t0)) / (t1 - t0);
}

/** Average number of cores that ppa-load kept busy during each phase. */
function phaseCores(phaseStarts, wall, samples) {
  const order = ["connect", "read", "plan", "push", "lists", "charts"];
  const started = order.filter((phase) => phaseStarts[phase] !== undefined);
  const cores = {};
  started.forEach((phase, index) => {
    const start = phaseStarts[phase];
    const end =
      index + 1 < started.length ? phaseStarts[started[index + 1]] : wall;
    if (end - start >= 1) {
      const name = phase === "charts" ? "finish" : phase;
      cores[name] =
        (cpuAt(samples, end) - cpuAt(samples, start)) / (end - start);
    }
  });
  return cores;
}

/**
 * Turns phase start times into durations. Each phase lasts until the next
 * phase that started, and the last one until the process exited, so
 * "finish" covers the charts, the summary and the exit.
 */
function phaseDurations(phaseStarts, wall) {
  const order = ["connect", "read", "plan", "push", "lists", "charts"];
  const started = order.filter((phase) => phaseStarts[phase] !== undefined);
  const durations = { startup: phaseStarts[started[0]] ?? wall };
  started.forEach((phase, index) => {
    const end =
      index + 1 < started.length ? phaseStarts[started[index + 1]] : wall;
    durations[phase === "charts" ? "finish" : phase] = end - phaseStarts[phase];
  });
  return durations;
}

// ---------------------------------------------------------------------------
// One measured run
// ---------------------------------------------------------------------------

async function runOnce(method, context) {
  const work = await mkdtemp(join(context.workRoot, `${method.id}-`));
  await mkdir(join(work, "temp"));
  let registry;
  let dockerd;
  try {
    if (method.registry) {
      registry = await startRegistry(work);
    }
    if (method.docker) {
      dockerd = await startDockerd();
    }
    const command = methodCommand(method, {
      ...context,
      registry,
      dockerd,
      work,
    });
    const timeFile = join(work, "time.txt");
    const logPath = join(work, "output.log");
    const log = openSync(logPath, "w");
    const environment = {
      ...process.env,
      NO_PROXY: "127.0.0.1,localhost",
      no_proxy: "127.0.0.1,localhost",
      DOCKER_CONFIG: join(work, "docker-config"),
      ...command.env,
    };

    const registryCpuBefore = registry ? treeCpuSeconds(registry.pid) : 0;
    const dockerdCpuBefore = dockerd ? treeCpuSeconds(dockerd.pid) : 0;
    if (dockerd) {
      resetPeakRss(dockerd.pid);
    }
    const poller = command.poll ? pollPeakBytes(command.poll) : undefined;
    const loadAverage = Number(
      readFileSync("/proc/loadavg", "utf8").split(" ")[0],
    );
    const busyBefore = machineBusySeconds();
    const started = process.hrtime.bigint();
    const child = spawn(
      TIME,
      ["-f", "%e %U %S %M", "-o", timeFile, command.program, ...command.args],
      {
        env: environment,
        stdio: ["ignore", log, command.phases ? "pipe" : log],
      },
    );
    closeSync(log);
    const phaseStarts = command.phases
      ? recordPhases(child.stderr, started, logPath)
      : undefined;
    const cpuSampler = command.phases
      ? sampleCpu(child.pid, started)
      : undefined;
    const [code] = await once(child, "close");
    const wall = Number(process.hrtime.bigint() - started) / 1e9;
    const cpuSamples = cpuSampler?.stop();
    const busy = machineBusySeconds() - busyBefore;
    const peakTemp = poller ? await poller.stop() : undefined;
    if (code !== 0) {
      const tail = readFileSync(logPath, "utf8")
        .split("\n")
        .slice(-30)
        .join("\n");
      throw new Error(
        `${method.label} exited with status ${code}; last lines of ${logPath}:\n${tail}`,
      );
    }
    // GNU time prints a status line first when the command fails, so the
    // numbers are on the last line.
    const timeLine = readFileSync(timeFile, "utf8").trim().split("\n").at(-1);
    const [, user, system, maxRssKb] = timeLine.split(" ").map(Number);

    const result = {
      wallSeconds: wall,
      cpuSeconds: user + system,
      peakRssBytes: maxRssKb * 1024,
    };
    if (registry) {
      result.registryCpuSeconds =
        treeCpuSeconds(registry.pid) - registryCpuBefore;
      result.registryPeakRssBytes =
        (readStatusKilobytes(registry.pid, "VmHWM") ?? 0) * 1024;
      result.registryBytes = await duBytes(registry.storage);
    }
    if (dockerd) {
      result.dockerdCpuSeconds = treeCpuSeconds(dockerd.pid) - dockerdCpuBefore;
      result.dockerdPeakRssBytes =
        (readStatusKilobytes(dockerd.pid, "VmHWM") ?? 0) * 1024;
      result.engineStoreBytes = await duBytes(dockerd.dataRoot);
    }
    if (peakTemp !== undefined) {
      result.peakTempBytes = peakTemp;
    }
    if (phaseStarts) {
      result.phaseStartSeconds = phaseStarts;
      result.phaseSeconds = phaseDurations(phaseStarts, wall);
      cpuSamples.unshift([0, 0]);
      cpuSamples.push([wall, result.cpuSeconds]);
      result.phaseCores = phaseCores(phaseStarts, wall, cpuSamples);
    }
    // CPU that other processes of the machine used during the run; the
    // benchmark's own du polls count here too. A large value means the
    // numbers of this run are disturbed.
    result.otherCpuSeconds = Math.max(
      0,
      busy -
        result.cpuSeconds -
        (result.dockerdCpuSeconds ?? 0) -
        (result.registryCpuSeconds ?? 0),
    );
    result.loadAverageBefore = loadAverage;
    return result;
  } finally {
    if (registry) {
      await stopProcess(registry.child);
    }
    if (dockerd) {
      await stopProcess(dockerd.child);
      removeFolder(dockerd.folder);
    }
    removeFolder(work);
  }
}

// ---------------------------------------------------------------------------
// Report
// ---------------------------------------------------------------------------

function median(values) {
  const sorted = values.filter((v) => v !== undefined).sort((a, b) => a - b);
  if (sorted.length === 0) {
    return undefined;
  }
  const middle = Math.floor(sorted.length / 2);
  return sorted.length % 2 === 1
    ? sorted[middle]
    : (sorted[middle - 1] + sorted[middle]) / 2;
}

const METRICS = [
  "wallSeconds",
  "cpuSeconds",
  "dockerdCpuSeconds",
  "registryCpuSeconds",
  "peakRssBytes",
  "dockerdPeakRssBytes",
  "registryPeakRssBytes",
  "registryBytes",
  "peakTempBytes",
  "engineStoreBytes",
  "otherCpuSeconds",
];

const PHASES = [
  "startup",
  "connect",
  "read",
  "plan",
  "push",
  "lists",
  "finish",
];

function phaseMedians(runs) {
  if (!runs.some((run) => run.phaseSeconds)) {
    return undefined;
  }
  return Object.fromEntries(
    PHASES.map((phase) => [
      phase,
      {
        seconds: median(runs.map((run) => run.phaseSeconds?.[phase])),
        cores: median(runs.map((run) => run.phaseCores?.[phase])),
      },
    ]),
  );
}

function phaseTable(results) {
  const rows = results.filter((result) => result.phaseMedians);
  if (rows.length === 0) {
    return undefined;
  }
  const lines = [
    `| method | ${PHASES.join(" s | ")} s |`,
    `|---|${PHASES.map(() => "---:").join("|")}|`,
  ];
  for (const result of rows) {
    const cells = PHASES.map((phase) => {
      const { seconds: duration, cores } = result.phaseMedians[phase];
      const text = seconds(duration);
      return cores === undefined ? text : `${text} (${cores.toFixed(1)})`;
    });
    lines.push(`| ${result.label} | ${cells.join(" | ")} |`);
  }
  return lines.join("\n");
}

function medians(runs) {
  return Object.fromEntries(
    METRICS.map((metric) => [
      metric,
      median(runs.map((run) => run[metric])),
    ]).filter(([, value]) => value !== undefined),
  );
}

const seconds = (value) => (value === undefined ? "" : value.toFixed(1));
const megabytes = (value) =>
  value === undefined ? "" : (value / MB).toFixed(0);

function markdownTable(results) {
  const header = [
    "method",
    "wall s",
    "CPU s (command)",
    "CPU s (dockerd)",
    "CPU s (registry)",
    "peak RSS MB (command)",
    "peak RSS MB (dockerd)",
    "registry MB",
    "peak temp MB",
    "engine store MB",
    "other CPU s",
  ];
  const lines = [
    `| ${header.join(" | ")} |`,
    `|${header.map((_, i) => (i === 0 ? "---" : "---:")).join("|")}|`,
  ];
  for (const result of results) {
    const m = result.median;
    lines.push(
      `| ${[
        result.label,
        seconds(m.wallSeconds),
        seconds(m.cpuSeconds),
        seconds(m.dockerdCpuSeconds),
        seconds(m.registryCpuSeconds),
        megabytes(m.peakRssBytes),
        megabytes(m.dockerdPeakRssBytes),
        megabytes(m.registryBytes),
        megabytes(m.peakTempBytes),
        megabytes(m.engineStoreBytes),
        seconds(m.otherCpuSeconds),
      ].join(" | ")} |`,
    );
  }
  return lines.join("\n");
}

/**
 * Estimates the least wall time any importer needs on this machine: the
 * archive's gunzip is one serial stream, while hashing every layer byte
 * (openssl, as Node.js uses) and compressing the unique layer bytes can spread
 * over all cores. Registry and disk costs are left out, so it is a lower bound.
 */
function floorEstimate(byId, gzipOneCoreId) {
  const gunzip = byId.gunzip?.median;
  const hash = byId["openssl-sha256"]?.median;
  const gzip = byId[gzipOneCoreId]?.median;
  if (!gunzip || !hash || !gzip) {
    return undefined;
  }
  const cpu = gunzip.cpuSeconds + hash.cpuSeconds + gzip.cpuSeconds;
  return {
    wallSeconds: Math.max(gunzip.wallSeconds, cpu / CORES),
    cpuSeconds: cpu,
  };
}

function ratios(byId) {
  const wall = (id) => byId[id]?.median.wallSeconds;
  const list = [];
  const add = (name, numerator, denominator) => {
    if (numerator !== undefined && denominator !== undefined) {
      list.push({ name, value: numerator / denominator });
    }
  };
  const floor6 = floorEstimate(byId, "gzip6-1core");
  const floor1 = floorEstimate(byId, "gzip1-1core");
  add("direct / docker CLI", wall("direct"), wall("docker-cli"));
  add("direct / skopeo", wall("direct"), wall("skopeo"));
  add(
    "direct / floor (gzip -dc beside gzip -4 on all cores, measured)",
    wall("direct"),
    wall("floor"),
  );
  add(
    "direct / floor (gunzip + sha256 + gzip -6, estimate)",
    wall("direct"),
    floor6?.wallSeconds,
  );
  add(
    "direct level 1 / floor (gunzip + sha256 + gzip -1, estimate)",
    wall("direct-level1"),
    floor1?.wallSeconds,
  );
  add("direct / gzip -dc archive", wall("direct"), wall("gunzip"));
  add(
    "ppa-load --docker / docker CLI",
    wall("docker-path"),
    wall("docker-cli"),
  );
  return { list, floor6, floor1 };
}

function versionOf(command, args) {
  const result = spawnSync(command, args, { encoding: "utf8" });
  return (result.stdout || result.stderr || "").trim().split("\n")[0];
}

function machineInfo() {
  const cpuinfo = readFileSync("/proc/cpuinfo", "utf8");
  const os = readFileSync("/etc/os-release", "utf8").match(
    /^PRETTY_NAME="?([^"\n]*)"?/m,
  )?.[1];
  const disk = spawnSync("df", ["-hT", BENCH_ROOT], { encoding: "utf8" })
    .stdout.trim()
    .split("\n")
    .at(-1);
  return {
    cores: CORES,
    cpu: cpuinfo.match(/^model name\s*:\s*(.*)$/m)?.[1],
    memoryBytes: totalmem(),
    disk,
    os,
    kernel: versionOf("uname", ["-r"]),
    node: process.version,
    dockerClient: versionOf("docker", ["--version"]),
    dockerd: versionOf("dockerd", ["--version"]),
    registry: versionOf("docker-registry", ["--version"]),
    skopeo: versionOf("skopeo", ["--version"]),
    gzip: versionOf("gzip", ["--version"]),
    openssl: versionOf("openssl", ["version"]),
  };
}

/** Returns the commit of the work tree and the source files that differ from it. */
function sourceRevision() {
  const git = (args) =>
    spawnSync("git", ["-C", REPOSITORY_ROOT, ...args], {
      encoding: "utf8",
    }).stdout.trim();
  return {
    commit: git(["rev-parse", "HEAD"]),
    modifiedFiles: git([
      "status",
      "--porcelain",
      "--",
      "src",
      "bin",
      "package.json",
    ])
      .split("\n")
      .filter(Boolean)
      .map((line) => line.slice(3)),
  };
}

// ---------------------------------------------------------------------------
// Main
// ---------------------------------------------------------------------------

async function main() {
  const options = parseArguments(process.argv.slice(2));
  checkPrerequisites();
  await mkdir(BENCH_ROOT, { recursive: true });
  const corpus = await ensureArchive({
    scale: options.scale,
    folder: archiveFolder(BENCH_ROOT, options.scale),
    log: (line) => console.error(line),
  });
  const workRoot = join(BENCH_ROOT, "work");
  await mkdir(workRoot, { recursive: true });
  const methods = METHODS.filter((method) =>
    options.methods.includes(method.id),
  );
  const build = loadBuild(options.build ?? snapshotBuild());
  console.error(
    `measuring ppa-load build ${build.id} (.bench/builds/${build.id})`,
  );
  const context = {
    corpus,
    workRoot,
    namespace: options.namespace,
    cli: build.cli,
  };
  const summary = corpus.summary;
  console.error(
    `archive ${corpus.archive}: ${(summary.archiveBytes / MB).toFixed(0)} MB, ` +
      `${summary.imageTarballs} image tarballs of ${(summary.imageTarballBytes / MB).toFixed(0)} MB, ` +
      `${(summary.layerBytesUnique / MB).toFixed(0)} MB unique layer bytes`,
  );

  const runsById = Object.fromEntries(methods.map((method) => [method.id, []]));
  // Rounds interleave the methods, so a slow phase of the machine spreads over all of them.
  for (let round = 1; round <= options.runs; round += 1) {
    for (const method of methods) {
      const result = await runOnce(method, context);
      runsById[method.id].push(result);
      console.error(
        `run ${round}/${options.runs} ${method.label}: ${result.wallSeconds.toFixed(1)} s wall, ` +
          `${result.cpuSeconds.toFixed(1)} s CPU`,
      );
    }
  }

  const results = methods.map((method) => ({
    id: method.id,
    label: method.label,
    group: method.group,
    runs: runsById[method.id],
    median: medians(runsById[method.id]),
    phaseMedians: phaseMedians(runsById[method.id]),
  }));
  const byId = Object.fromEntries(results.map((result) => [result.id, result]));
  const { list, floor6, floor1 } = ratios(byId);

  const date = new Date().toISOString();
  const report = {
    date,
    command: `node bench/run.mjs ${process.argv.slice(2).join(" ")}`.trim(),
    scale: options.scale,
    runs: options.runs,
    namespace: options.namespace,
    machine: machineInfo(),
    build: { id: build.id, ...build.source },
    corpus: summary,
    results,
    floorEstimates: { gzip6: floor6, gzip1: floor1 },
    ratios: list,
  };
  const resultPath = join(
    BENCH_ROOT,
    `results-${date.replaceAll(":", "-").replace(/\.\d+Z$/, "Z")}.json`,
  );
  await writeFile(resultPath, `${JSON.stringify(report, null, 2)}\n`);

  const lines = [
    `Scale ${options.scale}: archive ${(summary.archiveBytes / MB).toFixed(0)} MB, ` +
      `image tarballs ${(summary.imageTarballBytes / MB).toFixed(0)} MB, ` +
      `unique layers ${(summary.layerBytesUnique / MB).toFixed(0)} MB. ` +
      `Median of ${options.runs} runs, ${CORES} cores. ` +
      `ppa-load build ${build.id}: commit ${build.source.commit.slice(0, 12)}, ` +
      `${build.source.modifiedFiles.length} modified source files.`,
    "",
    markdownTable(results),
    "",
  ];
  if (floor6) {
    lines.push(
      `Floor estimate with gzip -6: ${floor6.wallSeconds.toFixed(1)} s wall, ${floor6.cpuSeconds.toFixed(1)} s CPU.`,
    );
  }
  if (floor1) {
    lines.push(
      `Floor estimate with gzip -1: ${floor1.wallSeconds.toFixed(1)} s wall, ${floor1.cpuSeconds.toFixed(1)} s CPU.`,
    );
  }
  const phases = phaseTable(results);
  if (phases) {
    lines.push(
      "",
      "ppa-load phases, from its progress lines: median seconds, and in brackets the median " +
        "number of cores ppa-load kept busy (phases of 1 s or more):",
      "",
      phases,
    );
  }
  lines.push("", "| ratio of wall times | value |", "|---|---:|");
  for (const ratio of list) {
    lines.push(`| ${ratio.name} | ${ratio.value.toFixed(2)} |`);
  }
  lines.push("", `JSON: ${resultPath}`);
  console.log(lines.join("\n").replace(/\n{3,}/g, "\n\n"));
}

await main();
