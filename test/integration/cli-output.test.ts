import { mkdtemp, readFile, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { Ajv2020 } from "ajv/dist/2020.js";
import { beforeAll, describe, expect, it } from "vitest";

import { runCli, type CliRun } from "../helpers/cli.js";
import {
  corpusAvailable,
  corpusDir,
  repoRoot,
  services,
  uniqueNamespace,
} from "../helpers/environment.js";

const env = services();
const ready = corpusAvailable() && env !== undefined;

const minio = "ibm-minio-objectstore-2.4.7-ppa.tgz";
const mq = "ibm-mqadvanced-server-dev-6.0.0-ppa.tgz";

/** Progress lines appear every few seconds, so their number depends on speed. */
const isProgressLine = (line: string) => line.startsWith("  progress: ");

async function importWith(
  archives: string[],
  namespace: string,
  extra: string[] = [],
): Promise<CliRun & { cwd: string }> {
  const cwd = await mkdtemp(join(tmpdir(), "ppa-load-output-"));
  const run = await runCli(
    [
      ...archives.flatMap((archive) => ["--archive", archive]),
      "--namespace",
      namespace,
      "--registry",
      env!.registry,
      ...extra,
    ],
    { cwd },
  );
  return { cwd, ...run };
}

function parseLines(stdout: string): any[] {
  return stdout
    .split("\n")
    .filter((line) => line !== "")
    .map((line) => JSON.parse(line));
}

describe.skipIf(!ready)("text output", () => {
  it("prints the phases and results of an import", async () => {
    const namespace = uniqueNamespace("text");
    const run = await importWith([join(corpusDir, mq)], namespace);
    const cwd = run.cwd;
    const target = `${env!.registry}/${namespace}/ibmcom/mq`;
    const digest = "sha256:[0-9a-f]{64}";

    expect(run.code).toBe(0);
    const lines = run.stderr.split("\n").filter((l) => !isProgressLine(l));
    const expected = [
      `checking registry http://${env!.registry}`,
      `reading ${join(corpusDir, mq)}`,
      "  read images/ibmcom_mq_9.1.5.0-r1-amd64.tar: ibmcom/mq:9.1.5.0-r1-amd64",
      "matching images to the manifest",
      `pushing 1 image to registry http://${env!.registry}`,
      new RegExp(`^  published ${target}:9\\.1\\.5\\.0-r1-amd64 ${digest}$`),
      "writing 1 manifest list",
      new RegExp(
        `^  wrote manifest list ${target}:9\\.1\\.5\\.0-r1 ${digest}$`,
      ),
      `writing 1 chart to ${join(cwd, "ppa-import/charts")}`,
      `  wrote ${join(cwd, "ppa-import/charts/ibm-mqadvanced-server-dev-6.0.0.tgz")}`,
      "",
    ];
    expect(lines).toHaveLength(expected.length);
    expected.forEach((line, index) => {
      if (typeof line === "string") expect(lines[index]).toBe(line);
      else expect(lines[index]).toMatch(line);
    });
  });

  it("prints the summary on standard output", async () => {
    const namespace = uniqueNamespace("text");
    const run = await importWith([join(corpusDir, mq)], namespace);
    const target = `${env!.registry}/${namespace}/ibmcom/mq`;

    const lines = run.stdout.split("\n");
    expect(lines[0]).toBe(`Published 1 image to ${env!.registry}:`);
    expect(lines[1]).toMatch(
      new RegExp(
        `^  ${target}:9\\.1\\.5\\.0-r1-amd64  sha256:[0-9a-f]{64}  linux/amd64$`,
      ),
    );
    expect(lines[2]).toMatch(
      /^Blobs: 3 uploaded \([0-9.]+ [KM]iB\), 0 mounted from another repository, 0 already there$/,
    );
    expect(lines[3]).toBe("Manifest lists:");
    expect(lines).toContain(`    image.repository: ibmcom/mq -> ${target}`);
  });

  it("prints only the summary with --quiet", async () => {
    const namespace = uniqueNamespace("text");
    const run = await importWith([join(corpusDir, mq)], namespace, ["--quiet"]);

    expect(run.code).toBe(0);
    expect(run.stderr).toBe("");
    expect(run.stdout).toMatch(/^Published 1 image to /);
  });

  it("writes no terminal control sequences to a pipe", async () => {
    const namespace = uniqueNamespace("text");
    const run = await importWith([join(corpusDir, mq)], namespace);

    expect(run.stderr).not.toMatch(/\u001b/);
    expect(run.stdout).not.toMatch(/\u001b/);
  });
});

describe.skipIf(!ready)("--json output", () => {
  let validate: ReturnType<Ajv2020["compile"]>;
  beforeAll(async () => {
    const schema = JSON.parse(
      await readFile(join(repoRoot, "docs/schema/events.schema.json"), "utf8"),
    );
    const ajv = new Ajv2020({ allErrors: true, strict: true });
    ajv.addFormat(
      "date-time",
      (value: string) => !Number.isNaN(Date.parse(value)),
    );
    validate = ajv.compile(schema);
  });

  it("matches the schema line by line", async () => {
    const namespace = uniqueNamespace("json");
    const run = await importWith([join(corpusDir, minio)], namespace, [
      "--json",
      "--verbose",
    ]);

    expect(run.code).toBe(0);
    expect(run.stderr).toBe("");
    const records = parseLines(run.stdout);
    for (const record of records) {
      const valid = validate(record);
      expect(
        valid,
        JSON.stringify([record, validate.errors?.slice(0, 3)]),
      ).toBe(true);
    }
    const types = new Set(records.map((record) => record.type));
    for (const type of [
      "phase",
      "plan",
      "image",
      "list",
      "chart",
      "blob",
      "request",
      "summary",
    ]) {
      expect(types).toContain(type);
    }
  });

  it("ends with a summary of everything published", async () => {
    const namespace = uniqueNamespace("json");
    const run = await importWith([join(corpusDir, minio)], namespace, [
      "--json",
    ]);

    const records = parseLines(run.stdout);
    const summary = records.at(-1);
    expect(summary.type).toBe("summary");
    expect(summary.exitCode).toBe(0);
    expect(summary.images).toHaveLength(6);
    expect(summary.lists).toHaveLength(2);
    expect(summary.charts).toHaveLength(1);
    expect(summary.charts[0].changes.map((c: any) => c.key)).toEqual([
      "image.repository",
      "mcImage.repository",
    ]);
    const imageEvents = records.filter((record) => record.type === "image");
    expect(imageEvents.map((r) => r.target).sort()).toEqual(
      summary.images.map((image: any) => image.target).sort(),
    );
    expect(summary.blobs.uploaded).toBeGreaterThan(0);
    expect(summary.durationMs).toBeGreaterThan(0);
  });

  it("reports a fatal error as an error and a summary", async () => {
    const namespace = uniqueNamespace("json");
    const cwd = await mkdtemp(join(tmpdir(), "ppa-load-output-"));
    await writeFile(join(cwd, "notes.tgz"), "not an archive\n");

    const run = await importWith([join(cwd, "notes.tgz")], namespace, [
      "--json",
    ]);

    expect(run.code).toBe(1);
    const records = parseLines(run.stdout);
    for (const record of records) expect(validate(record)).toBe(true);
    const [error, summary] = records.slice(-2);
    expect(error.type).toBe("error");
    expect(error.code).toBe("ARCHIVE_UNREADABLE");
    expect(summary.type).toBe("summary");
    expect(summary.exitCode).toBe(1);
    expect(summary.failures[0].code).toBe("ARCHIVE_UNREADABLE");
  });
});

describe.skipIf(!ready)("several archives in one run", () => {
  let broken: string;
  let listFile: string;
  beforeAll(async () => {
    const folder = await mkdtemp(join(tmpdir(), "ppa-load-bulk-"));
    broken = join(folder, "broken.tgz");
    await writeFile(broken, Buffer.from([0x1f, 0x8b, 0x08, 0, 0, 0]));
    listFile = join(folder, "archives.txt");
    await writeFile(
      listFile,
      [
        "# the corpus, with a broken archive between",
        join(corpusDir, mq),
        "broken.tgz",
        "",
        join(corpusDir, minio),
      ].join("\n"),
    );
  });

  it("imports the others and exits 3 when one fails", async () => {
    const namespace = uniqueNamespace("bulk");
    const run = await importWith(
      [join(corpusDir, mq), broken, join(corpusDir, minio)],
      namespace,
    );

    expect(run.code).toBe(3);
    expect(run.stderr).toMatch(/error: .*broken\.tgz is cut short/);
    const tail = run.stdout.split("\n").slice(-5);
    expect(tail).toEqual([
      "Archives: 2 of 3 imported",
      `  imported  ${join(corpusDir, mq)}`,
      `  failed    ${broken}`,
      `  imported  ${join(corpusDir, minio)}`,
      "",
    ]);
  });

  it("uploads a blob once across archives", async () => {
    const namespace = uniqueNamespace("bulk");
    const run = await importWith(
      [join(corpusDir, mq), join(corpusDir, minio)],
      namespace,
      ["--json"],
    );

    expect(run.code).toBe(0);
    const records = parseLines(run.stdout);
    const uploads = records.filter(
      (record) => record.type === "blob" && record.outcome === "uploaded",
    );
    const digests = uploads.map((record) => record.digest);
    expect(new Set(digests).size).toBe(digests.length);
  });

  it("reads archives from --archive-list", async () => {
    const namespace = uniqueNamespace("bulk");
    const cwd = await mkdtemp(join(tmpdir(), "ppa-load-output-"));

    const run = await runCli(
      [
        "--archive-list",
        listFile,
        "--namespace",
        namespace,
        "--registry",
        env!.registry,
        "--json",
      ],
      { cwd },
    );

    expect(run.code).toBe(3);
    const last = parseLines(run.stdout).at(-1);
    expect(last.type).toBe("run-summary");
    expect(last.exitCode).toBe(3);
    expect(last.archives).toEqual([
      { archive: join(corpusDir, mq), exitCode: 0 },
      { archive: broken, exitCode: 1 },
      { archive: join(corpusDir, minio), exitCode: 0 },
    ]);
  });

  it("names the list line of a missing archive", async () => {
    const cwd = await mkdtemp(join(tmpdir(), "ppa-load-output-"));
    const list = join(cwd, "archives.txt");
    await writeFile(list, "# one archive\nmissing-ppa.tgz\n");

    const run = await runCli(
      [
        "--archive-list",
        list,
        "--namespace",
        "ns",
        "--registry",
        "127.0.0.1:9",
      ],
      { cwd },
    );

    expect(run.code).toBe(1);
    expect(run.stderr).toContain(
      `archive not found: ${join(cwd, "missing-ppa.tgz")} (line 2 of ${list})`,
    );
    expect(run.stderr).toContain(`hint: correct line 2 of ${list}`);
    // The archive is checked before the registry, which is not running.
    expect(run.stderr).not.toContain("cannot reach");
  });

  it("exits 2 for an invalid namespace", async () => {
    const cwd = await mkdtemp(join(tmpdir(), "ppa-load-output-"));

    const text = await runCli(
      ["--archive", join(corpusDir, mq), "--namespace", "Team"],
      { cwd },
    );
    const json = await runCli(
      ["--archive", join(corpusDir, mq), "--namespace", "Team", "--json"],
      { cwd },
    );

    expect(text.code).toBe(2);
    expect(text.stderr).toMatch(/invalid namespace "Team"/);
    expect(json.code).toBe(2);
    expect(parseLines(json.stdout).at(-1).exitCode).toBe(2);
  });

  it("exits 2 for a --ca-cert without PEM", async () => {
    const cwd = await mkdtemp(join(tmpdir(), "ppa-load-output-"));
    const notPem = join(cwd, "ca.cnf");
    await writeFile(notPem, "[req]\ndistinguished_name = dn\n");

    const run = await runCli(
      [
        "--archive",
        join(corpusDir, mq),
        "--namespace",
        "ns",
        "--registry",
        "registry.example.com",
        "--ca-cert",
        notPem,
      ],
      { cwd },
    );

    expect(run.code).toBe(2);
    expect(run.stderr).toContain(
      `--ca-cert ${notPem} contains no PEM certificate`,
    );
  });

  it("exits 2 without an archive", async () => {
    const cwd = await mkdtemp(join(tmpdir(), "ppa-load-output-"));

    const run = await runCli(["--namespace", "ns"], { cwd });

    expect(run.code).toBe(2);
    expect(run.stderr).toMatch(/no archive given/);
  });
});
