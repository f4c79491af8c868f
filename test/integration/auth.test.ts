import { mkdir, mkdtemp, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";

import { runCli } from "../helpers/cli.js";
import {
  corpusAvailable,
  corpusDir,
  services,
  uniqueNamespace,
} from "../helpers/environment.js";
import { RegistryReader } from "../helpers/registry.js";

const env = services();
const ready = corpusAvailable() && env !== undefined;
const archive = join(
  corpusDir ?? "",
  "ibm-mqadvanced-server-dev-6.0.0-ppa.tgz",
);

async function workspace(): Promise<string> {
  return mkdtemp(join(tmpdir(), "ppa-load-auth-"));
}

/** Each way of publishing, with the options that choose it. */
const paths = [
  { name: "straight to the registry", options: [] as string[] },
  { name: "through Docker", options: ["--docker"] },
];

describe.skipIf(!ready).each(paths)(
  "import into a registry with htpasswd auth $name",
  (path) => {
    const reader = new RegistryReader(env?.authRegistry ?? "", {
      user: env?.authUser ?? "",
      password: env?.authPassword ?? "",
    });

    it("pushes with --username and --password-stdin", async () => {
      const namespace = uniqueNamespace("auth-stdin");
      const cwd = await workspace();

      const run = await runCli(
        [
          "--archive",
          archive,
          "--namespace",
          namespace,
          "--registry",
          env!.authRegistry,
          ...path.options,
          "--username",
          env!.authUser,
          "--password-stdin",
        ],
        {
          cwd,
          input: `${env!.authPassword}\n`,
          env: { DOCKER_CONFIG: join(cwd, "no-config") },
        },
      );

      expect(run.stderr).not.toContain(env!.authPassword);
      expect(run.code).toBe(0);
      expect((await reader.tags(`${namespace}/ibmcom/mq`)).sort()).toEqual([
        "9.1.5.0-r1",
        "9.1.5.0-r1-amd64",
      ]);
    });

    it("pushes with credentials from the Docker config", async () => {
      const namespace = uniqueNamespace("auth-config");
      const cwd = await workspace();
      const configDir = join(cwd, "docker-config");
      await mkdir(configDir);
      const auth = Buffer.from(
        `${env!.authUser}:${env!.authPassword}`,
      ).toString("base64");
      await writeFile(
        join(configDir, "config.json"),
        JSON.stringify({ auths: { [env!.authRegistry]: { auth } } }),
      );

      const run = await runCli(
        [
          "--archive",
          archive,
          "--namespace",
          namespace,
          "--registry",
          env!.authRegistry,
          ...path.options,
        ],
        {
          cwd,
          env: { DOCKER_CONFIG: configDir },
        },
      );

      expect(run.code).toBe(0);
      const list = await reader.manifest(
        `${namespace}/ibmcom/mq`,
        "9.1.5.0-r1",
      );
      expect(list?.json.manifests).toHaveLength(1);
    });

    it("stops before reading the archive when there are no credentials", async () => {
      const namespace = uniqueNamespace("auth-none");
      const cwd = await workspace();

      const run = await runCli(
        [
          "--archive",
          archive,
          "--namespace",
          namespace,
          "--registry",
          env!.authRegistry,
          ...path.options,
        ],
        {
          cwd,
          env: { DOCKER_CONFIG: join(cwd, "no-config") },
        },
      );

      expect(run.code).toBe(1);
      expect(run.stderr).toContain(`${env!.authRegistry} requires credentials`);
      expect(run.stderr).toContain("hint: log in with docker login");
      expect(run.stderr).not.toContain("reading");
      expect(await reader.repositories(namespace)).toEqual([]);
    });

    it("reports rejected credentials without printing the password", async () => {
      const cwd = await workspace();

      const run = await runCli(
        [
          "--archive",
          archive,
          "--namespace",
          "ns",
          "--registry",
          env!.authRegistry,
          ...path.options,
          "--username",
          env!.authUser,
          "--password-stdin",
        ],
        {
          cwd,
          input: "wrong-password-value",
          env: { DOCKER_CONFIG: join(cwd, "no-config") },
        },
      );

      expect(run.code).toBe(1);
      expect(run.stderr).toMatch(/401/);
      expect(run.stderr).toContain(
        "rejected the user and password given with --username",
      );
      expect(run.stderr).not.toContain("wrong-password-value");
    });
  },
);
