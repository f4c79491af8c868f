// Builds a PPA archive for the benchmark from this machine's /usr files.
//
// Usage: node bench/make-archive.mjs [--scale S] [--out DIR]
//
// Shape: 6 images, each a shared base layer (OS libraries, binaries, locales
// and docs from /usr) plus one image-specific layer (a JDK, a Python tree,
// LLVM, PostgreSQL and GCC, node modules, also from /usr). Two images also
// ship a ppc64le variant with the same layers and a different config, so the
// archive contains 8 image tarballs for 6 images, 2 of them multi-architecture.
// Each tarball is in `docker save` format (Docker 20.10 legacy layout with
// manifest.json and repositories) and is a plain tar despite its .tar.gz
// name, as in many real PPA archives. The archive is `tar | gzip -6` with
// manifest.yaml and manifest.json first, then one Helm chart, then the image
// tarballs.
//
// At scale 1 the base layer is about 122 MB, the unique layer bytes about
// 430 MB, the image tarballs 1.38 GB and the archive about 540 MB
// (538 MB on the machine of docs/benchmarks.md). Layer
// sizes scale linearly. MB is 10^6 bytes.
//
// Output, in DIR (default .bench/scale-S):
//   ppa-bench.tgz        the archive
//   layers/KEY.tar       every distinct layer tar
//   unique-layers.bin    the distinct layer tars concatenated, input of the
//                        compression floors
//   corpus-info.json     layer digests and sizes, image tarballs, totals;
//                        written last, so its presence marks a complete build
//
// Contents depend on the files of this machine, so digests differ between
// machines but are stable on one machine while /usr does not change. The
// image tarballs are streamed straight into the outer tar, so memory stays
// small at any scale.

import { spawn } from "node:child_process";
import { createHash } from "node:crypto";
import { once } from "node:events";
import {
  accessSync,
  constants,
  createWriteStream,
  existsSync,
  lstatSync,
  openSync,
  readdirSync,
  readFileSync,
  readlinkSync,
  statSync,
} from "node:fs";
import { mkdir, open, readFile, rename, rm, writeFile } from "node:fs/promises";
import { join, resolve } from "node:path";
import { fileURLToPath } from "node:url";
import { gzipSync } from "node:zlib";

const MB = 1000 * 1000;
const BLOCK = 512;
const NAME_FIELD_SIZE = 100;
/** Source files larger than this are skipped, so no single file dominates a layer. */
const MAX_FILE_BYTES = 24 * MB;
const BASE_MB = 120;
const CREATED = "2024-05-01T00:00:00Z";
/** 2024-05-01T00:00:00Z, the mtime of every entry that is not a copied file. */
const FIXED_MTIME = 1714521600;

/** Shares of the base layer budget, by source folder. The base keeps OS paths. */
const BASE_RECIPE = [
  ["/usr/lib/x86_64-linux-gnu", 0.5],
  ["/usr/bin", 0.25],
  ["/usr/share/locale", 0.06],
  ["/usr/share/doc", 0.05],
  ["/usr/share/zoneinfo", 0.03],
  ["/usr/share/i18n", 0.04],
  ["/usr/share/perl", 0.04],
  ["/usr/share/mime", 0.03],
];

/** Images: name, tag, image layer recipe [folder, MB], extra architectures, description. */
const IMAGES = [
  {
    name: "bench-java",
    tag: "1.0.0",
    recipe: [
      ["/usr/lib/jvm/java-17-openjdk-amd64/lib", 40],
      ["/usr/share/java", 10],
      ["/usr/lib/jvm", 20],
    ],
    variants: ["ppc64le"],
    description: "Java runtime and jars",
  },
  {
    name: "bench-pyapi",
    tag: "2.1.0",
    recipe: [["/usr/lib/google-cloud-sdk", 45]],
    variants: [],
    description: "large Python application",
  },
  {
    name: "bench-native",
    tag: "3.4.0",
    recipe: [["/usr/lib/llvm-14", 80]],
    variants: [],
    description: "native binaries and libraries",
  },
  {
    name: "bench-py",
    tag: "1.2.0",
    recipe: [
      ["/usr/lib/python3.11", 22],
      ["/usr/lib/python3", 8],
    ],
    variants: [],
    description: "Python standard library and packages",
  },
  {
    name: "bench-db",
    tag: "11.5.0",
    recipe: [
      ["/usr/lib/postgresql", 40],
      ["/usr/lib/gcc", 15],
    ],
    variants: [],
    description: "database server and toolchain",
  },
  {
    name: "bench-ui",
    tag: "0.9.0",
    recipe: [
      ["/usr/lib/node_modules", 14],
      ["/usr/share/vim", 6],
    ],
    variants: ["ppc64le"],
    description: "Node.js front end",
  },
];

/** Folders that fill a layer when its recipe folders are missing or too small. */
const FALLBACK = [
  "/usr/lib",
  "/usr/share",
  "/usr/libexec",
  "/usr/bin",
  "/usr/sbin",
  "/usr/include",
];

const CHART_PATH = "charts/bench-suite-1.0.0.tgz";

// ---------------------------------------------------------------------------
// Tar writing
// ---------------------------------------------------------------------------

/** Encodes pax extended header records (`<length> <key>=<value>\n`). */
function paxRecords(records) {
  const parts = Object.entries(records).map(([key, value]) => {
    const rest = ` ${key}=${value}\n`;
    const restLength = Buffer.byteLength(rest);
    // The length prefix counts its own digits.
    let digits = 1;
    while (String(restLength + digits).length > digits) {
      digits += 1;
    }
    return Buffer.from(`${restLength + digits}${rest}`);
  });
  return Buffer.concat(parts);
}

function writeOctal(header, offset, width, value) {
  const digits = Math.trunc(value)
    .toString(8)
    .padStart(width - 1, "0");
  if (digits.length > width - 1) {
    throw new RangeError(
      `Value ${value} does not fit a ${width}-byte tar field`,
    );
  }
  header.write(`${digits}\0`, offset, "latin1");
}

function ustarHeader({ name, mode, size, mtime, typeFlag, linkname }) {
  const header = Buffer.alloc(BLOCK);
  name.copy(header, 0, 0, Math.min(name.length, NAME_FIELD_SIZE));
  writeOctal(header, 100, 8, mode);
  writeOctal(header, 108, 8, 0);
  writeOctal(header, 116, 8, 0);
  writeOctal(header, 124, 12, size);
  writeOctal(header, 136, 12, mtime);
  header.write(typeFlag, 156, "latin1");
  linkname.copy(header, 157, 0, Math.min(linkname.length, NAME_FIELD_SIZE));
  header.write("ustar\0", 257, "latin1");
  header.write("00", 263, "latin1");
  header.write("root", 265, "latin1");
  header.write("root", 297, "latin1");
  writeOctal(header, 329, 8, 0);
  writeOctal(header, 337, 8, 0);
  // The checksum is the byte sum of the header with the checksum field read
  // as eight spaces, stored as six octal digits, NUL and space.
  header.fill(" ", 148, 156);
  let checksum = 0;
  for (const byte of header) {
    checksum += byte;
  }
  header.write(`${checksum.toString(8).padStart(6, "0")}\0 `, 148, "latin1");
  return header;
}

const TYPE_FLAGS = { file: "0", symlink: "2", directory: "5" };

/**
 * Encodes the header blocks of one entry: a pax extended header first when
 * the name or link target exceeds the 100-byte ustar fields.
 */
function entryHeader({ name, type, mode, size, mtime, linkname = "" }) {
  const nameBytes = Buffer.from(name);
  const linkBytes = Buffer.from(linkname);
  const extended = {};
  if (nameBytes.length > NAME_FIELD_SIZE) {
    extended.path = name;
  }
  if (linkBytes.length > NAME_FIELD_SIZE) {
    extended.linkpath = linkname;
  }
  const blocks = [];
  if (Object.keys(extended).length > 0) {
    const records = paxRecords(extended);
    blocks.push(
      ustarHeader({
        name: Buffer.from(`PaxHeader/${name.split("/").filter(Boolean).pop()}`),
        mode: 0o644,
        size: records.length,
        mtime,
        typeFlag: "x",
        linkname: Buffer.alloc(0),
      }),
      records,
      Buffer.alloc(padding(records.length)),
    );
  }
  blocks.push(
    ustarHeader({
      name: nameBytes,
      mode,
      size,
      mtime,
      typeFlag: TYPE_FLAGS[type],
      linkname: linkBytes,
    }),
  );
  return Buffer.concat(blocks);
}

function padding(size) {
  return (BLOCK - (size % BLOCK)) % BLOCK;
}

/** Bytes that a tar entry takes, header and padding included. */
function entryBytes(entry) {
  return entryHeader(entry).length + entry.size + padding(entry.size);
}

/** Bytes of a tar made of `entries`, including the two zero end blocks. */
function tarBytes(entries) {
  return entries.reduce((sum, entry) => sum + entryBytes(entry), 2 * BLOCK);
}

/**
 * A byte sink over one or more writable streams that waits for 'drain' when a
 * stream's buffer is full, and optionally hashes and counts what passes.
 */
class Sink {
  constructor(streams, { hash = false } = {}) {
    this.streams = streams;
    this.hash = hash ? createHash("sha256") : undefined;
    this.bytes = 0;
  }

  async write(chunk) {
    if (chunk.length === 0) {
      return;
    }
    this.hash?.update(chunk);
    this.bytes += chunk.length;
    const waits = [];
    for (const stream of this.streams) {
      if (!stream.write(chunk)) {
        waits.push(once(stream, "drain"));
      }
    }
    await Promise.all(waits);
  }
}

/** Copies bytes [0, size) of a file into the sink in 1 MiB reads. */
async function copyFile(path, size, sink) {
  const handle = await open(path, "r");
  try {
    let offset = 0;
    while (offset < size) {
      const buffer = Buffer.allocUnsafe(Math.min(1 << 20, size - offset));
      const { bytesRead } = await handle.read(buffer, 0, buffer.length, offset);
      if (bytesRead === 0) {
        throw new Error(
          `${path} ended at byte ${offset}, expected ${size} bytes`,
        );
      }
      await sink.write(buffer.subarray(0, bytesRead));
      offset += bytesRead;
    }
  } finally {
    await handle.close();
  }
}

/**
 * Writes a tar of `entries` into the sink. An entry's body is a Buffer
 * (`data`), a file (`path`) or a function that writes exactly `size` bytes.
 */
async function writeTar(entries, sink) {
  for (const entry of entries) {
    await sink.write(entryHeader(entry));
    if (entry.data !== undefined) {
      await sink.write(entry.data);
    } else if (entry.path !== undefined) {
      await copyFile(entry.path, entry.size, sink);
    } else if (entry.write !== undefined) {
      const before = sink.bytes;
      await entry.write(sink);
      if (sink.bytes - before !== entry.size) {
        throw new Error(
          `Tar entry ${entry.name} wrote ${sink.bytes - before} bytes, expected ${entry.size}`,
        );
      }
    }
    await sink.write(Buffer.alloc(padding(entry.size)));
  }
  await sink.write(Buffer.alloc(2 * BLOCK));
}

function fileEntry(name, data) {
  return {
    name,
    type: "file",
    mode: 0o644,
    size: data.length,
    mtime: FIXED_MTIME,
    data,
  };
}

function directoryEntry(name) {
  return {
    name: `${name}/`,
    type: "directory",
    mode: 0o755,
    size: 0,
    mtime: FIXED_MTIME,
  };
}

async function closeStream(stream) {
  stream.end();
  await once(stream, "close");
}

// ---------------------------------------------------------------------------
// Layers from /usr files
// ---------------------------------------------------------------------------

/** Yields [path, lstat] of the regular files and symlinks below root, in sorted order. */
function* walkFiles(root) {
  let names;
  try {
    names = readdirSync(root).sort();
  } catch {
    return;
  }
  for (const name of names) {
    const path = join(root, name);
    let stats;
    try {
      stats = lstatSync(path);
    } catch {
      continue;
    }
    if (stats.isDirectory()) {
      yield* walkFiles(path);
    } else if (stats.isFile() || stats.isSymbolicLink()) {
      yield [path, stats];
    }
  }
}

function isReadable(path) {
  try {
    accessSync(path, constants.R_OK);
    return true;
  } catch {
    return false;
  }
}

/** Chooses /usr files for the layers, so that no file lands in two layers. */
class FilePicker {
  constructor() {
    /** dev:ino of every file already placed in a layer. */
    this.used = new Set();
  }

  /** Appends files from `root` to `picked` until `budget` bytes; returns the bytes added. */
  pick(root, budget, picked) {
    let added = 0;
    for (const [path, stats] of walkFiles(root)) {
      if (added >= budget) {
        break;
      }
      const key = `${stats.dev}:${stats.ino}`;
      if (this.used.has(key)) {
        continue;
      }
      if (stats.isFile()) {
        if (stats.size > MAX_FILE_BYTES) {
          continue;
        }
        // A file that would overshoot the budget is skipped in favour of smaller ones.
        if (added + stats.size > budget * 1.05 && stats.size > MB) {
          continue;
        }
        if (!isReadable(path)) {
          continue;
        }
        added += stats.size;
      }
      this.used.add(key);
      picked.push([path, stats]);
    }
    return added;
  }

  /** Picks files for a layer of `totalBytes` from `recipe` ([folder, bytes]), then the fallback folders. */
  collect(recipe, totalBytes) {
    const picked = [];
    let added = 0;
    for (const [root, bytes] of recipe) {
      if (bytes > 0) {
        added += this.pick(root, bytes, picked);
      }
    }
    for (const root of FALLBACK) {
      if (added >= totalBytes * 0.98) {
        break;
      }
      added += this.pick(root, totalBytes - added, picked);
    }
    if (added < totalBytes * 0.9) {
      throw new Error(
        `Not enough readable files under /usr for a ${totalBytes}-byte layer (found ${added} bytes)`,
      );
    }
    return picked;
  }
}

/**
 * Writes one layer tar: entries sorted by name, each parent directory once
 * before its first child. `prefix` moves /usr/X to PREFIX/X; without it the
 * files keep their paths.
 */
async function writeLayer(picked, prefix, sinkStreams) {
  const entries = picked.map(([path, stats]) => {
    let relative = path.replace(/^\/+/, "");
    if (prefix !== undefined) {
      relative = `${prefix}/${relative.startsWith("usr/") ? relative.slice(4) : relative}`;
    }
    return { relative, path, stats };
  });
  entries.sort((a, b) => compareStrings(a.relative, b.relative));

  const sink = new Sink(sinkStreams, { hash: true });
  const directories = new Set();
  for (const { relative, path, stats } of entries) {
    const parts = relative.split("/").slice(0, -1);
    for (let i = 1; i <= parts.length; i += 1) {
      const directory = parts.slice(0, i).join("/");
      if (!directories.has(directory)) {
        directories.add(directory);
        await sink.write(entryHeader(directoryEntry(directory)));
      }
    }
    const common = {
      name: relative,
      mode: stats.mode & 0o7777,
      mtime: Math.floor(stats.mtimeMs / 1000),
    };
    if (stats.isSymbolicLink()) {
      const header = {
        ...common,
        type: "symlink",
        size: 0,
        linkname: readlinkSync(path),
      };
      await sink.write(entryHeader(header));
      continue;
    }
    const data = await readFile(path);
    await sink.write(
      entryHeader({ ...common, type: "file", size: data.length }),
    );
    await sink.write(data);
    await sink.write(Buffer.alloc(padding(data.length)));
  }
  await sink.write(Buffer.alloc(2 * BLOCK));
  return {
    diffId: `sha256:${sink.hash.digest("hex")}`,
    size: sink.bytes,
    entries: entries.length,
  };
}

// ---------------------------------------------------------------------------
// Image tarballs, manifests and chart
// ---------------------------------------------------------------------------

/** Compares by UTF-16 code units, as Array.prototype.sort does by default. */
function compareStrings(a, b) {
  if (a < b) {
    return -1;
  }
  return a > b ? 1 : 0;
}

function sha256Hex(data) {
  return createHash("sha256").update(data).digest("hex");
}

/**
 * Lists the members of a `docker save` tarball (legacy layout) for one
 * image, sorted by name, and returns them with the image config digest.
 */
function imageTarballEntries(repoTag, architecture, layers, description) {
  const config = {
    architecture,
    config: {
      Cmd: ["/bin/sh"],
      Env: [
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
      ],
      Labels: { bench: "ppa-load", description, name: repoTag.split(":")[0] },
      WorkingDir: "/",
    },
    created: CREATED,
    history: [
      {
        created: CREATED,
        created_by: "/bin/sh -c #(nop) ADD file:base-rootfs in / ",
      },
      {
        created: CREATED,
        created_by: "/bin/sh -c #(nop) COPY dir:app in /opt/ ",
      },
    ].slice(0, layers.length),
    os: "linux",
    rootfs: { diff_ids: layers.map((layer) => layer.diffId), type: "layers" },
  };
  const configBytes = Buffer.from(JSON.stringify(config));
  const configName = `${sha256Hex(configBytes)}.json`;

  const entries = [];
  const v1Ids = [];
  let parent = "";
  let chainId = "";
  layers.forEach((layer, index) => {
    chainId =
      index === 0
        ? layer.diffId
        : `sha256:${sha256Hex(`${chainId} ${layer.diffId}`)}`;
    const top = index === layers.length - 1;
    const v1Id = sha256Hex(
      `${chainId} ${parent}${top ? ` ${configName}` : ""}`,
    );
    const v1 = {
      id: v1Id,
      ...(parent ? { parent } : {}),
      created: CREATED,
      container_config: { Cmd: null, Env: null },
      os: "linux",
      ...(top ? { architecture, config: config.config } : {}),
    };
    entries.push(directoryEntry(v1Id));
    entries.push(fileEntry(`${v1Id}/VERSION`, Buffer.from("1.0")));
    entries.push(fileEntry(`${v1Id}/json`, Buffer.from(JSON.stringify(v1))));
    entries.push({
      name: `${v1Id}/layer.tar`,
      type: "file",
      mode: 0o644,
      size: layer.size,
      mtime: FIXED_MTIME,
      path: layer.path,
    });
    v1Ids.push(v1Id);
    parent = v1Id;
  });

  const separator = repoTag.lastIndexOf(":");
  const repository = repoTag.slice(0, separator);
  const tag = repoTag.slice(separator + 1);
  const manifest = [
    {
      Config: configName,
      RepoTags: [repoTag],
      Layers: v1Ids.map((id) => `${id}/layer.tar`),
    },
  ];
  entries.push(fileEntry(configName, configBytes));
  entries.push(
    fileEntry("manifest.json", Buffer.from(JSON.stringify(manifest))),
  );
  entries.push(
    fileEntry(
      "repositories",
      Buffer.from(JSON.stringify({ [repository]: { [tag]: v1Ids.at(-1) } })),
    ),
  );
  entries.sort((a, b) => compareStrings(a.name, b.name));
  return { entries, configDigest: `sha256:${sha256Hex(configBytes)}` };
}

function chartKey(name) {
  return name.replace(/^bench-/, "");
}

/** Builds a gzipped Helm chart with one Deployment and one image.repository key per image. */
async function chartArchive() {
  const values = [];
  const templates = [];
  for (const { name, tag } of IMAGES) {
    const key = chartKey(name);
    values.push(
      `${key}:\n  replicaCount: 1\n  image:\n    repository: ibmcom/${name}\n` +
        `    tag: ${tag}\n    pullPolicy: IfNotPresent\n`,
    );
    templates.push(
      `---\napiVersion: apps/v1\nkind: Deployment\nmetadata:\n` +
        `  name: {{ .Release.Name }}-${key}\nspec:\n  replicas: {{ .Values.${key}.replicaCount }}\n` +
        `  selector:\n    matchLabels:\n      app: ${key}\n  template:\n    metadata:\n` +
        `      labels:\n        app: ${key}\n    spec:\n      containers:\n      - name: ${key}\n` +
        `        image: "{{ .Values.${key}.image.repository }}:{{ .Values.${key}.image.tag }}"\n` +
        `        imagePullPolicy: {{ .Values.${key}.image.pullPolicy }}\n`,
    );
  }
  const files = {
    "Chart.yaml":
      'apiVersion: v2\nname: bench-suite\nversion: 1.0.0\nappVersion: "1.0.0"\n' +
      "description: Benchmark chart referencing every image of the PPA bench corpus\n",
    "templates/NOTES.txt": "PPA bench suite installed.\n",
    "templates/deployments.yaml": templates.join(""),
    "values.yaml": values.join("\n"),
  };
  const entries = [
    directoryEntry("bench-suite"),
    directoryEntry("bench-suite/templates"),
  ];
  for (const name of Object.keys(files).sort()) {
    entries.push(fileEntry(`bench-suite/${name}`, Buffer.from(files[name])));
  }
  const chunks = [];
  const sink = {
    bytes: 0,
    async write(chunk) {
      this.bytes += chunk.length;
      chunks.push(chunk);
    },
  };
  await writeTar(entries, sink);
  return gzipSync(Buffer.concat(chunks), { level: 9 });
}

/** Writes manifest.yaml and manifest.json in the PPA archive format. */
function ppaManifests(imageReferences) {
  const repositoryKeys = IMAGES.map(
    ({ name }) => `${chartKey(name)}.image.repository`,
  );
  const yaml = ["charts:", `- archive: ${CHART_PATH}`, "  repository-keys:"];
  for (const key of repositoryKeys) {
    yaml.push(`  - ${key}`);
  }
  yaml.push("images:");
  const json = {
    charts: [{ archive: CHART_PATH, "repository-keys": repositoryKeys }],
    images: [],
  };
  for (const { image, references } of imageReferences) {
    yaml.push(`- image: ${image}`, "  references:");
    for (const reference of references) {
      yaml.push(
        `  - repository: ${reference.repository}`,
        `    pull-repository: ${reference["pull-repository"]}`,
        "    platform:",
        "      os: linux",
        `      architecture: ${reference.platform.architecture}`,
      );
    }
    json.images.push({ image, references });
  }
  return {
    yaml: Buffer.from(`${yaml.join("\n")}\n`),
    json: Buffer.from(`${JSON.stringify(json, null, 2)}\n`),
  };
}

// ---------------------------------------------------------------------------
// Archive
// ---------------------------------------------------------------------------

/** Folder of the cached archive for a scale. */
export function archiveFolder(root, scale) {
  return join(root, `scale-${scale}`);
}

/**
 * Builds the archive for `scale` in `folder` unless corpus-info.json is
 * already there, and returns the parsed corpus-info.json.
 */
export async function ensureArchive({ scale, folder, log = console.log }) {
  const infoPath = join(folder, "corpus-info.json");
  if (existsSync(infoPath)) {
    return JSON.parse(readFileSync(infoPath, "utf8"));
  }
  if (!(scale > 0)) {
    throw new Error(`Invalid scale ${scale}: expected a number greater than 0`);
  }
  await rm(folder, { recursive: true, force: true });
  const layerFolder = join(folder, "layers");
  await mkdir(layerFolder, { recursive: true });

  log(`building layers from /usr files into ${layerFolder}`);
  const picker = new FilePicker();
  const uniqueStream = createWriteStream(join(folder, "unique-layers.bin"));
  const layers = {};
  const makeLayer = async (key, recipe, totalBytes, prefix) => {
    const picked = picker.collect(recipe, totalBytes);
    const path = join(layerFolder, `${key}.tar`);
    const layerStream = createWriteStream(path);
    const result = await writeLayer(picked, prefix, [
      layerStream,
      uniqueStream,
    ]);
    await closeStream(layerStream);
    layers[key] = { ...result, path };
    log(
      `  layer ${key.padEnd(13)} ${(result.size / MB).toFixed(1).padStart(7)} MB  ${result.entries} entries`,
    );
  };

  const baseBytes = Math.round(BASE_MB * scale * MB);
  await makeLayer(
    "base",
    BASE_RECIPE.map(([root, share]) => [root, Math.round(share * baseBytes)]),
    baseBytes,
    undefined,
  );
  for (const image of IMAGES) {
    const recipe = image.recipe.map(([root, megabytes]) => [
      root,
      Math.round(megabytes * scale * MB),
    ]);
    const total = recipe.reduce((sum, [, bytes]) => sum + bytes, 0);
    await makeLayer(image.name, recipe, total, `opt/${image.name}`);
  }
  await closeStream(uniqueStream);

  // Every image tarball is planned first, because its size goes into the outer
  // tar header before its bytes.
  const tarballs = [];
  const imageReferences = [];
  for (const { name, tag, variants, description } of IMAGES) {
    const references = [];
    for (const architecture of ["amd64", ...variants]) {
      const repoTag = `ibmcom/${name}:${tag}-${architecture}`;
      const file = `images/${name}-${tag}-${architecture}.tar.gz`;
      const { entries, configDigest } = imageTarballEntries(
        repoTag,
        architecture,
        [layers.base, layers[name]],
        description,
      );
      tarballs.push({
        file,
        repoTag,
        image: `ibmcom/${name}:${tag}`,
        architecture,
        config: configDigest,
        layers: ["base", name],
        entries,
        bytes: tarBytes(entries),
      });
      references.push({
        repository: repoTag,
        "pull-repository": repoTag,
        platform: { os: "linux", architecture },
      });
    }
    imageReferences.push({ image: `ibmcom/${name}:${tag}`, references });
  }
  const manifests = ppaManifests(imageReferences);
  const chart = await chartArchive();

  const outer = [
    fileEntry("manifest.yaml", manifests.yaml),
    fileEntry("manifest.json", manifests.json),
    directoryEntry("charts"),
    fileEntry(CHART_PATH, chart),
    directoryEntry("images"),
    ...tarballs.map((tarball) => ({
      name: tarball.file,
      type: "file",
      mode: 0o644,
      size: tarball.bytes,
      mtime: FIXED_MTIME,
      write: (sink) => writeTar(tarball.entries, sink),
    })),
  ];

  log("packing ppa-bench.tgz (tar | gzip -6)");
  const archivePath = join(folder, "ppa-bench.tgz");
  const partPath = `${archivePath}.part`;
  const output = openSync(partPath, "w");
  const gzip = spawn("gzip", ["-6", "-n"], {
    stdio: ["pipe", output, "inherit"],
  });
  const gzipExit = once(gzip, "exit");
  const outerSink = new Sink([gzip.stdin]);
  await writeTar(outer, outerSink);
  gzip.stdin.end();
  const [code] = await gzipExit;
  if (code !== 0) {
    throw new Error(
      `gzip -6 exited with status ${code} while writing ${partPath}`,
    );
  }
  await rename(partPath, archivePath);

  const layerBytesTotal = tarballs.reduce(
    (sum, tarball) =>
      sum + tarball.layers.reduce((s, key) => s + layers[key].size, 0),
    0,
  );
  const layerBytesUnique = Object.values(layers).reduce(
    (sum, layer) => sum + layer.size,
    0,
  );
  const info = {
    scale,
    archive: archivePath,
    uniqueLayers: join(folder, "unique-layers.bin"),
    layers: Object.fromEntries(
      Object.entries(layers).map(([key, layer]) => [
        key,
        {
          diffId: layer.diffId,
          size: layer.size,
          entries: layer.entries,
          path: layer.path,
        },
      ]),
    ),
    images: tarballs.map(({ entries, bytes, ...rest }) => ({
      ...rest,
      tarBytes: bytes,
    })),
    summary: {
      archiveBytes: statSync(archivePath).size,
      imageTarballBytes: tarballs.reduce(
        (sum, tarball) => sum + tarball.bytes,
        0,
      ),
      layerBytesTotal,
      layerBytesUnique,
      imageTarballs: tarballs.length,
      images: IMAGES.length,
    },
  };
  await writeFile(infoPath, `${JSON.stringify(info, null, 1)}\n`);
  const s = info.summary;
  log(`archive ${archivePath}`);
  log(`  archive size          ${(s.archiveBytes / MB).toFixed(1)} MB`);
  log(
    `  image tarballs        ${s.imageTarballs} files, ${(s.imageTarballBytes / MB).toFixed(1)} MB`,
  );
  log(`  layer bytes, total    ${(s.layerBytesTotal / MB).toFixed(1)} MB`);
  log(`  layer bytes, unique   ${(s.layerBytesUnique / MB).toFixed(1)} MB`);
  return info;
}

function parseArguments(argv) {
  const options = { scale: 0.25, out: undefined };
  for (let i = 0; i < argv.length; i += 1) {
    const argument = argv[i];
    if (argument === "--scale") {
      options.scale = Number(argv[++i]);
    } else if (argument === "--out") {
      options.out = argv[++i];
    } else {
      throw new Error(
        `Unknown argument ${argument}; usage: make-archive.mjs [--scale S] [--out DIR]`,
      );
    }
  }
  if (!(options.scale > 0)) {
    throw new Error(
      `Invalid --scale ${options.scale}: expected a number greater than 0`,
    );
  }
  return options;
}

if (
  process.argv[1] &&
  resolve(process.argv[1]) === fileURLToPath(import.meta.url)
) {
  const options = parseArguments(process.argv.slice(2));
  const root = resolve(fileURLToPath(new URL("..", import.meta.url)), ".bench");
  const folder = options.out
    ? resolve(options.out)
    : archiveFolder(root, options.scale);
  await ensureArchive({ scale: options.scale, folder });
}
