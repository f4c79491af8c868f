import { mkdtemp, readFile, readdir } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Ajv2020 } from "ajv/dist/2020.js";
import { describe, expect, it } from "vitest";

import { runCli } from "../helpers/cli.js";
import {
  corpusAvailable,
  corpusDir,
  repoRoot,
  services,
  uniqueNamespace,
} from "../helpers/environment.js";
import { RegistryReader } from "../helpers/registry.js";

const env = services();
const ready = corpusAvailable() && env !== undefined;
const mq = "ibm-mqadvanced-server-dev-6.0.0-ppa.tgz";

async function dryRun(namespace: string, extra: string[] = []) {
  const cwd = await mkdtemp(join(tmpdir(), "ppa-load-dry-run-"));
  const run = await runCli(
    [
      "--archive",
      join(corpusDir, mq),
      "--namespace",
      namespace,
      "--registry",
      env!.registry,
      "--dry-run",
      ...extra,
    ],
    { cwd },
  );
  return { cwd, ...run };
}

describe.skipIf(!ready)("import --dry-run", () => {
  it("plans the import and writes nothing", async () => {
    const namespace = uniqueNamespace("dry");

    const run = await dryRun(namespace);

    expect(run.code).toBe(0);
    const target = `${env!.registry}/${namespace}/ibmcom/mq`;
    expect(run.stdout).toContain(
      `Destination: registry http://${env!.registry}`,
    );
    expect(run.stdout).toContain(`  ${target}:9.1.5.0-r1-amd64  new`);
    expect(run.stdout).toContain(`  ${target}:9.1.5.0-r1  new`);
    expect(run.stdout).toContain(`image.repository: ibmcom/mq -> ${target}`);
    expect(run.stdout).toMatch(/Nothing was uploaded, tagged or written/);
    expect(await readdir(run.cwd)).toEqual([]);
    const reader = new RegistryReader(env!.registry);
    expect(await reader.tagged(namespace)).toEqual([]);
  });

  it("shows the digest of tags that exist", async () => {
    const namespace = uniqueNamespace("dry");
    const cwd = await mkdtemp(join(tmpdir(), "ppa-load-dry-run-"));
    await runCli(
      [
        "--archive",
        join(corpusDir, mq),
        "--namespace",
        namespace,
        "--registry",
        env!.registry,
        "--json",
      ],
      { cwd },
    );

    const run = await dryRun(namespace, ["--json"]);

    expect(run.code).toBe(0);
    const result = JSON.parse(run.stdout);
    const ajv = new Ajv2020({ allErrors: true, strict: true });
    for (const name of ["inspect", "dry-run"]) {
      const file = join(repoRoot, `docs/schema/${name}.schema.json`);
      ajv.addSchema(
        JSON.parse(await readFile(file, "utf8")),
        `${name}.schema.json`,
      );
    }
    const validate = ajv.getSchema("dry-run.schema.json")!;
    expect(validate(result), JSON.stringify(validate.errors)).toBe(true);
    expect(result.inspection.importable).toBe(true);
    expect(result.exitCode).toBe(0);
    expect(result.credentials).toBeNull();
    expect(result.tags).toHaveLength(2);
    for (const tag of result.tags) {
      expect(tag.currentDigest).toMatch(/^sha256:[0-9a-f]{64}$/);
    }
    const [reference] = result.inspection.references;
    const imageTag = result.tags.find(
      (tag: { target: string }) => tag.target === reference.target,
    );
    expect(imageTag.currentImage).toBe(reference.imageId);
    const listTag = result.tags.find(
      (tag: { target: string }) => tag.target !== reference.target,
    );
    expect(listTag.currentImage).toBeNull();

    const text = await dryRun(namespace, ["--no-overwrite"]);

    expect(text.code).toBe(0);
    expect(text.stdout).toContain(
      `${reference.target}  exists at ${imageTag.currentDigest} with the same image; --no-overwrite fails it unless`,
    );
  });

  it("makes the local checks of an import", async () => {
    const run = await dryRun(uniqueNamespace("dry"), [
      "--temp-dir",
      "/nonexistent/ppa-load-temp",
    ]);

    expect(run.code).toBe(2);
    expect(run.stderr).toContain(
      "the folder for temporary files /nonexistent/ppa-load-temp does not exist",
    );
  });

  it("fails on rejected credentials", async () => {
    const cwd = await mkdtemp(join(tmpdir(), "ppa-load-dry-run-"));

    const run = await runCli(
      [
        "--archive",
        join(corpusDir, mq),
        "--namespace",
        "dry",
        "--registry",
        env!.authRegistry,
        "--username",
        env!.authUser,
        "--password-stdin",
        "--dry-run",
      ],
      { cwd, input: "wrong-password\n" },
    );

    expect(run.code).toBe(1);
    expect(run.stderr).toMatch(/401/);
    expect(run.stderr).not.toContain("wrong-password");
    expect(run.stdout).toBe("");
  });
});
