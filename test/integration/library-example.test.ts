import { execFile } from "node:child_process";
import { mkdir, mkdtemp, readFile, symlink, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { promisify } from "node:util";
import { beforeAll, describe, expect, it } from "vitest";

import { repoRoot, services, uniqueNamespace } from "../helpers/environment.js";
import { RegistryReader } from "../helpers/registry.js";

const run = promisify(execFile);
const env = services();
const archive = join(repoRoot, "testdata/archives/multiarch-legacy.tgz");

/** Returns the code block that follows `<!-- example: NAME -->` in docs/library.md. */
async function example(name: string): Promise<string> {
  const text = await readFile(join(repoRoot, "docs/library.md"), "utf8");
  const match = new RegExp(
    `<!-- example: ${name} -->\\n\`\`\`js\\n([\\s\\S]*?)\`\`\``,
  ).exec(text);
  if (!match) throw new Error(`docs/library.md has no example "${name}"`);
  return match[1];
}

/**
 * Makes a project folder whose node_modules/ppa-load is this repository, as
 * `npm install` of the package would resolve it, with the built dist/.
 */
async function project(): Promise<string> {
  const folder = await mkdtemp(join(tmpdir(), "ppa-load-library-"));
  await mkdir(join(folder, "node_modules"));
  await symlink(repoRoot, join(folder, "node_modules/ppa-load"), "dir");
  await writeFile(
    join(folder, "package.json"),
    JSON.stringify({ type: "module", private: true }),
  );
  return folder;
}

describe("library examples", () => {
  let folder: string;
  beforeAll(async () => {
    folder = await project();
    await writeFile(join(folder, "import.mjs"), await example("build-script"));
    await writeFile(join(folder, "inspect.mjs"), await example("inspect"));
  });

  it("type-check against the declarations", async () => {
    const tsc = join(repoRoot, "node_modules/typescript/bin/tsc");
    const args = [
      tsc,
      "--noEmit",
      "--allowJs",
      "--checkJs",
      "--strict",
      "--module",
      "nodenext",
      "--moduleResolution",
      "nodenext",
      "--target",
      "es2022",
      "--typeRoots",
      join(repoRoot, "node_modules/@types"),
      "--types",
      "node",
      "import.mjs",
      "inspect.mjs",
    ];

    const result = await run(process.execPath, args, { cwd: folder }).catch(
      (error: { stdout: string; code: number }) => error,
    );

    expect(result.stdout).toBe("");
  });

  it("inspect an archive", async () => {
    const { stdout } = await run(process.execPath, ["inspect.mjs", archive], {
      cwd: folder,
    });

    expect(stdout).toBe("3 images to publish\n");
  });

  it.skipIf(!env)("import an archive into the registry", async () => {
    const namespace = uniqueNamespace("library");

    const { stdout } = await run(
      process.execPath,
      ["import.mjs", archive, env!.registry, namespace],
      { cwd: folder },
    );

    const lines = stdout.trim().split("\n").sort();
    expect(lines).toHaveLength(4);
    const prefix = `${env!.registry}/${namespace}/example`;
    expect(lines[0]).toMatch(
      new RegExp(`^manifest list ${prefix}/app:1\\.0 sha256:[0-9a-f]{64}$`),
    );
    for (const [index, arch] of ["amd64", "arm64", "s390x"].entries()) {
      expect(lines[index + 1]).toMatch(
        new RegExp(
          `^published ${prefix}/app-${arch}:1\\.0 sha256:[0-9a-f]{64}$`,
        ),
      );
    }
    const reader = new RegistryReader(env!.registry);
    expect(await reader.tagged(namespace)).toHaveLength(4);
  });

  it("exit 2 without arguments", async () => {
    const result = await run(process.execPath, ["import.mjs"], {
      cwd: folder,
    }).catch((error: { code: number; stderr: string }) => error);

    expect(result).toMatchObject({ code: 2 });
  });
});
