import { mkdtemp, readFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { afterAll, beforeAll, describe, expect, it } from "vitest";

import { readEntry } from "../helpers/archive.js";
import {
  type ChartMuseumServer,
  startChartMuseum,
} from "../helpers/chartmuseum-server.js";
import { runCli } from "../helpers/cli.js";
import { services, uniqueNamespace } from "../helpers/environment.js";
import { RegistryReader } from "../helpers/registry.js";

const env = services();
const archive = fileURLToPath(
  new URL("../../testdata/archives/multiarch-legacy.tgz", import.meta.url),
);
const museumUser = "charts";
const museumPassword = "museum-secret-value";

async function importWith(namespace: string, options: string[]) {
  const cwd = await mkdtemp(join(tmpdir(), "ppa-load-charts-"));
  const run = await runCli(
    [
      "--archive",
      archive,
      "--namespace",
      namespace,
      "--registry",
      env!.registry,
      ...options,
    ],
    { cwd, env: { CHARTMUSEUM_PASSWORD: museumPassword } },
  );
  return { cwd, ...run };
}

describe.skipIf(env === undefined)("chart publishing", () => {
  const registry = new RegistryReader(env?.registry ?? "");
  let museum: ChartMuseumServer;

  beforeAll(async () => {
    museum = await startChartMuseum({
      basicAuth: { user: museumUser, password: museumPassword },
      contextPath: "/museum",
    });
  });

  afterAll(async () => {
    await museum?.close();
  });

  it("uploads the rewritten chart to ChartMuseum", async () => {
    const namespace = uniqueNamespace("museum");
    const museumOptions = [
      "--chartmuseum-uri",
      museum.url,
      "--chartmuseum-user",
      museumUser,
    ];

    const run = await importWith(namespace, museumOptions);

    expect(run.code, run.stderr).toBe(0);
    expect(run.stderr).not.toContain(museumPassword);
    const written = await readFile(
      join(run.cwd, "ppa-import/charts/app-1.0.0.tgz"),
    );
    const response = await fetch(`${museum.url}/charts/app-1.0.0.tgz`, {
      headers: {
        authorization: `Basic ${Buffer.from(`${museumUser}:${museumPassword}`).toString("base64")}`,
      },
    });
    expect(response.status).toBe(200);
    const fetched = Buffer.from(await response.arrayBuffer());
    expect(fetched.equals(written)).toBe(true);
    const values = (
      await readEntry(
        join(run.cwd, "ppa-import/charts/app-1.0.0.tgz"),
        "app/values.yaml",
      )
    ).toString();
    expect(values).toContain(
      `repository: ${env!.registry}/${namespace}/example/app\n`,
    );

    const again = await importWith(namespace, museumOptions);
    expect(again.code, again.stderr).toBe(0);
    expect(again.stderr).toContain(
      "ChartMuseum already has app-1.0.0.tgz; not uploaded again",
    );

    const forced = await importWith(namespace, [...museumOptions, "--force"]);
    expect(forced.code, forced.stderr).toBe(0);
    expect(forced.stdout).toContain("ChartMuseum: replaced");
  }, 180_000);

  it("checks ChartMuseum credentials before publishing anything", async () => {
    const namespace = uniqueNamespace("museum-denied");
    const run = await importWith(namespace, [
      "--chartmuseum-uri",
      museum.url,
      "--chartmuseum-user",
      "nobody",
    ]);

    expect(run.code).toBe(1);
    expect(run.stderr).toContain(`ChartMuseum at ${museum.url} refused GET`);
    expect(run.stderr).toContain("401");
    expect(run.stderr).toContain("give --chartmuseum-user");
    expect(run.stderr).not.toContain(museumPassword);
    expect(await registry.tagged(namespace)).toEqual([]);
  }, 180_000);

  it("pushes the chart to an OCI registry as helm push does", async () => {
    const namespace = uniqueNamespace("oci-chart");

    const run = await importWith(namespace, [
      "--chart-registry",
      `oci://${env!.registry}/${namespace}/charts`,
    ]);

    expect(run.code, run.stderr).toBe(0);
    const manifest = await registry.manifest(
      `${namespace}/charts/app`,
      "1.0.0",
    );
    expect(manifest?.json.config.mediaType).toBe(
      "application/vnd.cncf.helm.config.v1+json",
    );
    expect(manifest?.json.layers.map((layer: any) => layer.mediaType)).toEqual([
      "application/vnd.cncf.helm.chart.content.v1.tar+gzip",
    ]);
    const written = await readFile(
      join(run.cwd, "ppa-import/charts/app-1.0.0.tgz"),
    );
    expect(manifest?.json.layers[0].size).toBe(written.length);
    expect(run.stdout).toContain(
      `OCI: ${env!.registry}/${namespace}/charts/app:1.0.0 ${manifest?.digest}`,
    );
  }, 180_000);
});
