/**
 * Builders for test archives: tar files, `docker save` tarballs, Helm charts
 * and IBM Passport Advantage (PPA) archives, all made in memory without a
 * Docker daemon.
 *
 * Every function is pure and deterministic. Entries get uid/gid 0 (user and
 * group "root") and, unless they set their own, the mtime
 * 2019-01-01T00:00:00Z. Gzip output has mtime 0 and a fixed OS byte.
 *
 * This file imports only `node:` modules, so that
 * `node --experimental-strip-types testdata/regenerate.ts` can load it
 * directly. It uses only TypeScript syntax that Node can erase (no enums,
 * namespaces or parameter properties).
 */
import { createCipheriv, createHash } from "node:crypto";
import { gzipSync } from "node:zlib";

/** Default mtime of tar entries, and the `created` time of image configs. */
export const FIXED_MTIME = new Date("2019-01-01T00:00:00Z");

const CREATED = FIXED_MTIME.toISOString().replace(".000Z", "Z");
const BLOCK_SIZE = 512;

// ---------------------------------------------------------------------------
// Tar writer
// ---------------------------------------------------------------------------

export type TarEntryType =
  "file" | "directory" | "symlink" | "link" | "pax-global";

/** One member of a tar archive. */
export interface TarEntry {
  /**
   * Member name, written byte for byte. Nothing is normalized, so `../x`,
   * `/abs` and backslashes reach the archive as given. Directory names
   * conventionally end in `/`.
   */
  path: string;
  /** Entry kind. Defaults to `file`. */
  type?: TarEntryType;
  /** Contents of a file, or the records of a pax global header (see paxRecords). */
  body?: Buffer | string;
  /** Permission bits. Defaults to 0644, or 0755 for directories and 0777 for symlinks. */
  mode?: number;
  /** Target of a symlink or hard link. */
  linkpath?: string;
  mtime?: Date;
}

const TYPE_FLAGS: Record<TarEntryType, string> = {
  file: "0",
  link: "1",
  symlink: "2",
  directory: "5",
  "pax-global": "g",
};

const DEFAULT_MODES: Record<TarEntryType, number> = {
  file: 0o644,
  link: 0o644,
  symlink: 0o777,
  directory: 0o755,
  "pax-global": 0o644,
};

// Name and linkname fields of a ustar header hold at most 100 bytes.
const NAME_FIELD_SIZE = 100;

/**
 * Encodes pax extended header records (`<length> <key>=<value>\n`), for the
 * body of a `pax-global` entry.
 */
export function paxRecords(records: Record<string, string>): Buffer {
  const encoded = Object.entries(records).map(([key, value]) => {
    const rest = ` ${key}=${value}\n`;
    const restLength = Buffer.byteLength(rest);
    // The length prefix counts its own digits.
    let digits = 1;
    while (String(restLength + digits).length > digits) {
      digits += 1;
    }
    return Buffer.from(`${restLength + digits}${rest}`);
  });
  return Buffer.concat(encoded);
}

/**
 * Builds a POSIX ustar archive in memory. Names or link targets longer than
 * 100 bytes get a pax extended header (`x`) with `path=` or `linkpath=`. The
 * archive ends with two zero blocks.
 */
export function tarEntries(entries: TarEntry[]): Buffer {
  const blocks = entries.flatMap(encodeEntry);
  blocks.push(Buffer.alloc(2 * BLOCK_SIZE));
  return Buffer.concat(blocks);
}

function encodeEntry(entry: TarEntry): Buffer[] {
  const type = entry.type ?? "file";
  const body = toBuffer(entry.body ?? "");
  if (body.length > 0 && type !== "file" && type !== "pax-global") {
    throw new Error(
      `Invalid tar entry ${entry.path}: a ${type} cannot have a body`,
    );
  }
  if ((type === "symlink" || type === "link") && entry.linkpath === undefined) {
    throw new Error(
      `Invalid tar entry ${entry.path}: a ${type} needs linkpath`,
    );
  }

  const name = Buffer.from(entry.path);
  const linkname = Buffer.from(entry.linkpath ?? "");
  const mtime = entry.mtime ?? FIXED_MTIME;
  const blocks: Buffer[] = [];

  const extended: Record<string, string> = {};
  if (type !== "pax-global" && name.length > NAME_FIELD_SIZE) {
    extended.path = entry.path;
  }
  if (linkname.length > NAME_FIELD_SIZE) {
    extended.linkpath = entry.linkpath ?? "";
  }
  if (Object.keys(extended).length > 0) {
    const records = paxRecords(extended);
    blocks.push(
      ustarHeader({
        name: Buffer.from(`PaxHeader/${baseName(entry.path)}`),
        mode: 0o644,
        size: records.length,
        mtime,
        typeFlag: "x",
        linkname: Buffer.alloc(0),
      }),
      padToBlock(records),
    );
  }

  blocks.push(
    ustarHeader({
      name,
      mode: entry.mode ?? DEFAULT_MODES[type],
      size: body.length,
      mtime,
      typeFlag: TYPE_FLAGS[type],
      linkname,
    }),
    padToBlock(body),
  );
  return blocks;
}

interface HeaderFields {
  name: Buffer;
  mode: number;
  size: number;
  mtime: Date;
  typeFlag: string;
  linkname: Buffer;
}

/** Writes one 512-byte ustar header. Names longer than 100 bytes are cut. */
function ustarHeader(fields: HeaderFields): Buffer {
  const header = Buffer.alloc(BLOCK_SIZE);
  fields.name.copy(header, 0, 0, NAME_FIELD_SIZE);
  writeOctal(header, 100, 8, fields.mode);
  writeOctal(header, 108, 8, 0); // uid
  writeOctal(header, 116, 8, 0); // gid
  writeOctal(header, 124, 12, fields.size);
  writeOctal(header, 136, 12, Math.floor(fields.mtime.getTime() / 1000));
  header.write(fields.typeFlag, 156, "latin1");
  fields.linkname.copy(header, 157, 0, NAME_FIELD_SIZE);
  header.write("ustar\0", 257, "latin1");
  header.write("00", 263, "latin1");
  header.write("root", 265, "latin1"); // uname
  header.write("root", 297, "latin1"); // gname
  writeOctal(header, 329, 8, 0); // devmajor
  writeOctal(header, 337, 8, 0); // devminor

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

/** Writes `value` as zero-padded octal digits followed by NUL. */
function writeOctal(
  header: Buffer,
  offset: number,
  width: number,
  value: number,
): void {
  const digits = value.toString(8).padStart(width - 1, "0");
  if (digits.length > width - 1) {
    throw new RangeError(
      `Value ${value} does not fit a ${width}-byte octal tar field`,
    );
  }
  header.write(`${digits}\0`, offset, "latin1");
}

function padToBlock(data: Buffer): Buffer {
  const remainder = data.length % BLOCK_SIZE;
  if (remainder === 0) {
    return data;
  }
  return Buffer.concat([data, Buffer.alloc(BLOCK_SIZE - remainder)]);
}

function baseName(path: string): string {
  const parts = path.split("/").filter((part) => part !== "");
  return parts.at(-1) ?? "entry";
}

function toBuffer(data: Buffer | string): Buffer {
  return typeof data === "string" ? Buffer.from(data) : data;
}

/**
 * Orders paths the way Go's filepath.Walk visits them: component by
 * component, a directory before its contents. `docker save` and the layer
 * tars docker writes list their entries in this order.
 */
export function compareWalkOrder(a: string, b: string): number {
  const partsA = a.split("/").filter((part) => part !== "");
  const partsB = b.split("/").filter((part) => part !== "");
  const common = Math.min(partsA.length, partsB.length);
  for (let i = 0; i < common; i += 1) {
    if (partsA[i] !== partsB[i]) {
      return partsA[i] < partsB[i] ? -1 : 1;
    }
  }
  return partsA.length - partsB.length;
}

/**
 * Adds a directory entry before the first file below each folder, keeping
 * the files in the given order.
 */
function withParentDirectories(files: TarEntry[]): TarEntry[] {
  const written = new Set<string>();
  const entries: TarEntry[] = [];
  for (const file of files) {
    const parts = file.path.split("/");
    for (let depth = 1; depth < parts.length; depth += 1) {
      const directory = `${parts.slice(0, depth).join("/")}/`;
      if (!written.has(directory)) {
        written.add(directory);
        entries.push({ path: directory, type: "directory" });
      }
    }
    entries.push(file);
  }
  return entries;
}

// ---------------------------------------------------------------------------
// Hashes and compression
// ---------------------------------------------------------------------------

export function sha256Hex(data: Buffer | string): string {
  return createHash("sha256").update(data).digest("hex");
}

/** Returns the hex part of a `sha256:<hex>` digest. */
export function digestHex(digest: string): string {
  if (!digest.startsWith("sha256:")) {
    throw new Error(`Invalid digest ${digest}: expected sha256:<hex>`);
  }
  return digest.slice("sha256:".length);
}

// Byte 9 of a gzip header names the operating system of the writer.
const GZIP_OS_BYTE = 9;
const GZIP_OS_UNIX = 3;

/**
 * Compresses with gzip at level 9. zlib writes mtime 0 and the OS byte of
 * its build platform (3 on Linux, 19 on macOS), so the OS byte is set to 3
 * (Unix) to make the bytes independent of the machine.
 *
 * NOTE: the deflate bytes still depend on the zlib that Node bundles
 * (process.versions.zlib), so a Node upgrade can change them.
 */
export function gzipDeterministic(data: Buffer): Buffer {
  const compressed = gzipSync(data, { level: 9 });
  compressed[GZIP_OS_BYTE] = GZIP_OS_UNIX;
  return compressed;
}

// ---------------------------------------------------------------------------
// Image references
// ---------------------------------------------------------------------------

interface ImageReference {
  domain: string;
  /** Repository path inside the registry, e.g. `library/busybox`. */
  path: string;
  tag: string;
}

/** Parses `name[:tag]` the way docker normalizes it: default domain docker.io, default tag latest. */
function parseReference(reference: string): ImageReference {
  if (reference.includes("@")) {
    throw new Error(
      `Invalid image reference ${reference}: digests are not supported, use name:tag`,
    );
  }
  let name = reference;
  let tag = "latest";
  const lastColon = reference.lastIndexOf(":");
  if (lastColon > reference.lastIndexOf("/")) {
    name = reference.slice(0, lastColon);
    tag = reference.slice(lastColon + 1);
  }

  const slash = name.indexOf("/");
  const first = slash === -1 ? "" : name.slice(0, slash);
  const isDomain =
    first.includes(".") || first.includes(":") || first === "localhost";
  if (isDomain) {
    const domain = first === "index.docker.io" ? "docker.io" : first;
    return { domain, path: name.slice(slash + 1), tag };
  }
  const path = slash === -1 ? `library/${name}` : name;
  return { domain: "docker.io", path, tag };
}

/** Returns the name docker shows, e.g. `busybox` for docker.io/library/busybox. */
function familiarName(reference: ImageReference): string {
  if (reference.domain !== "docker.io") {
    return `${reference.domain}/${reference.path}`;
  }
  return reference.path.startsWith("library/")
    ? reference.path.slice("library/".length)
    : reference.path;
}

/** Returns the fully qualified name, e.g. `docker.io/library/busybox:latest`. */
export function fullImageName(reference: string): string {
  const parsed = parseReference(reference);
  return `${parsed.domain}/${parsed.path}:${parsed.tag}`;
}

// ---------------------------------------------------------------------------
// Images
// ---------------------------------------------------------------------------

/** A layer's files, keyed by path relative to the image root. */
export interface LayerSpec {
  files: Record<string, string | Buffer>;
}

export interface ImageSpec {
  /** Names such as `busybox:latest` or `quay.io/upstream/tool:2.1`. */
  repoTags: string[];
  /** Layers from the base up. An image needs at least one. */
  layers: LayerSpec[];
  /** Defaults to `amd64`. */
  architecture?: string;
  /** Defaults to `linux`. */
  os?: string;
  variant?: string;
  labels?: Record<string, string>;
}

/** Image configuration JSON as docker stores it (a subset of its fields). */
export interface ImageConfig {
  architecture: string;
  os: string;
  variant?: string;
  config: {
    Env: string[];
    Cmd: string[];
    Labels: Record<string, string> | null;
  };
  created: string;
  history: { created: string; created_by: string }[];
  rootfs: { type: "layers"; diff_ids: string[] };
}

/** Facts computed from an ImageSpec that tests compare against. */
export interface ImageFacts {
  /** `sha256:` followed by the sha256 of configBytes. */
  imageId: string;
  /** `sha256:` digest of each uncompressed layer tar, base first. */
  diffIds: string[];
  config: ImageConfig;
  configBytes: Buffer;
  /** Uncompressed layer tars, base first. */
  layerTars: Buffer[];
}

/** Builds a layer tar: parent folders first, then files, in walk order. */
export function layerTar(layer: LayerSpec): Buffer {
  const entries = new Map<string, TarEntry>();
  for (const [path, body] of Object.entries(layer.files)) {
    const parts = path.split("/");
    for (let depth = 1; depth < parts.length; depth += 1) {
      const directory = `${parts.slice(0, depth).join("/")}/`;
      entries.set(directory, { path: directory, type: "directory" });
    }
    entries.set(path, { path, body });
  }
  const sorted = [...entries.values()].sort((a, b) =>
    compareWalkOrder(a.path, b.path),
  );
  return tarEntries(sorted);
}

/** Computes the layer tars, the config JSON and the IDs of an image. */
export function describeImage(spec: ImageSpec): ImageFacts {
  if (spec.layers.length === 0) {
    throw new Error(
      `Invalid image ${spec.repoTags.join(", ") || "(untagged)"}: it needs at least one layer, because docker save rejects empty images`,
    );
  }
  const layerTars = spec.layers.map(layerTar);
  const diffIds = layerTars.map((tar) => `sha256:${sha256Hex(tar)}`);
  const config: ImageConfig = {
    architecture: spec.architecture ?? "amd64",
    os: spec.os ?? "linux",
    ...(spec.variant === undefined ? {} : { variant: spec.variant }),
    config: {
      Env: [
        "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",
      ],
      Cmd: ["/bin/sh"],
      Labels: spec.labels ?? null,
    },
    created: CREATED,
    history: diffIds.map((_, index) => ({
      created: CREATED,
      created_by: `testdata layer ${index + 1} of ${diffIds.length}`,
    })),
    rootfs: { type: "layers", diff_ids: diffIds },
  };
  const configBytes = Buffer.from(JSON.stringify(config));
  return {
    imageId: `sha256:${sha256Hex(configBytes)}`,
    diffIds,
    config,
    configBytes,
    layerTars,
  };
}

/** Returns the chain ID of each layer stack: ChainID(n) = sha256(ChainID(n-1) + " " + DiffID(n)). */
function chainIds(diffIds: string[]): string[] {
  const chains: string[] = [];
  for (const diffId of diffIds) {
    const previous = chains.at(-1);
    chains.push(
      previous === undefined
        ? diffId
        : `sha256:${sha256Hex(`${previous} ${diffId}`)}`,
    );
  }
  return chains;
}

// Every field of docker 20.10's container config that its JSON encoding
// keeps when empty, in the order docker writes them.
const EMPTY_CONTAINER_CONFIG = {
  Hostname: "",
  Domainname: "",
  User: "",
  AttachStdin: false,
  AttachStdout: false,
  AttachStderr: false,
  Tty: false,
  OpenStdin: false,
  StdinOnce: false,
  Env: null,
  Cmd: null,
  Image: "",
  Volumes: null,
  WorkingDir: "",
  Entrypoint: null,
  OnBuild: null,
  Labels: null,
};

interface LegacyLayer {
  /** Hex ID that names the layer folder. */
  v1Id: string;
  /** Contents of `<v1Id>/json`. */
  json: Buffer;
}

/**
 * Computes the folder name and `json` file of each layer as docker before
 * version 25 wrote them. The ID is the sha256 of the layer's v1 JSON plus its
 * chain ID and parent, with sorted top-level keys. Lower layers carry the
 * epoch as creation time and the top layer carries the image config, so a
 * base layer shared by two images gets the same ID in both.
 *
 * NOTE: docker 20.10.24 wrote the same folder names and file contents when
 * it saved an image loaded from this output again. That was checked by hand
 * and the tests do not repeat it. Labels containing <, > or & would give
 * other IDs, because Go escapes those characters in JSON.
 */
function legacyLayers(facts: ImageFacts): LegacyLayer[] {
  const chains = chainIds(facts.diffIds);
  const layers: LegacyLayer[] = [];
  let parent: string | undefined;
  for (let index = 0; index < chains.length; index += 1) {
    const isTop = index === chains.length - 1;
    const v1Image: Record<string, unknown> = isTop
      ? {
          created: facts.config.created,
          container_config: EMPTY_CONTAINER_CONFIG,
          config: { ...EMPTY_CONTAINER_CONFIG, ...facts.config.config },
          architecture: facts.config.architecture,
          ...(facts.config.variant === undefined
            ? {}
            : { variant: facts.config.variant }),
        }
      : {
          created: "1970-01-01T00:00:00Z",
          container_config: EMPTY_CONTAINER_CONFIG,
        };

    const idSource: Record<string, unknown> = {
      ...v1Image,
      ...(isTop ? { os: facts.config.os } : {}),
      layer_id: chains[index],
      ...(parent === undefined ? {} : { parent: `sha256:${parent}` }),
    };
    const v1Id = sha256Hex(JSON.stringify(sortKeys(idSource)));

    const json = {
      id: v1Id,
      ...(parent === undefined ? {} : { parent }),
      ...v1Image,
      os: facts.config.os,
    };
    layers.push({ v1Id, json: Buffer.from(JSON.stringify(json)) });
    parent = v1Id;
  }
  return layers;
}

function sortKeys(object: Record<string, unknown>): Record<string, unknown> {
  const sorted: Record<string, unknown> = {};
  for (const key of Object.keys(object).sort()) {
    sorted[key] = object[key];
  }
  return sorted;
}

// ---------------------------------------------------------------------------
// docker save tarballs
// ---------------------------------------------------------------------------

export interface DockerSaveOptions {
  /**
   * `legacy`: the layout of docker save before Docker 25 (layer folders with
   * layer.tar). `oci`: the OCI image layout that Docker 25 and later write,
   * with a docker-compatible manifest.json.
   */
  format: "legacy" | "oci";
}

interface SavedImage {
  facts: ImageFacts;
  /** Familiar names with tag, e.g. `busybox:latest`. */
  repoTags: string[];
}

/**
 * Merges specs that produce the same image ID, as docker saves each image
 * once with all its tags. Keeps the order in which images first appear.
 */
function collectImages(images: ImageSpec[]): SavedImage[] {
  const byId = new Map<string, SavedImage>();
  for (const spec of images) {
    const facts = describeImage(spec);
    const saved = byId.get(facts.imageId) ?? { facts, repoTags: [] };
    byId.set(facts.imageId, saved);
    for (const repoTag of spec.repoTags) {
      const reference = parseReference(repoTag);
      const familiar = `${familiarName(reference)}:${reference.tag}`;
      if (!saved.repoTags.includes(familiar)) {
        saved.repoTags.push(familiar);
      }
    }
  }
  return [...byId.values()];
}

/**
 * Returns the `repositories` file: familiar name, then tag, then the value
 * that `pick` returns, with keys sorted like Go's JSON encoder sorts maps.
 */
function repositoriesFile(
  images: SavedImage[],
  pick: (image: SavedImage) => string,
): Buffer | undefined {
  const repositories: Record<string, Record<string, string>> = {};
  for (const image of images) {
    for (const repoTag of image.repoTags) {
      const reference = parseReference(repoTag);
      const name = familiarName(reference);
      repositories[name] = {
        ...repositories[name],
        [reference.tag]: pick(image),
      };
    }
  }
  const names = Object.keys(repositories).sort();
  if (names.length === 0) {
    return undefined;
  }
  const sorted: Record<string, Record<string, string>> = {};
  for (const name of names) {
    sorted[name] = sortKeys(repositories[name]) as Record<string, string>;
  }
  return Buffer.from(`${JSON.stringify(sorted)}\n`);
}

/**
 * Builds an uncompressed tarball in the layout of `docker save`. Docker
 * writes the files into a folder and archives it in walk order (see
 * compareWalkOrder), so manifest.json follows every layer and config, and
 * `repositories` (written when an image has a tag) comes after manifest.json.
 * Docker 20.10 and 25 both produce this order.
 */
export function dockerSaveTarball(
  images: ImageSpec[],
  options: DockerSaveOptions = { format: "legacy" },
): Buffer {
  const saved = collectImages(images);
  const files =
    options.format === "legacy" ? legacySaveFiles(saved) : ociSaveFiles(saved);
  const entries = [...files.values()].sort((a, b) =>
    compareWalkOrder(a.path, b.path),
  );
  return tarEntries(entries);
}

/** Returns the files of a pre-Docker 25 save, keyed by path. */
function legacySaveFiles(images: SavedImage[]): Map<string, TarEntry> {
  const files = new Map<string, TarEntry>();
  const add = (entry: TarEntry): void => {
    files.set(entry.path, entry);
  };
  // Docker links a layer.tar whose diff ID it already wrote under another
  // layer folder instead of writing it twice.
  const layerPathByDiffId = new Map<string, string>();
  const manifest: {
    Config: string;
    RepoTags: string[] | null;
    Layers: string[];
  }[] = [];
  const topLayerIds = new Map<SavedImage, string>();

  for (const image of images) {
    const layers = legacyLayers(image.facts);
    layers.forEach((layer, index) => {
      const folder = layer.v1Id;
      if (files.has(`${folder}/`)) {
        return;
      }
      add({ path: `${folder}/`, type: "directory" });
      add({ path: `${folder}/VERSION`, body: "1.0" });
      add({ path: `${folder}/json`, body: layer.json });
      const diffId = image.facts.diffIds[index];
      const existing = layerPathByDiffId.get(diffId);
      if (existing === undefined) {
        add({
          path: `${folder}/layer.tar`,
          body: image.facts.layerTars[index],
        });
        layerPathByDiffId.set(diffId, `${folder}/layer.tar`);
      } else {
        add({
          path: `${folder}/layer.tar`,
          type: "symlink",
          linkpath: `../${existing}`,
        });
      }
    });

    const configFile = `${digestHex(image.facts.imageId)}.json`;
    add({ path: configFile, body: image.facts.configBytes });
    manifest.push({
      Config: configFile,
      RepoTags: image.repoTags.length > 0 ? image.repoTags : null,
      Layers: layers.map((layer) => `${layer.v1Id}/layer.tar`),
    });
    topLayerIds.set(image, layers[layers.length - 1].v1Id);
  }

  add({ path: "manifest.json", body: `${JSON.stringify(manifest)}\n` });
  const repositories = repositoriesFile(
    images,
    (image) => topLayerIds.get(image) ?? "",
  );
  if (repositories !== undefined) {
    add({ path: "repositories", body: repositories });
  }
  return files;
}

export const OCI_MEDIA_TYPES = {
  index: "application/vnd.oci.image.index.v1+json",
  manifest: "application/vnd.oci.image.manifest.v1+json",
  config: "application/vnd.oci.image.config.v1+json",
  layer: "application/vnd.oci.image.layer.v1.tar",
};

/** Annotation keys that Docker 25 sets on each index.json descriptor. */
export const OCI_ANNOTATIONS = {
  imageName: "io.containerd.image.name",
  refName: "org.opencontainers.image.ref.name",
};

/**
 * Returns the files of a Docker 25+ save, keyed by path. Besides the OCI
 * layout, docker writes each layer's v1 JSON as a blob that nothing
 * references, and a manifest.json and `repositories` for older loaders.
 */
function ociSaveFiles(images: SavedImage[]): Map<string, TarEntry> {
  const files = new Map<string, TarEntry>();
  const addBlob = (data: Buffer): string => {
    const hex = sha256Hex(data);
    files.set(`blobs/sha256/${hex}`, {
      path: `blobs/sha256/${hex}`,
      body: data,
    });
    return hex;
  };
  files.set("blobs/", { path: "blobs/", type: "directory" });
  files.set("blobs/sha256/", { path: "blobs/sha256/", type: "directory" });

  const descriptors: Record<string, unknown>[] = [];
  const manifest: {
    Config: string;
    RepoTags: string[] | null;
    Layers: string[];
  }[] = [];

  for (const image of images) {
    const { facts } = image;
    for (const layer of legacyLayers(facts)) {
      addBlob(layer.json);
    }
    const layerHexes = facts.layerTars.map(addBlob);
    const configHex = addBlob(facts.configBytes);

    const platform = {
      architecture: facts.config.architecture,
      os: facts.config.os,
      ...(facts.config.variant === undefined
        ? {}
        : { variant: facts.config.variant }),
    };
    const imageManifest = Buffer.from(
      JSON.stringify({
        schemaVersion: 2,
        mediaType: OCI_MEDIA_TYPES.manifest,
        config: {
          mediaType: OCI_MEDIA_TYPES.config,
          digest: facts.imageId,
          size: facts.configBytes.length,
          platform,
        },
        layers: facts.layerTars.map((tar, index) => ({
          mediaType: OCI_MEDIA_TYPES.layer,
          digest: facts.diffIds[index],
          size: tar.length,
        })),
      }),
    );
    const manifestHex = addBlob(imageManifest);

    const descriptor = {
      mediaType: OCI_MEDIA_TYPES.manifest,
      digest: `sha256:${manifestHex}`,
      size: imageManifest.length,
    };
    if (image.repoTags.length === 0) {
      descriptors.push({ ...descriptor, platform });
    }
    for (const repoTag of image.repoTags) {
      descriptors.push({
        ...descriptor,
        annotations: {
          [OCI_ANNOTATIONS.imageName]: fullImageName(repoTag),
          [OCI_ANNOTATIONS.refName]: parseReference(repoTag).tag,
        },
        platform,
      });
    }

    manifest.push({
      Config: `blobs/sha256/${configHex}`,
      RepoTags: image.repoTags.length > 0 ? image.repoTags : null,
      Layers: layerHexes.map((hex) => `blobs/sha256/${hex}`),
    });
  }

  const index = {
    schemaVersion: 2,
    mediaType: OCI_MEDIA_TYPES.index,
    manifests: descriptors,
  };
  const add = (path: string, body: string | Buffer): void => {
    files.set(path, { path, body });
  };
  add("index.json", JSON.stringify(index));
  add("manifest.json", `${JSON.stringify(manifest)}\n`);
  add("oci-layout", JSON.stringify({ imageLayoutVersion: "1.0.0" }));
  const repositories = repositoriesFile(images, (image) =>
    digestHex(image.facts.diffIds[image.facts.diffIds.length - 1]),
  );
  if (repositories !== undefined) {
    add("repositories", repositories);
  }
  return files;
}

// ---------------------------------------------------------------------------
// Helm charts and PPA archives
// ---------------------------------------------------------------------------

export interface HelmChartSpec {
  name: string;
  version: string;
  /** Contents of values.yaml. */
  values: string;
  /** More files, keyed by path inside the chart folder. They replace defaults of the same path. */
  extraFiles?: Record<string, string>;
  /** Folder that contains the chart in the archive. Defaults to `name`. */
  topFolder?: string;
}

/**
 * Builds a Helm chart archive (.tgz) with Chart.yaml (apiVersion v2),
 * values.yaml and templates/deployment.yaml. The default template reads
 * `image.repository` and `image.tag` from the values.
 */
export function helmChart(spec: HelmChartSpec): Buffer {
  const folder = spec.topFolder ?? spec.name;
  const files: Record<string, string> = {
    "Chart.yaml": `apiVersion: v2\nname: ${spec.name}\nversion: ${spec.version}\n`,
    "values.yaml": spec.values,
    "templates/deployment.yaml": deploymentTemplate(),
    ...spec.extraFiles,
  };
  // Chart.yaml and values.yaml first, the rest in walk order.
  const leading = ["Chart.yaml", "values.yaml"];
  const rest = Object.keys(files)
    .filter((path) => !leading.includes(path))
    .sort(compareWalkOrder);
  const entries = [...leading, ...rest].map((path) => ({
    path: `${folder}/${path}`,
    body: files[path],
  }));
  return gzipDeterministic(tarEntries(entries));
}

function deploymentTemplate(): string {
  return [
    "apiVersion: apps/v1",
    "kind: Deployment",
    "metadata:",
    "  name: {{ .Release.Name }}-{{ .Chart.Name }}",
    "spec:",
    "  replicas: 1",
    "  selector:",
    "    matchLabels:",
    "      app: {{ .Chart.Name }}",
    "  template:",
    "    metadata:",
    "      labels:",
    "        app: {{ .Chart.Name }}",
    "    spec:",
    "      containers:",
    "        - name: {{ .Chart.Name }}",
    '          image: "{{ .Values.image.repository }}:{{ .Values.image.tag }}"',
    "",
  ].join("\n");
}

export interface PpaArchiveSpec {
  /** Contents of manifest.yaml, left out when undefined. */
  manifestYaml?: string;
  /** Contents of manifest.json, left out when undefined. */
  manifestJson?: string;
  /** Image tarballs. With `gzip: true` the body is compressed before it is stored. */
  images?: { path: string; body: Buffer; gzip?: boolean }[];
  charts?: { path: string; body: Buffer }[];
  /** Entries written after images and charts, names unchanged. */
  extra?: TarEntry[];
  /** Position of manifest.yaml and manifest.json. Defaults to `manifest-first`. */
  order?: "manifest-first" | "manifest-last";
}

/**
 * Builds a PPA archive (.tgz): folder entries and files under `images/` and
 * `charts/` in the given order, then `extra`, with manifest.yaml and
 * manifest.json before or after them.
 */
export function ppaArchive(spec: PpaArchiveSpec): Buffer {
  const images = (spec.images ?? []).map((image) => ({
    path: image.path,
    body: image.gzip === true ? gzipDeterministic(image.body) : image.body,
  }));
  const content = [
    ...withParentDirectories([...images, ...(spec.charts ?? [])]),
    ...(spec.extra ?? []),
  ];

  const manifests: TarEntry[] = [];
  if (spec.manifestYaml !== undefined) {
    manifests.push({ path: "manifest.yaml", body: spec.manifestYaml });
  }
  if (spec.manifestJson !== undefined) {
    manifests.push({ path: "manifest.json", body: spec.manifestJson });
  }

  const entries =
    spec.order === "manifest-last"
      ? [...content, ...manifests]
      : [...manifests, ...content];
  return gzipDeterministic(tarEntries(entries));
}

// ---------------------------------------------------------------------------
// Golden archives
// ---------------------------------------------------------------------------

const BASE_LAYER: LayerSpec = {
  files: {
    "etc/os-release": 'NAME="testdata base"\nID=testdata\n',
    "usr/share/testdata/README": "Base layer shared by every example image.\n",
  },
};

function appLayer(name: string, detail: string): LayerSpec {
  return {
    files: {
      [`opt/${name}/run.sh`]: `#!/bin/sh\necho "${name} ${detail}"\n`,
      [`opt/${name}/platform`]: `${detail}\n`,
    },
  };
}

function imageValues(repository: string, tag: string): string {
  return [
    "image:",
    `  repository: ${repository}`,
    `  tag: "${tag}"`,
    "  pullPolicy: IfNotPresent",
    "",
  ].join("\n");
}

const MULTIARCH_PLATFORMS = [
  { architecture: "amd64" },
  { architecture: "arm64", variant: "v8" },
  { architecture: "s390x" },
];

const MULTIARCH_MANIFEST_YAML = `charts:
  - archive: charts/app-1.0.0.tgz
    repository-keys:
      - image.repository
images:
  - image: example/app:1.0
    references:
      - repository: example/app-amd64:1.0
        pull-repository: example/app-amd64:1.0
        archive: images/example_app-amd64_1.0.tar.gz
        platform:
          os: linux
          architecture: amd64
      - repository: example/app-arm64:1.0
        pull-repository: example/app-arm64:1.0
        archive: images/example_app-arm64_1.0.tar.gz
        platform:
          os: linux
          architecture: arm64
          variant: v8
      - repository: example/app-s390x:1.0
        pull-repository: example/app-s390x:1.0
        archive: images/example_app-s390x_1.0.tar.gz
        platform:
          os: linux
          architecture: s390x
`;

/**
 * Builds multiarch-legacy.tgz: one multi-arch image as three legacy tarballs
 * that share a base layer. The tarball names end in .tar.gz but the files are
 * plain tar.
 */
function multiarchLegacyArchive(): Buffer {
  const images = MULTIARCH_PLATFORMS.map((platform) => ({
    path: `images/example_app-${platform.architecture}_1.0.tar.gz`,
    body: dockerSaveTarball(
      [
        {
          repoTags: [`example/app-${platform.architecture}:1.0`],
          layers: [BASE_LAYER, appLayer("app", platform.architecture)],
          ...platform,
        },
      ],
      { format: "legacy" },
    ),
  }));
  const chart = helmChart({
    name: "app",
    version: "1.0.0",
    values: imageValues("example/app", "1.0"),
  });
  return ppaArchive({
    manifestYaml: MULTIARCH_MANIFEST_YAML,
    images,
    charts: [{ path: "charts/app-1.0.0.tgz", body: chart }],
    order: "manifest-first",
  });
}

/**
 * Builds single-oci.tgz: one gzipped OCI tarball with the older flat
 * manifest.json. The image is tagged quay.io/upstream/tool:2.1 inside the
 * tarball, so only the archive path ties it to example/tool:2.1.
 */
function singleOciArchive(): Buffer {
  const tarball = dockerSaveTarball(
    [
      {
        repoTags: ["quay.io/upstream/tool:2.1"],
        layers: [BASE_LAYER, appLayer("tool", "2.1")],
        labels: { "org.opencontainers.image.version": "2.1" },
      },
    ],
    { format: "oci" },
  );
  const manifest = {
    "manifest-revision": "1.0",
    images: [{ image: "example/tool", tag: "2.1", archive: "images/tool.tar" }],
    charts: [
      { archive: "charts/tool-0.1.0.tgz", images: ["image.repository"] },
    ],
  };
  const chart = helmChart({
    name: "tool",
    version: "0.1.0",
    values: imageValues("example/tool", "2.1"),
  });
  return ppaArchive({
    manifestJson: `${JSON.stringify(manifest, null, 2)}\n`,
    images: [{ path: "images/tool.tar", body: tarball, gzip: true }],
    charts: [{ path: "charts/tool-0.1.0.tgz", body: chart }],
    order: "manifest-last",
  });
}

/**
 * Builds no-manifest.tgz: two image tarballs (one legacy and gzipped, one
 * OCI) and a chart, without any manifest.
 */
function noManifestArchive(): Buffer {
  const web = dockerSaveTarball(
    [
      {
        repoTags: ["example/web:3.2"],
        layers: [BASE_LAYER, appLayer("web", "3.2")],
      },
    ],
    { format: "legacy" },
  );
  const worker = dockerSaveTarball(
    [
      {
        repoTags: ["example/worker:3.2"],
        layers: [BASE_LAYER, appLayer("worker", "3.2")],
      },
    ],
    { format: "oci" },
  );
  const chart = helmChart({
    name: "web",
    version: "3.2.0",
    values: imageValues("example/web", "3.2"),
  });
  return ppaArchive({
    images: [
      { path: "images/example_web_3.2.tar.gz", body: web, gzip: true },
      { path: "images/example_worker_3.2.tar", body: worker },
    ],
    charts: [{ path: "charts/web-3.2.0.tgz", body: chart }],
  });
}

/**
 * Builds the archives committed under testdata/archives/, keyed by file
 * name. testdata/regenerate.ts writes them and the unit tests compare them.
 */
export function goldenArchives(): Map<string, Buffer> {
  return new Map([
    ["multiarch-legacy.tgz", multiarchLegacyArchive()],
    ["single-oci.tgz", singleOciArchive()],
    ["no-manifest.tgz", noManifestArchive()],
  ]);
}

// ---------------------------------------------------------------------------
// Edited, damaged and unusual files
// ---------------------------------------------------------------------------

const TYPES_BY_FLAG: Record<string, TarEntryType> = {
  "0": "file",
  "\0": "file",
  "1": "link",
  "2": "symlink",
  "5": "directory",
  g: "pax-global",
};

/** Reads a NUL-terminated text field of a tar header. */
function headerText(header: Buffer, offset: number, width: number): string {
  const field = header.subarray(offset, offset + width);
  const end = field.indexOf(0);
  return field.subarray(0, end === -1 ? width : end).toString("utf8");
}

/** Decodes pax extended header records into their keys and values. */
function parsePaxRecords(body: Buffer): Record<string, string> {
  const records: Record<string, string> = {};
  let offset = 0;
  while (offset < body.length) {
    const space = body.indexOf(0x20, offset);
    const length = Number.parseInt(
      body.subarray(offset, space).toString("latin1"),
      10,
    );
    if (space === -1 || !(length > 0)) break;
    const record = body.subarray(space + 1, offset + length - 1).toString();
    const equals = record.indexOf("=");
    records[record.slice(0, equals)] = record.slice(equals + 1);
    offset += length;
  }
  return records;
}

/**
 * Lists the entries of a tar that tarEntries wrote (or any ustar archive of
 * files, folders, links and pax headers), with pax `path` and `linkpath`
 * applied. Reading stops at the first zero block.
 */
export function readTarEntries(tar: Buffer): TarEntry[] {
  const entries: TarEntry[] = [];
  let extended: Record<string, string> = {};
  let offset = 0;
  while (offset + BLOCK_SIZE <= tar.length) {
    const header = tar.subarray(offset, offset + BLOCK_SIZE);
    if (header.every((byte) => byte === 0)) break;
    const size = Number.parseInt(headerText(header, 124, 12) || "0", 8);
    const flag = String.fromCharCode(header[156]);
    const body = tar.subarray(offset + BLOCK_SIZE, offset + BLOCK_SIZE + size);
    offset += BLOCK_SIZE + Math.ceil(size / BLOCK_SIZE) * BLOCK_SIZE;
    if (flag === "x") {
      extended = parsePaxRecords(body);
      continue;
    }
    const type = TYPES_BY_FLAG[flag];
    if (type === undefined) {
      throw new Error(`Unsupported tar entry type ${JSON.stringify(flag)}`);
    }
    const prefix = headerText(header, 345, 155);
    const name = headerText(header, 0, NAME_FIELD_SIZE);
    const linkpath = extended.linkpath ?? headerText(header, 157, 100);
    entries.push({
      path: extended.path ?? (prefix ? `${prefix}/${name}` : name),
      type,
      ...(type === "file" || type === "pax-global"
        ? { body: Buffer.from(body) }
        : {}),
      ...(linkpath ? { linkpath } : {}),
      mode: Number.parseInt(headerText(header, 100, 8), 8),
      mtime: new Date(Number.parseInt(headerText(header, 136, 12), 8) * 1000),
    });
    extended = {};
  }
  return entries;
}

/**
 * Rebuilds a tar with each entry passed through `edit`, which returns the
 * entry to write in its place: itself, a changed copy, several entries, or
 * undefined to leave it out.
 */
export function editTar(
  tar: Buffer,
  edit: (entry: TarEntry) => TarEntry | TarEntry[] | undefined,
): Buffer {
  const edited = readTarEntries(tar).flatMap((entry) => edit(entry) ?? []);
  return tarEntries(edited);
}

const LF = 0x0a;
const CR = 0x0d;

/**
 * Writes every LF byte as CR LF, as a text-mode copy does: FTP in ASCII
 * mode, git with autocrlf, or a shell redirect on Windows.
 */
export function lfToCrlf(bytes: Buffer): Buffer {
  const parts: Buffer[] = [];
  let start = 0;
  for (let lf = bytes.indexOf(LF); lf !== -1; lf = bytes.indexOf(LF, lf + 1)) {
    parts.push(bytes.subarray(start, lf), Buffer.from([CR]));
    start = lf;
  }
  parts.push(bytes.subarray(start));
  return Buffer.concat(parts);
}

/** Writes every CR LF pair as LF, the reverse text-mode conversion. */
export function crlfToLf(bytes: Buffer): Buffer {
  const parts: Buffer[] = [];
  let start = 0;
  for (let lf = bytes.indexOf(LF); lf !== -1; lf = bytes.indexOf(LF, lf + 1)) {
    if (lf > start && bytes[lf - 1] === CR) {
      parts.push(bytes.subarray(start, lf - 1));
      start = lf;
    }
  }
  parts.push(bytes.subarray(start));
  return Buffer.concat(parts);
}

/**
 * Writes bytes as UTF-16LE text with a byte order mark, each byte read as a
 * Latin-1 character, as PowerShell 5's `>` re-encodes a program's output.
 */
export function utf16Text(bytes: Buffer): Buffer {
  return Buffer.concat([
    Buffer.from([0xff, 0xfe]),
    Buffer.from(bytes.toString("latin1"), "utf16le"),
  ]);
}

/**
 * Returns `length` bytes that look random, the same for the same seed: the
 * AES-256-CTR key stream of the seed's SHA-256. They do not compress, so
 * gzip of them is as long as they are.
 */
export function pseudoRandomBytes(seed: string, length: number): Buffer {
  const key = createHash("sha256").update(seed).digest();
  const cipher = createCipheriv("aes-256-ctr", key, Buffer.alloc(16));
  return cipher.update(Buffer.alloc(length));
}

/**
 * Builds a root file system tar as `docker export` writes it: the files of
 * a container, with the `.dockerenv` marker and the files that the engine
 * mounts into every container (`etc/hostname`, `etc/hosts`,
 * `etc/resolv.conf`), and no manifest.json.
 */
export function rootFilesystemTar(files: Record<string, string>): Buffer {
  const all: Record<string, string> = {
    ".dockerenv": "",
    "etc/hostname": "",
    "etc/hosts": "",
    "etc/resolv.conf": "",
    ...files,
  };
  const entries: TarEntry[] = [
    { path: "dev/", type: "directory" },
    { path: "proc/", type: "directory" },
    { path: "sys/", type: "directory" },
    ...withParentDirectories(
      Object.entries(all).map(([path, body]) => ({ path, body })),
    ),
  ];
  return tarEntries(entries.sort((a, b) => compareWalkOrder(a.path, b.path)));
}
