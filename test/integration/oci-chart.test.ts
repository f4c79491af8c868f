import { createHash } from "node:crypto";
import { describe, expect, it } from "vitest";

import {
  HelmMediaType,
  chartConfig,
  parseChartRegistry,
  pushChartToOci,
  readChartMetadata,
} from "../../src/charts/oci-chart.js";
import { PpaLoadError } from "../../src/errors.js";
import { RegistryClient } from "../../src/registry/client.js";
import type { Credentials } from "../../src/registry/credentials.js";
import { MediaType } from "../../src/registry/media-types.js";
import { helmChart } from "../../testdata/generate.js";
import { services, uniqueNamespace } from "../helpers/environment.js";
import { RegistryReader } from "../helpers/registry.js";

const env = services();

function sha256(bytes: Buffer): string {
  return `sha256:${createHash("sha256").update(bytes).digest("hex")}`;
}

/** Reads a blob's bytes with plain fetch, independently of the client under test. */
async function readBlob(
  registry: string,
  auth: { user: string; password: string } | undefined,
  repository: string,
  digest: string,
): Promise<Buffer> {
  const headers: Record<string, string> = {};
  if (auth) {
    headers.authorization = `Basic ${Buffer.from(`${auth.user}:${auth.password}`).toString("base64")}`;
  }
  const response = await fetch(
    `http://${registry}/v2/${repository}/blobs/${digest}`,
    { headers },
  );
  if (!response.ok) {
    throw new Error(`GET blob ${repository}@${digest}: ${response.status}`);
  }
  return Buffer.from(await response.arrayBuffer());
}

const chartYaml = [
  "apiVersion: v2",
  "name: demo",
  "version: 1.2.3+build.7",
  "description: A demo chart <for> tests & checks",
  "home: https://example.com/demo",
  "sources:",
  "  - https://example.com/demo/src",
  "keywords: [demo, test]",
  "maintainers:",
  "  - name: Dev Team",
  "    email: dev@example.com",
  "  - name: Ops",
  "appVersion: 4.5.6",
  "annotations:",
  "  zeta: last",
  "  org.opencontainers.image.title: ignored",
  "  alpha: first",
  "",
].join("\n");

function demoChart(): Buffer {
  return helmChart({
    name: "demo",
    version: "1.2.3+build.7",
    values: "image:\n  repository: demo\n  tag: 4.5.6\n",
    extraFiles: { "Chart.yaml": chartYaml },
  });
}

/** The config that `helm push` writes for demoChart, byte for byte. */
const expectedConfig =
  '{"name":"demo","home":"https://example.com/demo","sources":["https://example.com/demo/src"],' +
  '"version":"1.2.3+build.7","description":"A demo chart \\u003cfor\\u003e tests \\u0026 checks",' +
  '"keywords":["demo","test"],"maintainers":[{"name":"Dev Team","email":"dev@example.com"},{"name":"Ops"}],' +
  '"apiVersion":"v2","appVersion":"4.5.6",' +
  '"annotations":{"alpha":"first","org.opencontainers.image.title":"ignored","zeta":"last"}}';

const registries = [
  {
    name: "an open registry",
    registry: () => env!.registry,
    auth: () => undefined,
  },
  {
    name: "a registry with htpasswd auth",
    registry: () => env!.authRegistry,
    auth: () => ({ user: env!.authUser, password: env!.authPassword }),
  },
];

for (const setup of registries) {
  describe.skipIf(!env)(`pushChartToOci to ${setup.name}`, () => {
    function clientFor(): RegistryClient {
      const auth = setup.auth();
      const credentials: Credentials | undefined = auth && {
        username: auth.user,
        password: auth.password,
        source: "--username",
      };
      return new RegistryClient({
        registry: setup.registry(),
        credentials,
        env: {},
      });
    }

    it("pushes a chart as helm push does", async () => {
      const registry = setup.registry();
      const auth = setup.auth();
      const namespace = uniqueNamespace("chart");
      const repository = `${namespace}/helm/demo`;
      const chart = demoChart();
      const client = clientFor();

      const result = await pushChartToOci({
        client,
        repositoryPath: `${namespace}/helm`,
        chart,
        name: "demo",
        version: "1.2.3+build.7",
      });
      client.close();

      expect(result.reference).toBe(`${registry}/${repository}:1.2.3_build.7`);
      const reader = new RegistryReader(registry, auth);
      expect(await reader.tags(repository)).toEqual(["1.2.3_build.7"]);
      const manifest = await reader.manifest(repository, "1.2.3_build.7");
      expect(manifest).toBeDefined();
      expect(manifest!.mediaType).toBe(MediaType.ociManifest);
      expect(manifest!.digest).toBe(result.digest);
      expect(manifest!.json.schemaVersion).toBe(2);

      const config = manifest!.json.config;
      expect(config.mediaType).toBe(HelmMediaType.config);
      const configBytes = await readBlob(
        registry,
        auth,
        repository,
        config.digest,
      );
      expect(configBytes.toString("utf8")).toBe(expectedConfig);
      expect(config.size).toBe(configBytes.length);
      expect(await reader.blobJson(repository, config.digest)).toEqual({
        name: "demo",
        home: "https://example.com/demo",
        sources: ["https://example.com/demo/src"],
        version: "1.2.3+build.7",
        description: "A demo chart <for> tests & checks",
        keywords: ["demo", "test"],
        maintainers: [
          { name: "Dev Team", email: "dev@example.com" },
          { name: "Ops" },
        ],
        apiVersion: "v2",
        appVersion: "4.5.6",
        annotations: {
          alpha: "first",
          "org.opencontainers.image.title": "ignored",
          zeta: "last",
        },
      });

      expect(manifest!.json.layers).toHaveLength(1);
      const layer = manifest!.json.layers[0];
      expect(layer.mediaType).toBe(HelmMediaType.chartContent);
      expect(layer.digest).toBe(sha256(chart));
      expect(layer.size).toBe(chart.length);
      const pulled = await readBlob(registry, auth, repository, layer.digest);
      expect(pulled.equals(chart)).toBe(true);

      // Helm writes the manifest with json.Marshal: no mediaType field,
      // sorted annotation keys and HTML characters escaped.
      const description = "A demo chart \\u003cfor\\u003e tests \\u0026 checks";
      const expectedManifest =
        `{"schemaVersion":2,"config":{"mediaType":"${HelmMediaType.config}","digest":"${sha256(configBytes)}","size":${configBytes.length}},` +
        `"layers":[{"mediaType":"${HelmMediaType.chartContent}","digest":"${sha256(chart)}","size":${chart.length}}],` +
        `"annotations":{"alpha":"first","org.opencontainers.image.authors":"Dev Team (dev@example.com), Ops",` +
        `"org.opencontainers.image.created":"2019-01-01T00:00:00Z","org.opencontainers.image.description":"${description}",` +
        `"org.opencontainers.image.source":"https://example.com/demo/src","org.opencontainers.image.title":"demo",` +
        `"org.opencontainers.image.url":"https://example.com/demo","org.opencontainers.image.version":"1.2.3+build.7","zeta":"last"}}`;
      expect(manifest!.digest).toBe(sha256(Buffer.from(expectedManifest)));

      expect(manifest!.json.annotations).toEqual({
        "org.opencontainers.image.authors": "Dev Team (dev@example.com), Ops",
        "org.opencontainers.image.created": "2019-01-01T00:00:00Z",
        "org.opencontainers.image.description":
          "A demo chart <for> tests & checks",
        "org.opencontainers.image.source": "https://example.com/demo/src",
        "org.opencontainers.image.title": "demo",
        "org.opencontainers.image.url": "https://example.com/demo",
        "org.opencontainers.image.version": "1.2.3+build.7",
        alpha: "first",
        zeta: "last",
      });
    });

    it("pushes the same manifest twice", async () => {
      const namespace = uniqueNamespace("chart");
      const chart = demoChart();
      const client = clientFor();
      const options = {
        client,
        repositoryPath: namespace,
        chart,
        name: "demo",
        version: "1.2.3+build.7",
      };

      const first = await pushChartToOci(options);
      const second = await pushChartToOci(options);
      client.close();

      expect(second.digest).toBe(first.digest);
      expect(second.reference).toBe(first.reference);
    });

    it("pushes a provenance file as a layer", async () => {
      const registry = setup.registry();
      const auth = setup.auth();
      const namespace = uniqueNamespace("chart");
      const repository = `${namespace}/demo`;
      const chart = demoChart();
      const provenance = Buffer.from(
        "-----BEGIN PGP SIGNED MESSAGE-----\nHash: SHA512\n\nname: demo\n",
      );
      const client = clientFor();

      await pushChartToOci({
        client,
        repositoryPath: namespace,
        chart,
        name: "demo",
        version: "1.2.3+build.7",
        provenance,
      });
      client.close();

      const reader = new RegistryReader(registry, auth);
      const manifest = await reader.manifest(repository, "1.2.3_build.7");
      const layers = manifest!.json.layers as {
        mediaType: string;
        digest: string;
      }[];
      const expected = [
        { mediaType: HelmMediaType.chartContent, digest: sha256(chart) },
        { mediaType: HelmMediaType.provenance, digest: sha256(provenance) },
      ].sort((a, b) => (a.digest < b.digest ? -1 : 1));
      expect(
        layers.map(({ mediaType, digest }) => ({ mediaType, digest })),
      ).toEqual(expected);
      const pulled = await readBlob(
        registry,
        auth,
        repository,
        sha256(provenance),
      );
      expect(pulled.equals(provenance)).toBe(true);
    });
  });
}

describe("pushChartToOci checks", () => {
  // The registry is never contacted: the checks fail before any request.
  const client = new RegistryClient({ registry: "127.0.0.1:9", env: {} });

  it("rejects a mismatched chart name", async () => {
    const push = pushChartToOci({
      client,
      repositoryPath: "team",
      chart: demoChart(),
      name: "other",
      version: "1.2.3+build.7",
    });
    await expect(push).rejects.toThrow(PpaLoadError);
    await expect(push).rejects.toThrow('name "demo"');
  });

  it("rejects an uppercase chart name", async () => {
    const chart = helmChart({ name: "Demo", version: "1.0.0", values: "" });
    const push = pushChartToOci({
      client,
      repositoryPath: "team",
      chart,
      name: "Demo",
      version: "1.0.0",
    });
    await expect(push).rejects.toThrow("uppercase");
  });
});

describe("parseChartRegistry", () => {
  it.each([
    [
      "oci://registry.example.com/team/charts",
      "registry.example.com",
      "team/charts",
    ],
    ["oci://127.0.0.1:5000/charts/", "127.0.0.1:5000", "charts"],
    ["oci://registry.example.com", "registry.example.com", ""],
  ])("reads %s", (uri, registry, repositoryPath) => {
    expect(parseChartRegistry(uri)).toEqual({ registry, repositoryPath });
  });

  it.each([
    ["https://registry.example.com/charts", "oci://HOST"],
    ["oci:///charts", "host is missing"],
    ["oci://registry.example.com/Team", "uppercase"],
    ["oci://registry.example.com/charts:1.0", "tag or digest"],
    ["oci://registry.example.com/charts?x=1", "without a query"],
  ])("rejects %s", (uri, expected) => {
    expect(() => parseChartRegistry(uri)).toThrow(expected);
  });

  it("rejects credentials without printing them", () => {
    let error: unknown;
    try {
      parseChartRegistry("oci://user:pa55word@registry.example.com/charts");
    } catch (caught) {
      error = caught;
    }
    expect(error).toBeInstanceOf(PpaLoadError);
    expect((error as PpaLoadError).code).toBe("USAGE");
    expect((error as PpaLoadError).message).not.toContain("pa55word");
  });
});

describe("readChartMetadata", () => {
  it("reads a v1 chart with requirements.yaml", async () => {
    const chart = helmChart({
      name: "legacy",
      version: "0.1.0",
      values: "",
      extraFiles: {
        "Chart.yaml": "name: legacy\nversion: 0.1.0\nengine: gotpl\n",
        "requirements.yaml":
          "dependencies:\n  - name: db\n    version: ~1.0\n    repository: https://charts.example.com\n",
      },
    });

    const { metadata } = await readChartMetadata(chart);

    expect(metadata.apiVersion).toBe("v1");
    expect(metadata.dependencies).toEqual([
      { name: "db", version: "~1.0", repository: "https://charts.example.com" },
    ]);
    expect(chartConfig(metadata).toString()).toBe(
      '{"name":"legacy","version":"0.1.0","apiVersion":"v1","dependencies":[{"name":"db","version":"~1.0","repository":"https://charts.example.com"}]}',
    );
  });

  it("cleans white space and control characters", async () => {
    const chart = helmChart({
      name: "demo",
      version: "1.0.0",
      values: "",
      extraFiles: {
        "Chart.yaml":
          'apiVersion: v2\nname: demo\nversion: 1.0.0\ndescription: "two\\nlines\\u0007"\n',
      },
    });

    const { metadata } = await readChartMetadata(chart);

    expect(metadata.description).toBe("two lines");
  });

  it.each([
    ["a missing version", "apiVersion: v2\nname: demo\n", "version is missing"],
    [
      "an invalid version",
      "apiVersion: v2\nname: demo\nversion: one\n",
      "not a semantic version",
    ],
    [
      "an invalid type",
      "apiVersion: v2\nname: demo\nversion: 1.0.0\ntype: plugin\n",
      "application or library",
    ],
    [
      "an invalid alias",
      "apiVersion: v2\nname: demo\nversion: 1.0.0\ndependencies:\n  - name: db\n    repository: ''\n    alias: my.db\n",
      "alias",
    ],
    ["invalid YAML", "name: [demo\n", "invalid Chart.yaml"],
  ])("rejects %s", async (_case, text, expected) => {
    const chart = helmChart({
      name: "demo",
      version: "1.0.0",
      values: "",
      extraFiles: { "Chart.yaml": text },
    });
    await expect(
      readChartMetadata(chart, "the chart demo.tgz"),
    ).rejects.toThrow(expected);
  });

  it("rejects an archive without Chart.yaml", async () => {
    const chart = helmChart({
      name: "demo",
      version: "1.0.0",
      values: "",
      topFolder: "demo/nested",
    });
    await expect(readChartMetadata(chart)).rejects.toThrow("no Chart.yaml");
  });
});
