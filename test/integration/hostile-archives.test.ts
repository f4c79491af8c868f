/**
 * End-to-end imports of archives that are damaged, odd or hostile, into the
 * open test registry. Each import either publishes what it should, or stops
 * before any tag is written with an error that names the entry and value
 * and explains what to do. After every run, the folder around the output
 * folder is checked for files written outside it, and every tag of a
 * successful run for the blobs and manifests it points at.
 */
import {
  lstat,
  mkdir,
  mkdtemp,
  readFile,
  readdir,
  rm,
  writeFile,
} from "node:fs/promises";
import { tmpdir } from "node:os";
import { join, relative } from "node:path";
import { gunzipSync } from "node:zlib";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

import {
  type ImportOptions,
  type ImportResult,
  PpaLoadError,
  importArchive,
} from "../../src/index.js";
import {
  crlfToLf,
  describeImage,
  digestHex,
  dockerSaveTarball,
  editTar,
  gzipDeterministic,
  helmChart,
  lfToCrlf,
  paxRecords,
  ppaArchive,
  pseudoRandomBytes,
  readTarEntries,
  rootFilesystemTar,
  sha256Hex,
  tarEntries,
  utf16Text,
  type ImageSpec,
  type LayerSpec,
  type TarEntry,
} from "../../testdata/generate.js";
import { readEntry } from "../helpers/archive.js";
import { runCli } from "../helpers/cli.js";
import { services, uniqueNamespace } from "../helpers/environment.js";
import { RegistryReader } from "../helpers/registry.js";

const env = services();

// ---------------------------------------------------------------------------
// Archives
// ---------------------------------------------------------------------------

function layer(name: string): LayerSpec {
  return { files: { [`opt/${name}/version`]: `${name}\n` } };
}

/**
 * Builds a layer with lines of text, the same lines with CR LF line breaks,
 * and a file of random bytes. Its tar and gzip of it then contain many LF
 * bytes and CR LF pairs for a text-mode copy to rewrite.
 */
function textLayer(name: string, randomBytes = 32 * 1024): LayerSpec {
  const lines = Array.from({ length: 200 }, (_, i) => `setting${i}=${name}`);
  return {
    files: {
      [`etc/${name}.conf`]: `${lines.join("\n")}\n`,
      [`etc/${name}.ini`]: `${lines.join("\r\n")}\r\n`,
      [`opt/${name}/data.bin`]: pseudoRandomBytes(name, randomBytes),
    },
  };
}

interface Reference {
  repository: string;
  archive?: string;
  "pull-repository"?: string;
  platform?: { os: string; architecture: string; variant?: string };
}

/**
 * Builds a manifest.yaml as JSON text, which is valid YAML too. Each image
 * has the references given, or is its own single reference.
 */
function manifestYaml(
  images: { image: string; references?: Reference[] }[],
  charts: { archive: string; "repository-keys"?: string[] }[] = [],
): string {
  return `${JSON.stringify({ images, charts }, null, 2)}\n`;
}

/** Builds a manifest.yaml that publishes one image from one tarball under its own name. */
function singleImageYaml(name: string, archive: string): string {
  return manifestYaml([
    { image: name, references: [{ repository: name, archive }] },
  ]);
}

function values(repository: string): string {
  return `image:\n  # the image\n  repository: ${repository}\n  tag: "1.0"\n`;
}

const chartYaml = (name: string) =>
  `apiVersion: v2\nname: ${name}\nversion: 1.0.0\n`;

/** Builds a gzipped chart archive of the given entries. */
function chartOf(entries: TarEntry[]): Buffer {
  return gzipDeterministic(tarEntries(entries));
}

/** Removes manifest.json from an OCI save, leaving index.json and blobs as tools other than docker write them. */
function withoutManifestJson(save: Buffer): Buffer {
  return editTar(save, (entry) =>
    entry.path === "manifest.json" ? undefined : entry,
  );
}

/**
 * Changes each image manifest of an OCI save and points index.json at the
 * changed blob, so that the save stays consistent apart from the change.
 */
function editOciManifests(save: Buffer, edit: (manifest: any) => void): Buffer {
  const entries = readTarEntries(save);
  const indexEntry = entries.find((entry) => entry.path === "index.json")!;
  const index = JSON.parse(String(indexEntry.body));
  const replaced = new Map<string, TarEntry>();
  for (const descriptor of index.manifests) {
    const path = `blobs/sha256/${digestHex(descriptor.digest)}`;
    const blob = entries.find((entry) => entry.path === path)!;
    const manifest = JSON.parse(String(blob.body));
    edit(manifest);
    const body = Buffer.from(JSON.stringify(manifest));
    descriptor.digest = `sha256:${sha256Hex(body)}`;
    descriptor.size = body.length;
    replaced.set(path, {
      ...blob,
      path: `blobs/sha256/${sha256Hex(body)}`,
      body,
    });
  }
  return tarEntries(
    entries.map((entry) =>
      entry.path === "index.json"
        ? { ...entry, body: JSON.stringify(index) }
        : (replaced.get(entry.path) ?? entry),
    ),
  );
}

/** Changes manifest.json of a save. */
function editManifestJson(
  save: Buffer,
  edit: (manifest: any[]) => void,
): Buffer {
  return editTar(save, (entry) => {
    if (entry.path !== "manifest.json") return entry;
    const manifest = JSON.parse(String(entry.body));
    edit(manifest);
    return { ...entry, body: `${JSON.stringify(manifest)}\n` };
  });
}

// ---------------------------------------------------------------------------
// Runs and checks
// ---------------------------------------------------------------------------

let root = "";

interface Run {
  namespace: string;
  /** The folder that contains the archive, the output folder and the temporary folder. */
  work: string;
  archive: string;
  outputDir: string;
  result?: ImportResult;
  error?: unknown;
  warnings: string[];
}

/**
 * Imports `bytes` as an archive file in a folder of its own, with the output
 * folder and the temporary folder inside it, then checks that nothing was
 * written beside them and that the temporary folder is empty.
 */
async function runImport(
  bytes: Buffer,
  options: Partial<ImportOptions> & { fileName?: string } = {},
): Promise<Run> {
  const { fileName, ...importOptions } = options;
  const work = await mkdtemp(join(root, "work-"));
  const archive = join(work, fileName ?? "archive.tgz");
  await writeFile(archive, bytes);
  const outputDir = join(work, "ppa-import");
  const tempDir = join(work, "temp");
  await mkdir(tempDir);
  const run: Run = {
    namespace: uniqueNamespace("hostile"),
    work,
    archive,
    outputDir,
    warnings: [],
  };
  try {
    run.result = await importArchive({
      archive,
      namespace: run.namespace,
      registry: env!.registry,
      outputDir,
      tempDir,
      onEvent: (event) => {
        if (event.type === "warning") run.warnings.push(event.message);
      },
      ...importOptions,
    });
  } catch (error) {
    run.error = error;
  }
  await expectContained(run);
  return run;
}

/** Lists every path below a folder, relative to it, with slashes. */
async function listTree(folder: string): Promise<string[]> {
  const names = await readdir(folder, { recursive: true });
  return names.map((name) => name.split("\\").join("/")).sort();
}

/**
 * Checks that the run wrote nothing but its output folder beside the
 * archive, left the temporary folder empty and made no symbolic link.
 */
async function expectContained(run: Run): Promise<void> {
  const archiveName = relative(run.work, run.archive);
  const outputName = relative(run.work, run.outputDir);
  const paths = await listTree(run.work);
  const outside = paths.filter(
    (path) =>
      path !== archiveName &&
      path !== "temp" &&
      path !== outputName &&
      !path.startsWith(`${outputName}/`),
  );
  expect(outside, "files written outside the output folder").toEqual([]);
  for (const path of paths) {
    const info = await lstat(join(run.work, path));
    expect(info.isSymbolicLink(), `${path} is a symbolic link`).toBe(false);
  }
}

function failure(run: Run): PpaLoadError {
  expect(run.result, "the import was expected to fail").toBeUndefined();
  expect(run.error).toBeInstanceOf(PpaLoadError);
  return run.error as PpaLoadError;
}

/** Checks a failed plan: nothing was published, and one problem matches. */
function planFailure(run: Run, problem: RegExp): PpaLoadError {
  const error = failure(run);
  expect(error.code).toBe("PLAN_INVALID");
  expect(error.message).toBe(
    `${run.archive}: nothing was published because of ${error.problems.length === 1 ? "this problem" : `these ${error.problems.length} problems`}`,
  );
  expect(error.problems).toContainEqual(expect.stringMatching(problem));
  return error;
}

function succeeded(run: Run): ImportResult {
  if (run.error) throw run.error;
  expect(run.result!.failures).toEqual([]);
  return run.result!;
}

describe.skipIf(env === undefined)("hostile archives", () => {
  const registry = new RegistryReader(env?.registry ?? "");

  beforeAll(async () => {
    root = await mkdtemp(join(tmpdir(), "ppa-load-hostile-"));
  });

  afterAll(async () => {
    await rm(root, { recursive: true, force: true });
  });

  async function expectNothingPublished(run: Run): Promise<void> {
    expect(await registry.tagged(run.namespace)).toEqual([]);
  }

  /** Checks that a manifest and everything it points at are in the repository. */
  async function expectManifestComplete(
    repository: string,
    reference: string,
  ): Promise<void> {
    const manifest = await registry.manifest(repository, reference);
    expect(manifest, `${repository}@${reference}`).toBeDefined();
    if (Array.isArray(manifest!.json.manifests)) {
      for (const member of manifest!.json.manifests) {
        await expectManifestComplete(repository, member.digest);
      }
      return;
    }
    const blobs = [
      manifest!.json.config.digest,
      ...manifest!.json.layers.map((layer: { digest: string }) => layer.digest),
    ];
    for (const digest of blobs) {
      expect(
        await registry.hasBlob(repository, digest),
        `${repository}:${reference} names blob ${digest}`,
      ).toBe(true);
    }
  }

  /** Checks that every tag in the run's namespace points at complete content; returns the tags. */
  async function expectComplete(run: Run): Promise<string[]> {
    const tagged = await registry.tagged(run.namespace);
    for (const item of tagged) {
      const colon = item.lastIndexOf(":");
      await expectManifestComplete(item.slice(0, colon), item.slice(colon + 1));
    }
    return tagged;
  }

  const target = (run: Run, path: string) => `${run.namespace}/${path}`;

  // -------------------------------------------------------------------------

  describe("text-damaged image tarballs", () => {
    const spec: ImageSpec = {
      repoTags: ["example/app:1.0"],
      layers: [textLayer("app")],
    };
    const save = dockerSaveTarball([spec], { format: "legacy" });
    const large: ImageSpec = {
      repoTags: ["example/app:1.0"],
      layers: [textLayer("large", 1536 * 1024)],
    };

    const cases = [
      {
        name: "UTF-16 text with a byte order mark",
        body: () => utf16Text(save),
        problem:
          /^images\/app\.tar is not a valid tar file: it starts with a UTF-16 byte order mark, so its bytes were written as text.*\(the manifest maps example\/app:1\.0 to it\); .*docker save -o FILE IMAGE/,
      },
      {
        name: "UTF-8 text with a byte order mark",
        body: () => Buffer.concat([Buffer.from("\ufeff"), save]),
        problem:
          /^images\/app\.tar is not a valid tar file: it starts with a UTF-8 byte order mark.*; .*docker save -o FILE IMAGE/,
      },
      {
        name: "LF rewritten as CR LF in a plain tar",
        body: () => lfToCrlf(save),
        problem:
          /^images\/app\.tar: is not a valid tar file: each of the \d+ line feed \(LF\) bytes in the first \d+ bytes follows a carriage return \(CR\), so its line breaks were probably rewritten from LF to CR LF by a text-mode transfer .* or a shell redirect \(the manifest maps example\/app:1\.0 to it\); copy the file again in binary mode.*docker save -o FILE IMAGE/,
      },
      {
        name: "LF rewritten as CR LF in gzip",
        body: () => lfToCrlf(gzipDeterministic(save)),
        problem:
          /^images\/app\.tar is not a valid gzip-compressed tar file \(.+\): each of the \d+ line feed \(LF\) bytes .* rewritten from LF to CR LF by a text-mode transfer .*; copy the file again in binary mode.*docker save -o FILE IMAGE/,
      },
      {
        name: "CR LF rewritten as LF in gzip",
        body: () =>
          crlfToLf(
            gzipDeterministic(dockerSaveTarball([large], { format: "legacy" })),
          ),
        problem:
          /^images\/app\.tar is not a valid gzip-compressed tar file \(.+\): (none|only one) of the \d+ line feed \(LF\) bytes in the first 1 MiB follows a carriage return \(CR\).*CR LF pairs were probably rewritten to LF by a text-mode transfer .*; copy the file again in binary mode/,
      },
      {
        name: "CR LF rewritten as LF in a plain tar",
        body: () => crlfToLf(save),
        problem:
          /^images\/app\.tar: is not a valid tar file: its length, \d+ bytes, is not a multiple of the 512-byte tar block.*, so it was cut short or a transfer changed its bytes \(the manifest maps example\/app:1\.0 to it\); copy the file again in binary mode/,
      },
    ];

    it.each(cases)("stops on $name", async ({ body, problem }) => {
      const good: ImageSpec = {
        repoTags: ["example/good:1.0"],
        layers: [layer("good")],
      };
      const run = await runImport(
        ppaArchive({
          manifestYaml: manifestYaml([
            {
              image: "example/app:1.0",
              references: [
                { repository: "example/app:1.0", archive: "images/app.tar" },
              ],
            },
            { image: "example/good:1.0" },
          ]),
          images: [
            { path: "images/app.tar", body: body() },
            {
              path: "images/good.tar",
              body: dockerSaveTarball([good], { format: "oci" }),
            },
          ],
        }),
      );

      planFailure(run, problem);
      await expectNothingPublished(run);
    });

    it("names a PPA archive whose LF bytes became CR LF", async () => {
      const archive = ppaArchive({
        manifestYaml: singleImageYaml("example/app:1.0", "images/app.tar"),
        images: [{ path: "images/app.tar", body: save }],
      });
      const run = await runImport(lfToCrlf(archive));

      const error = failure(run);
      expect(error.code).toBe("ARCHIVE_UNREADABLE");
      expect(error.message).toContain(
        `${run.archive} is not a valid gzip-compressed tar file (`,
      );
      expect(error.message).toMatch(
        /\): each of the \d+ line feed \(LF\) bytes in the first \d+ bytes follows a carriage return \(CR\), so its line breaks were probably rewritten from LF to CR LF by a text-mode transfer \(FTP in ASCII mode, git with autocrlf\) or a shell redirect$/,
      );
      expect(error.hint).toBe(
        "copy the file again in binary mode (scp, FTP in binary mode, or git with the file marked binary in .gitattributes) and compare its checksum with the original; write image tarballs with docker save -o FILE IMAGE, not with a shell redirect",
      );
      await expectNothingPublished(run);
    });

    it("names a plain tar PPA archive whose LF bytes became CR LF", async () => {
      const archive = gunzipSync(
        ppaArchive({
          manifestYaml: singleImageYaml("example/app:1.0", "images/app.tar"),
          images: [{ path: "images/app.tar", body: save }],
        }),
      );
      const run = await runImport(lfToCrlf(archive), {
        fileName: "archive.tar",
      });

      const error = failure(run);
      expect(error.code).toBe("ARCHIVE_UNREADABLE");
      expect(error.message).toMatch(
        /archive\.tar is not a valid tar file \(.+\): each of the \d+ line feed \(LF\) bytes in the first \d+ bytes follows a carriage return \(CR\), so its line breaks were probably rewritten from LF to CR LF/,
      );
      expect(error.hint).toMatch(/binary mode.*docker save -o FILE IMAGE/);
      await expectNothingPublished(run);
    });

    it("names a PPA archive written as UTF-16 text", async () => {
      const archive = ppaArchive({
        manifestYaml: singleImageYaml("example/app:1.0", "images/app.tar"),
        images: [{ path: "images/app.tar", body: save }],
      });
      const run = await runImport(utf16Text(archive));

      const error = failure(run);
      expect(error.code).toBe("ARCHIVE_UNREADABLE");
      expect(error.message).toBe(
        `${run.archive} is not a valid tar file: it starts with a UTF-16 byte order mark, so its bytes were written as text, probably through a shell redirect such as PowerShell's >`,
      );
      expect(error.hint).toMatch(/docker save -o FILE IMAGE.*binary mode/);
      await expectNothingPublished(run);
    });

    it("prints the cause and the fix from the command line", async () => {
      const cwd = await mkdtemp(join(root, "cli-"));
      const archive = join(cwd, "archive.tgz");
      await writeFile(
        archive,
        lfToCrlf(
          ppaArchive({
            manifestYaml: singleImageYaml("example/app:1.0", "images/app.tar"),
            images: [{ path: "images/app.tar", body: save }],
          }),
        ),
      );
      const namespace = uniqueNamespace("hostile-cli");

      const run = await runCli(
        [
          "--archive",
          archive,
          "--namespace",
          namespace,
          "--registry",
          env!.registry,
        ],
        { cwd },
      );

      expect(run.code).toBe(1);
      expect(run.stderr).toContain(
        "line breaks were probably rewritten from LF to CR LF",
      );
      expect(run.stderr).toContain("hint: copy the file again in binary mode");
      expect(await listTree(cwd)).toEqual(["archive.tgz"]);
      expect(await registry.tagged(namespace)).toEqual([]);
    });

    it("blames the line breaks, not the engine, on the Docker path", async () => {
      const run = await runImport(
        ppaArchive({
          manifestYaml: singleImageYaml("example/app:1.0", "images/app.tar"),
          images: [{ path: "images/app.tar", body: lfToCrlf(save) }],
        }),
        { docker: true },
      );

      planFailure(
        run,
        /^images\/app\.tar: is not a valid tar file: each of the \d+ line feed \(LF\) bytes .* rewritten from LF to CR LF .*; copy the file again in binary mode/,
      );
      await expectNothingPublished(run);
    });
  });

  // -------------------------------------------------------------------------

  describe("compression that contradicts the name", () => {
    const spec: ImageSpec = {
      repoTags: ["example/app:1.0"],
      layers: [layer("base"), layer("app")],
    };
    const save = dockerSaveTarball([spec], { format: "legacy" });
    const tarballs = [
      { path: "images/gzip-named-tar.tar", body: gzipDeterministic(save) },
      { path: "images/plain-named-gzip.tar.gz", body: save },
      {
        path: "images/gzip-in-gzip.tar.gz",
        body: gzipDeterministic(gzipDeterministic(save)),
      },
    ];
    const archive = ppaArchive({
      manifestJson: JSON.stringify({
        images: tarballs.map((tarball, i) => ({
          image: `example/app-${i}`,
          tag: "1.0",
          archive: tarball.path,
        })),
      }),
      images: tarballs,
    });
    /** Checks that the three tarballs were published as one manifest over the image's own config. */
    async function expectSameImage(run: Run): Promise<void> {
      const manifests = await Promise.all(
        tarballs.map((_, i) =>
          registry.manifest(target(run, `example/app-${i}`), "1.0"),
        ),
      );
      const digest = manifests[0]!.digest;
      expect(digest).toMatch(/^sha256:[0-9a-f]{64}$/);
      for (const [i, manifest] of manifests.entries()) {
        expect(manifest?.digest, tarballs[i].path).toBe(digest);
      }
      expect(manifests[0]!.json.config.digest).toBe(
        describeImage(spec).imageId,
      );
      expect(await expectComplete(run)).toHaveLength(3);
    }

    it("imports each tarball as the same image", async () => {
      const run = await runImport(archive);

      succeeded(run);
      await expectSameImage(run);
      const config = await registry.configOf(
        target(run, "example/app-0"),
        "1.0",
      );
      expect(config.rootfs.diff_ids).toEqual(describeImage(spec).diffIds);
    });

    it.each([
      { name: "a plain tar named .tgz", fileName: "archive.tgz", gzip: 0 },
      { name: "gzip inside gzip", fileName: "archive.tgz", gzip: 2 },
      { name: "gzip named .tar", fileName: "archive.tar", gzip: 1 },
    ])("imports the same image from $name", async ({ fileName, gzip }) => {
      let bytes: Buffer = gunzipSync(archive);
      for (let i = 0; i < gzip; i += 1) bytes = gzipDeterministic(bytes);

      const run = await runImport(bytes, { fileName });

      succeeded(run);
      await expectSameImage(run);
    });
  });

  // -------------------------------------------------------------------------

  describe("root file systems in place of image tarballs", () => {
    const exported = rootFilesystemTar({
      "etc/passwd": "root:x:0:0:root:/root:/bin/sh\n",
      "bin/sh": "#!busybox\n",
    });
    const fromScratch = rootFilesystemTar({ app: "\u007fELF binary\n" });
    const problem =
      /^images\/app\.tar: is a root file system \(docker export output\), not a docker save image tarball.*; save the image with docker save -o FILE IMAGE, not docker export$/;

    it.each([
      { name: "an exported distribution", body: exported },
      {
        name: "an exported scratch image, gzipped",
        body: gzipDeterministic(fromScratch),
      },
    ])("names $name", async ({ body }) => {
      const run = await runImport(
        ppaArchive({
          manifestYaml: singleImageYaml("example/app:1.0", "images/app.tar"),
          images: [{ path: "images/app.tar", body }],
        }),
      );

      planFailure(run, problem);
      await expectNothingPublished(run);
    });

    it("names it in an archive without a manifest", async () => {
      const good: ImageSpec = {
        repoTags: ["example/good:1.0"],
        layers: [layer("good")],
      };
      const run = await runImport(
        ppaArchive({
          images: [
            { path: "images/app.tar", body: exported },
            {
              path: "images/good.tar",
              body: dockerSaveTarball([good], { format: "legacy" }),
            },
          ],
        }),
      );

      planFailure(run, problem);
      await expectNothingPublished(run);
    });
  });

  // -------------------------------------------------------------------------

  describe("several images and tags in one tarball", () => {
    const images: ImageSpec[] = [
      {
        repoTags: [
          "example/web:1.0",
          "example/web:latest",
          "quay.io/example/web:1.0",
        ],
        layers: [layer("web")],
      },
      {
        repoTags: ["example/worker:2.0"],
        layers: [layer("worker")],
        architecture: "arm64",
        variant: "v8",
      },
      {
        repoTags: ["example/worker:2.0-s390x"],
        layers: [layer("worker-s390x")],
        architecture: "s390x",
      },
      {
        repoTags: ["example/agent:3.0"],
        layers: [layer("agent")],
        os: "windows",
      },
    ];
    const oci = images.map((image) => ({
      ...image,
      repoTags: image.repoTags.map((tag) =>
        tag.replace("example/", "example/oci-"),
      ),
      layers: [layer(`oci-${image.repoTags[0]}`)],
    }));

    it("publishes every tag of every image in its place", async () => {
      const run = await runImport(
        ppaArchive({
          images: [
            {
              path: "images/legacy.tar",
              body: dockerSaveTarball(images, { format: "legacy" }),
            },
            {
              path: "images/oci.tar",
              body: dockerSaveTarball(oci, { format: "oci" }),
              gzip: true,
            },
          ],
        }),
      );

      succeeded(run);
      const tagged = await expectComplete(run);
      const expected = [...images, ...oci].flatMap((image) =>
        image.repoTags.map((repoTag) => ({
          repoTag: repoTag.replace("quay.io/", ""),
          image,
        })),
      );
      // quay.io/example/web:1.0 loses its host, so it meets example/web:1.0.
      const targets = new Set(
        expected.map(({ repoTag }) => target(run, repoTag)),
      );
      expect(tagged.sort()).toEqual([...targets].sort());
      for (const { repoTag, image } of expected) {
        const [path, tag] = repoTag.split(":");
        const config = await registry.configOf(target(run, path), tag);
        expect(config.architecture, repoTag).toBe(
          image.architecture ?? "amd64",
        );
        expect(config.variant, repoTag).toBe(image.variant);
        expect(config.os, repoTag).toBe(image.os ?? "linux");
        expect(config.rootfs.diff_ids, repoTag).toEqual(
          describeImage(image).diffIds,
        );
      }
      const web = await registry.manifest(target(run, "example/web"), "1.0");
      const latest = await registry.manifest(
        target(run, "example/web"),
        "latest",
      );
      expect(latest?.digest).toBe(web?.digest);
    });

    it("builds a manifest list from images of one tarball", async () => {
      const run = await runImport(
        ppaArchive({
          manifestYaml: manifestYaml([
            {
              image: "example/worker:2.0",
              references: [
                {
                  repository: "example/worker-arm64:2.0",
                  "pull-repository": "example/worker:2.0",
                  archive: "images/legacy.tar",
                  platform: {
                    os: "linux",
                    architecture: "arm64",
                    variant: "v8",
                  },
                },
                {
                  repository: "example/worker-s390x:2.0",
                  "pull-repository": "example/worker:2.0-s390x",
                  archive: "images/legacy.tar",
                  platform: { os: "linux", architecture: "s390x" },
                },
              ],
            },
          ]),
          images: [
            {
              path: "images/legacy.tar",
              body: dockerSaveTarball(images, { format: "legacy" }),
            },
          ],
        }),
      );

      succeeded(run);
      expect((await expectComplete(run)).sort()).toEqual([
        target(run, "example/worker-arm64:2.0"),
        target(run, "example/worker-s390x:2.0"),
        target(run, "example/worker:2.0"),
      ]);
      const list = await registry.manifest(
        target(run, "example/worker"),
        "2.0",
      );
      expect(list?.json.manifests.map((m: any) => m.platform)).toEqual([
        { os: "linux", architecture: "arm64", variant: "v8" },
        { os: "linux", architecture: "s390x" },
      ]);
      expect(run.result!.skipped.map((item) => item.item)).toEqual([
        "images/legacy.tar (example/web:1.0, example/web:latest, quay.io/example/web:1.0)",
        "images/legacy.tar (example/agent:3.0)",
      ]);
    });
  });

  // -------------------------------------------------------------------------

  describe("images saved by ID", () => {
    const spec: ImageSpec = { repoTags: [], layers: [layer("by-id")] };
    const imageId = describeImage(spec).imageId;
    const legacy = dockerSaveTarball([spec], { format: "legacy" });
    const withEmptyList = editManifestJson(legacy, (manifest) => {
      manifest[0].RepoTags = [];
    });
    const oci = dockerSaveTarball([spec], { format: "oci" });

    it.each([
      { name: "RepoTags null", body: legacy },
      { name: "RepoTags empty", body: withEmptyList },
      { name: "an OCI save", body: oci },
      {
        name: "an OCI save without manifest.json",
        body: withoutManifestJson(oci),
      },
    ])(
      "publishes $name under the name manifest.json maps to it",
      async ({ body }) => {
        const run = await runImport(
          ppaArchive({
            manifestJson: JSON.stringify({
              images: [
                {
                  image: "example/by-id",
                  tag: "1.0",
                  archive: "images/by-id.tar",
                },
              ],
            }),
            images: [{ path: "images/by-id.tar", body }],
          }),
        );

        succeeded(run);
        expect(await expectComplete(run)).toEqual([
          target(run, "example/by-id:1.0"),
        ]);
        const config = await registry.configOf(
          target(run, "example/by-id"),
          "1.0",
        );
        expect(config.rootfs.diff_ids).toEqual(describeImage(spec).diffIds);
      },
    );

    it("names the image ID and the manifest entry to add", async () => {
      const run = await runImport(
        ppaArchive({ images: [{ path: "images/by-id.tar", body: legacy }] }),
      );

      planFailure(
        run,
        new RegExp(
          `^images/by-id\\.tar holds image ${imageId} with no name \\(saved by ID\\) and the archive has no manifest to name it\\. Add a manifest\\.json to the archive that names it, such as \\{"images":\\[\\{"image":"NAME","tag":"TAG","archive":"images/by-id\\.tar"\\}\\]\\}, or save the image again by name: docker save -o FILE NAME:TAG$`,
        ),
      );
      await expectNothingPublished(run);
    });

    it("points a manifest entry without a file at the unnamed image", async () => {
      const run = await runImport(
        ppaArchive({
          manifestYaml: manifestYaml([{ image: "example/by-id:1.0" }]),
          images: [{ path: "images/by-id.tar", body: legacy }],
        }),
      );

      planFailure(
        run,
        new RegExp(
          `^manifest\\.yaml names example/by-id:1\\.0, but no image tarball in the archive carries that name\\. Images saved by ID carry no name: images/by-id\\.tar holds image ${imageId}\\. If example/by-id:1\\.0 is one of them, add "archive: images/by-id\\.tar" \\(its file\\) to the entry of example/by-id:1\\.0 in manifest\\.yaml$`,
        ),
      );
      await expectNothingPublished(run);
    });
  });

  // -------------------------------------------------------------------------

  describe("Docker 25 OCI saves", () => {
    const app: ImageSpec = {
      repoTags: ["example/app:1.0"],
      layers: [layer("base"), layer("app")],
    };
    const official: ImageSpec = {
      repoTags: ["busybox:1.0"],
      layers: [layer("busybox")],
    };
    const good: ImageSpec = {
      repoTags: ["example/good:1.0"],
      layers: [layer("good")],
    };
    const goodTarball = {
      path: "images/good.tar",
      body: dockerSaveTarball([good], { format: "legacy" }),
    };

    it("takes the name from io.containerd.image.name", async () => {
      const save = withoutManifestJson(
        dockerSaveTarball([app, official], { format: "oci" }),
      );
      const index = JSON.parse(
        String(readTarEntries(save).find((e) => e.path === "index.json")!.body),
      );
      expect(
        index.manifests.map(
          (m: any) => m.annotations["org.opencontainers.image.ref.name"],
        ),
      ).toEqual(["1.0", "1.0"]);

      const run = await runImport(
        ppaArchive({ images: [{ path: "images/app.tar", body: save }] }),
      );

      succeeded(run);
      expect((await expectComplete(run)).sort()).toEqual([
        target(run, "busybox:1.0"),
        target(run, "example/app:1.0"),
      ]);
    });

    it("uses manifest.json when index.json lists no images", async () => {
      const save = editTar(
        dockerSaveTarball([app], { format: "oci" }),
        (entry) =>
          entry.path === "index.json"
            ? {
                ...entry,
                body: JSON.stringify({ schemaVersion: 2, manifests: null }),
              }
            : entry,
      );

      const run = await runImport(
        ppaArchive({ images: [{ path: "images/app.tar", body: save }] }),
      );

      succeeded(run);
      expect(await expectComplete(run)).toEqual([
        target(run, "example/app:1.0"),
      ]);
      const config = await registry.configOf(target(run, "example/app"), "1.0");
      expect(config.rootfs.diff_ids).toEqual(describeImage(app).diffIds);
    });

    /** Cases that must stop the import, each beside an image that is fine. */
    const broken = [
      {
        name: "index.json and manifest.json that disagree",
        body: () => {
          const other = readTarEntries(
            dockerSaveTarball([good], { format: "oci" }),
          );
          return tarEntries([
            ...readTarEntries(
              dockerSaveTarball([app], { format: "oci" }),
            ).filter((entry) => entry.path !== "manifest.json"),
            ...other.filter(
              (entry) =>
                entry.path.startsWith("blobs/sha256/") ||
                entry.path === "manifest.json",
            ),
          ]);
        },
        problem:
          /^images\/app\.tar: manifest\.json and index\.json describe different images \(manifest\.json: sha256:\w+; index\.json: sha256:\w+\) \(the manifest maps example\/app:1\.0 to it\); the tarball was assembled from different saves; save the image again with docker save$/,
      },
      {
        name: "manifest.json with fewer layers than the config",
        body: () =>
          editManifestJson(
            dockerSaveTarball([app], { format: "legacy" }),
            (m) => {
              m[0].Layers = m[0].Layers.slice(1);
            },
          ),
        problem:
          /^images\/app\.tar: \w+\.json lists 2 layers \(rootfs\.diff_ids\) but the image has 1 \(the manifest maps example\/app:1\.0 to it\); the tarball is incomplete or was edited; save the image again$/,
      },
      {
        name: "an OCI manifest with fewer layers than the config",
        body: () =>
          editOciManifests(
            withoutManifestJson(dockerSaveTarball([app], { format: "oci" })),
            (manifest) => {
              manifest.layers = manifest.layers.slice(0, 1);
            },
          ),
        problem:
          /^images\/app\.tar: blobs\/sha256\/\w+ lists 2 layers \(rootfs\.diff_ids\) but the image has 1 \(the manifest maps example\/app:1\.0 to it\); the tarball is incomplete or was edited; save the image again$/,
      },
      {
        name: "a layer file that is missing",
        body: () => {
          const save = dockerSaveTarball([app], { format: "legacy" });
          const manifest = JSON.parse(
            String(
              readTarEntries(save).find((e) => e.path === "manifest.json")!
                .body,
            ),
          );
          const top = manifest[0].Layers[1];
          return editTar(save, (entry) =>
            entry.path === top ? undefined : entry,
          );
        },
        problem:
          /^images\/app\.tar: manifest\.json\[0\] names layers the tarball does not contain: \w+\/layer\.tar \(the manifest maps example\/app:1\.0 to it\); the tarball is incomplete; save the image again$/,
      },
      {
        name: "an OCI layer blob that is missing",
        body: () => {
          const { diffIds } = describeImage(app);
          const missing = `blobs/sha256/${digestHex(diffIds[0])}`;
          return editTar(
            withoutManifestJson(dockerSaveTarball([app], { format: "oci" })),
            (entry) => (entry.path === missing ? undefined : entry),
          );
        },
        problem:
          /^images\/app\.tar: blobs\/sha256\/\w+ names layers the tarball does not contain: blobs\/sha256\/\w+ \(the manifest maps example\/app:1\.0 to it\); the tarball is incomplete; save the image again$/,
      },
      {
        name: "layers listed out of order",
        body: () =>
          editManifestJson(
            dockerSaveTarball([app], { format: "legacy" }),
            (m) => {
              m[0].Layers.reverse();
            },
          ),
        problem:
          /^images\/app\.tar: layer \w+\/layer\.tar of example\/app:1\.0 has diff_id sha256:\w+, but its config lists sha256:\w+; the tarball is damaged or was edited, so save the image again$/,
      },
    ];

    it.each(broken)(
      "publishes nothing for $name",
      async ({ body, problem }) => {
        const run = await runImport(
          ppaArchive({
            manifestYaml: manifestYaml([
              {
                image: "example/app:1.0",
                references: [
                  { repository: "example/app:1.0", archive: "images/app.tar" },
                ],
              },
              { image: "example/good:1.0" },
            ]),
            images: [{ path: "images/app.tar", body: body() }, goodTarball],
          }),
        );

        planFailure(run, problem);
        await expectNothingPublished(run);
      },
    );
  });

  // -------------------------------------------------------------------------

  describe("Helm charts in place of PPA archives", () => {
    const files: TarEntry[] = [
      { path: "Chart.yaml", body: chartYaml("app") },
      { path: "values.yaml", body: values("example/app") },
    ];

    it.each([
      {
        name: "a packaged chart",
        body: helmChart({
          name: "app",
          version: "1.0.0",
          values: values("example/app"),
        }),
        entry: "app/Chart.yaml",
      },
      {
        name: "a chart with no top folder",
        body: chartOf(files),
        entry: "Chart.yaml",
      },
      {
        name: "a plain tar chart with a pax global header and macOS entries",
        body: tarEntries([
          {
            path: "pax_global_header",
            type: "pax-global",
            body: paxRecords({ comment: "0123456789abcdef" }),
          },
          { path: "._app", body: "\u0000\u0005\u0016\u0007" },
          ...files.map((file) => ({ ...file, path: `app/${file.path}` })),
        ]),
        entry: "app/Chart.yaml",
      },
    ])("says $name is a chart", async ({ body, entry }) => {
      const run = await runImport(body);

      const error = planFailure(run, /^the archive is a Helm chart/);
      expect(error.problems).toEqual([
        `the archive is a Helm chart (it contains ${entry}), not a PPA archive, so there is nothing to publish. Give a PPA archive, with manifest.yaml, images/ and charts/ at its top level.`,
      ]);
      await expectNothingPublished(run);
    });
  });

  // -------------------------------------------------------------------------

  describe("invalid target references", () => {
    const spec: ImageSpec = {
      repoTags: ["example/app:1.0"],
      layers: [layer("app")],
    };
    const other: ImageSpec = {
      repoTags: ["example/other:1.0"],
      layers: [layer("other")],
    };
    const tarballs = [
      {
        path: "images/app.tar",
        body: dockerSaveTarball([spec], { format: "legacy" }),
      },
      {
        path: "images/other.tar",
        body: dockerSaveTarball([other], { format: "oci" }),
      },
    ];
    const fromApp = (name: string) => ({
      image: name,
      references: [{ repository: name, archive: "images/app.tar" }],
    });
    const longTag = `1.0-${"a".repeat(126)}`;

    it("reports every invalid name at once", async () => {
      const run = await runImport(
        ppaArchive({
          manifestYaml: manifestYaml([
            fromApp("example/plus:1.0+build.7"),
            fromApp(`example/long:${longTag}`),
            fromApp("example/dot:.hidden"),
            fromApp("example/dash:-rc1"),
            fromApp("Example/Upper:1.0"),
            fromApp("registry.example.com:5000/example/no-tag"),
            fromApp("example/good:1.0"),
          ]),
          images: tarballs,
        }),
      );

      const error = planFailure(run, /^manifest\.yaml: images\[5\]/);
      const at = (path: string) => `${env!.registry}/${run.namespace}/${path}`;
      expect(error.problems).toEqual([
        'manifest.yaml: images[5].references[0].repository "registry.example.com:5000/example/no-tag" has no tag; write it as NAME:TAG, or give the tag in a "tag" field',
        `cannot publish example/plus:1.0+build.7 as ${at("example/plus:1.0+build.7")}: tag "1.0+build.7" contains "+", which tags may not contain. To publish it, give --map-plus-in-tags _ (or - or .), which writes 1.0_build.7`,
        `cannot publish example/long:${longTag} as ${at(`example/long:${longTag}`)}: tag "${longTag}" is longer than 128 characters`,
        `cannot publish example/dot:.hidden as ${at("example/dot:.hidden")}: tag ".hidden" starts with "."; tags start with a letter, digit or "_"`,
        `cannot publish example/dash:-rc1 as ${at("example/dash:-rc1")}: tag "-rc1" starts with "-"; tags start with a letter, digit or "_"`,
        `cannot publish Example/Upper:1.0 as ${at("Example/Upper:1.0")}: "Example" has uppercase letters; repository names are lowercase`,
      ]);
      await expectNothingPublished(run);
    });

    it("rejects an uppercase namespace before reading the archive", async () => {
      const run = await runImport(ppaArchive({ images: tarballs }), {
        namespace: "Team/product",
      });

      const error = failure(run);
      expect(error.code).toBe("USAGE");
      expect(error.message).toBe(
        'invalid namespace "Team/product": "Team" has uppercase letters; repository names are lowercase',
      );
    });

    it("maps + in tags when asked to", async () => {
      const run = await runImport(
        ppaArchive({
          manifestYaml: manifestYaml([
            {
              image: "example/app:1.0+build.7",
              references: [
                {
                  repository: "example/app-amd64:1.0+build.7",
                  archive: "images/app.tar",
                  platform: { os: "linux", architecture: "amd64" },
                },
              ],
            },
          ]),
          images: tarballs,
        }),
        { mapPlusInTags: "_" },
      );

      succeeded(run);
      expect((await expectComplete(run)).sort()).toEqual([
        target(run, "example/app-amd64:1.0_build.7"),
        target(run, "example/app:1.0_build.7"),
      ]);
      expect(run.warnings).toContain(
        "example/app-amd64:1.0+build.7 is published with the tag 1.0_build.7, because --map-plus-in-tags replaces + in tags",
      );
    });

    it("stops when a mapped tag meets another", async () => {
      const run = await runImport(
        ppaArchive({
          manifestJson: JSON.stringify({
            images: [
              { image: "example/app", tag: "1.0+7", archive: "images/app.tar" },
              {
                image: "example/app",
                tag: "1.0_7",
                archive: "images/other.tar",
              },
            ],
          }),
          images: tarballs,
        }),
        { mapPlusInTags: "_" },
      );

      planFailure(
        run,
        /^example\/app:1\.0\+7 \(manifest\.json: images\/app\.tar, linux\/amd64\) and example\/app:1\.0_7 \(manifest\.json: images\/other\.tar, linux\/amd64\) would both be published as .*\/example\/app:1\.0_7, but they are different images\. Correct the manifest so that each name maps to one image\.$/,
      );
      await expectNothingPublished(run);
    });
  });

  // -------------------------------------------------------------------------

  describe("one tag in per-architecture tarballs", () => {
    const amd64: ImageSpec = {
      repoTags: ["example/app:1.0"],
      layers: [layer("base"), layer("app-amd64")],
    };
    const arm64: ImageSpec = {
      repoTags: ["example/app:1.0"],
      layers: [layer("base"), layer("app-arm64")],
      architecture: "arm64",
      variant: "v8",
    };
    const tarballs = [
      {
        path: "images/app-amd64.tar",
        body: dockerSaveTarball([amd64], { format: "legacy" }),
      },
      {
        path: "images/app-arm64.tar",
        body: dockerSaveTarball([arm64], { format: "oci" }),
        gzip: true,
      },
    ];
    const platforms = {
      amd64: { os: "linux", architecture: "amd64" },
      arm64: { os: "linux", architecture: "arm64", variant: "v8" },
    };

    /** Builds a manifest with one reference per architecture, with or without the file of each. */
    function perArchitecture(withFiles: boolean): string {
      return manifestYaml([
        {
          image: "example/app:1.0",
          references: (["amd64", "arm64"] as const).map((architecture) => ({
            repository: `example/app-${architecture}:1.0`,
            "pull-repository": "example/app:1.0",
            ...(withFiles ? { archive: `images/app-${architecture}.tar` } : {}),
            platform: platforms[architecture],
          })),
        },
      ]);
    }

    async function expectEachAsItself(run: Run): Promise<void> {
      succeeded(run);
      expect((await expectComplete(run)).sort()).toEqual([
        target(run, "example/app-amd64:1.0"),
        target(run, "example/app-arm64:1.0"),
        target(run, "example/app:1.0"),
      ]);
      for (const [architecture, spec] of [
        ["amd64", amd64],
        ["arm64", arm64],
      ] as const) {
        const config = await registry.configOf(
          target(run, `example/app-${architecture}`),
          "1.0",
        );
        expect(config.architecture).toBe(architecture);
        expect(config.rootfs.diff_ids).toEqual(describeImage(spec).diffIds);
      }
      const list = await registry.manifest(target(run, "example/app"), "1.0");
      expect(list?.json.manifests.map((m: any) => m.platform)).toEqual([
        platforms.amd64,
        platforms.arm64,
      ]);
    }

    it("publishes each tarball as itself by its file", async () => {
      const run = await runImport(
        ppaArchive({ manifestYaml: perArchitecture(true), images: tarballs }),
      );

      await expectEachAsItself(run);
    });

    it("tells the tarballs apart by platform", async () => {
      const run = await runImport(
        ppaArchive({ manifestYaml: perArchitecture(false), images: tarballs }),
      );

      await expectEachAsItself(run);
    });

    it("publishes each as itself through the Docker Engine", async () => {
      const run = await runImport(
        ppaArchive({ manifestYaml: perArchitecture(true), images: tarballs }),
        { docker: true },
      );

      await expectEachAsItself(run);
      // The engine pushed the layers; the direct path uploaded none.
      expect(run.result!.blobs.uploaded).toBe(0);
    });

    it("stops without a manifest to tell them apart", async () => {
      const run = await runImport(ppaArchive({ images: tarballs }));

      planFailure(
        run,
        /^example\/app:1\.0 \(images\/app-amd64\.tar, linux\/amd64\) and example\/app:1\.0 \(images\/app-arm64\.tar, linux\/arm64\/v8\) would both be published as .*\/example\/app:1\.0, but they are different images\. Save one of the images under another tag\.$/,
      );
      await expectNothingPublished(run);
    });
  });

  // -------------------------------------------------------------------------

  describe("chart archives of unusual shape", () => {
    const spec: ImageSpec = {
      repoTags: ["example/chart-app:1.0"],
      layers: [layer("chart-app")],
    };
    const image = {
      path: "images/app.tar",
      body: dockerSaveTarball([spec], { format: "legacy" }),
    };
    const chartEntry = "charts/app-1.0.0.tgz";
    const withChart = manifestYaml(
      [{ image: "example/chart-app:1.0" }],
      [{ archive: chartEntry, "repository-keys": ["image.repository"] }],
    );
    const original = values("example/chart-app");
    const appleDouble = Buffer.from([
      0, 5, 22, 7, 0, 2, 0, 0, 0x4d, 0x61, 0x63,
    ]);

    /** Imports an archive with the image and one chart of these entries. */
    function importChart(entries: TarEntry[], manifest = withChart) {
      return runImport(
        ppaArchive({
          manifestYaml: manifest,
          images: [image],
          charts: [{ path: chartEntry, body: chartOf(entries) }],
        }),
      );
    }

    const rewritten = [
      {
        name: "a top folder other than the chart's name",
        entries: [
          { path: "src-app/Chart.yaml", body: chartYaml("app") },
          { path: "src-app/values.yaml", body: original },
        ],
        valuesEntry: "src-app/values.yaml",
      },
      {
        name: "backslash separators",
        entries: [
          { path: "app\\Chart.yaml", body: chartYaml("app") },
          { path: "app\\values.yaml", body: original },
        ],
        valuesEntry: "app\\values.yaml",
      },
      {
        name: "a pax global header",
        entries: [
          {
            path: "pax_global_header",
            type: "pax-global" as const,
            body: paxRecords({ comment: "0123456789abcdef" }),
          },
          { path: "app/Chart.yaml", body: chartYaml("app") },
          { path: "app/values.yaml", body: original },
        ],
        valuesEntry: "app/values.yaml",
      },
      {
        name: "macOS metadata files in the chart folder",
        entries: [
          { path: "app/._Chart.yaml", body: appleDouble },
          { path: "app/Chart.yaml", body: chartYaml("app") },
          { path: "app/._values.yaml", body: appleDouble },
          { path: "app/values.yaml", body: original },
        ],
        valuesEntry: "app/values.yaml",
      },
    ];

    it.each(rewritten)(
      "rewrites a chart with $name",
      async ({ entries, valuesEntry }) => {
        const run = await importChart(entries);

        succeeded(run);
        const written = join(run.outputDir, "charts/app-1.0.0.tgz");
        expect(run.result!.charts.map((chart) => chart.path)).toEqual([
          written,
        ]);
        expect(String(await readEntry(written, valuesEntry))).toBe(
          original.replace(
            "repository: example/chart-app",
            `repository: ${env!.registry}/${run.namespace}/example/chart-app`,
          ),
        );
        // Every other entry, pax headers and macOS files included, is kept.
        const entriesWritten = readTarEntries(
          gunzipSync(await readFile(written)),
        );
        expect(entriesWritten.map((entry) => entry.path)).toEqual(
          entries.map((entry) => entry.path),
        );
        expect(await listTree(join(run.outputDir, "charts"))).toEqual([
          "app-1.0.0.tgz",
        ]);
      },
    );

    it("stops on a named chart with no top folder", async () => {
      const run = await importChart([
        { path: "Chart.yaml", body: chartYaml("app") },
        { path: "values.yaml", body: original },
      ]);

      planFailure(
        run,
        /^the chart charts\/app-1\.0\.0\.tgz has Chart\.yaml outside a chart folder; .*helm package/,
      );
      await expectNothingPublished(run);
    });

    it("stops on a named chart with a macOS file beside its folder", async () => {
      const run = await importChart([
        { path: "._app", body: appleDouble },
        { path: "app/Chart.yaml", body: chartYaml("app") },
        { path: "app/values.yaml", body: original },
      ]);

      planFailure(
        run,
        /^the chart charts\/app-1\.0\.0\.tgz contains the macOS metadata file "\._app" outside the chart folder, which Helm also rejects; package the chart with helm package, or set COPYFILE_DISABLE=1 before tar on macOS/,
      );
      await expectNothingPublished(run);
    });

    it("writes a chart the manifest does not name as it is", async () => {
      const chart = chartOf([
        { path: "Chart.yaml", body: chartYaml("app") },
        { path: "values.yaml", body: original },
      ]);
      const run = await runImport(
        ppaArchive({
          manifestYaml: manifestYaml([{ image: "example/chart-app:1.0" }]),
          images: [image],
          charts: [{ path: chartEntry, body: chart }],
        }),
      );

      succeeded(run);
      expect(await expectComplete(run)).toEqual([
        target(run, "example/chart-app:1.0"),
      ]);
      expect(run.warnings).toContainEqual(
        expect.stringMatching(
          /^the chart charts\/app-1\.0\.0\.tgz has Chart\.yaml outside a chart folder; .*; writing it as it is$/,
        ),
      );
      const written = await readFile(
        join(run.outputDir, "charts/app-1.0.0.tgz"),
      );
      expect(written.equals(chart)).toBe(true);
    });

    it("ignores macOS copies of charts in the archive", async () => {
      const chart = helmChart({
        name: "app",
        version: "1.0.0",
        values: original,
      });
      const run = await runImport(
        ppaArchive({
          manifestYaml: withChart,
          images: [image],
          charts: [{ path: chartEntry, body: chart }],
          extra: [
            { path: "charts/._app-1.0.0.tgz", body: appleDouble },
            { path: "__MACOSX/charts/._app-1.0.0.tgz", body: appleDouble },
          ],
        }),
      );

      succeeded(run);
      expect(await listTree(join(run.outputDir, "charts"))).toEqual([
        "app-1.0.0.tgz",
      ]);
    });
  });

  // -------------------------------------------------------------------------

  describe("path traversal", () => {
    const spec: ImageSpec = {
      repoTags: ["example/app:1.0"],
      layers: [layer("app")],
    };
    const save = dockerSaveTarball([spec], { format: "legacy" });
    const chartEntry = "charts/app-1.0.0.tgz";
    const named = manifestYaml(
      [{ image: "example/app:1.0" }],
      [{ archive: chartEntry, "repository-keys": ["image.repository"] }],
    );
    const original = values("example/app");

    /** Imports an archive with the image and one chart of these entries. */
    function importChart(entries: TarEntry[], manifest = named) {
      return runImport(
        ppaArchive({
          manifestYaml: manifest,
          images: [{ path: "images/app.tar", body: save }],
          charts: [{ path: chartEntry, body: chartOf(entries) }],
        }),
      );
    }

    it("writes nothing outside the output folder for hostile entries", async () => {
      const absolute = join(root, "absolute-escape.txt");
      const escape = helmChart({
        name: "escape",
        version: "1.0.0",
        values: original,
      });
      const run = await runImport(
        ppaArchive({
          manifestYaml: manifestYaml([{ image: "example/app:1.0" }]),
          images: [{ path: "images/app.tar", body: save }],
          extra: [
            { path: "../escape.txt", body: "escaped\n" },
            { path: "images/../../escape.tar", body: save },
            { path: absolute, body: "escaped\n" },
            { path: "C:\\escape.txt", body: "escaped\n" },
            { path: "charts/link", type: "symlink", linkpath: "../.." },
            { path: "charts/link/escape-1.0.0.tgz", body: escape },
            {
              path: "charts/hard-1.0.0.tgz",
              type: "link",
              linkpath: "../../escape.txt",
            },
            {
              path: "images/passwd.tar",
              type: "symlink",
              linkpath: "/etc/passwd",
            },
          ],
        }),
      );

      succeeded(run);
      expect(await expectComplete(run)).toEqual([
        target(run, "example/app:1.0"),
      ]);
      expect(run.result!.skipped).toEqual(
        expect.arrayContaining([
          {
            item: "../escape.txt",
            reason:
              "the path is absolute or leaves the archive, so nothing was written for it",
          },
          {
            item: "images/../../escape.tar",
            reason:
              "the path is absolute or leaves the archive, so nothing was written for it",
          },
          {
            item: absolute,
            reason:
              "the path is absolute or leaves the archive, so nothing was written for it",
          },
          {
            item: "charts/link",
            reason: "SymbolicLink entries are not imported",
          },
          {
            item: "charts/hard-1.0.0.tgz",
            reason: "Link entries are not imported",
          },
          {
            item: "images/passwd.tar",
            reason: "SymbolicLink entries are not imported",
          },
        ]),
      );
      // The chart under the link's name is a file of the archive, written in charts/.
      expect(await listTree(join(run.outputDir, "charts"))).toEqual([
        "escape-1.0.0.tgz",
      ]);
      expect(await listTree(root)).not.toContain("absolute-escape.txt");
      expect(await listTree(root)).not.toContain("escape.txt");
      expect(await listTree(process.cwd())).not.toContain("escape.txt");
    });

    it("stops on a named chart with a ../ entry", async () => {
      const run = await importChart([
        { path: "app/Chart.yaml", body: chartYaml("app") },
        { path: "app/values.yaml", body: original },
        { path: "app/../../escape.txt", body: "escaped\n" },
      ]);

      planFailure(
        run,
        /^the chart charts\/app-1\.0\.0\.tgz contains "app\/\.\.\/\.\.\/escape\.txt", which leaves the chart folder; /,
      );
      await expectNothingPublished(run);
    });

    it("keeps links inside a chart as entries, never as files", async () => {
      const entries: TarEntry[] = [
        { path: "app/Chart.yaml", body: chartYaml("app") },
        { path: "app/values.yaml", body: original },
        { path: "app/templates/link", type: "symlink", linkpath: "../../.." },
        { path: "app/templates/link/escape.txt", body: "escaped\n" },
        { path: "app/hard.txt", type: "link", linkpath: "../../../escape.txt" },
        { path: "/absolute-escape.txt", body: "escaped\n" },
      ];
      const run = await importChart(entries);

      succeeded(run);
      const written = join(run.outputDir, "charts/app-1.0.0.tgz");
      expect(String(await readEntry(written, "app/values.yaml"))).toContain(
        `repository: ${env!.registry}/${run.namespace}/example/app`,
      );
      expect(await listTree(join(run.outputDir, "charts"))).toEqual([
        "app-1.0.0.tgz",
      ]);
    });

    it.each([
      { name: "..", problem: /the name "\.\." is not allowed/ },
      {
        name: "../../escape",
        problem: /the name "\.\.\/\.\.\/escape" contains a folder separator/,
      },
    ])("stops on a named chart called $name", async ({ name, problem }) => {
      const run = await importChart([
        { path: "app/Chart.yaml", body: chartYaml(name) },
        { path: "app/values.yaml", body: original },
      ]);

      const error = planFailure(
        run,
        /^the chart charts\/app-1\.0\.0\.tgz has an invalid Chart\.yaml: /,
      );
      expect(error.problems).toContainEqual(expect.stringMatching(problem));
      await expectNothingPublished(run);
    });

    it("writes a chart called ../../escape under its own file name", async () => {
      const run = await importChart(
        [
          { path: "app/Chart.yaml", body: chartYaml("../../escape") },
          { path: "app/values.yaml", body: original },
        ],
        manifestYaml([{ image: "example/app:1.0" }]),
      );

      succeeded(run);
      expect(await listTree(join(run.outputDir, "charts"))).toEqual([
        "app-1.0.0.tgz",
      ]);
    });
  });
});
