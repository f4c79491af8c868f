import { createHash } from "node:crypto";
import { createServer } from "node:http";
import type { AddressInfo } from "node:net";
import { afterEach, describe, expect, it } from "vitest";

import {
  type ChartMuseumUploadOptions,
  chartMuseumUrls,
  uploadToChartMuseum,
} from "../../src/charts/chartmuseum.js";
import { PpaLoadError } from "../../src/errors.js";
import { helmChart } from "../../testdata/generate.js";
import {
  type ChartMuseumOptions,
  type ChartMuseumServer,
  startChartMuseum,
} from "../helpers/chartmuseum-server.js";
import { TestServers } from "../helpers/http-server.js";

const servers: { close(): Promise<void> }[] = [];
const plainServers = new TestServers();

afterEach(async () => {
  await Promise.all(servers.splice(0).map((server) => server.close()));
  await plainServers.closeAll();
});

async function museum(
  options: ChartMuseumOptions = {},
): Promise<ChartMuseumServer> {
  const server = await startChartMuseum(options);
  servers.push(server);
  return server;
}

function demoChart(values = "replicas: 1\n"): Buffer {
  return helmChart({ name: "demo", version: "1.2.3", values });
}

function provenanceFor(chart: Buffer): Buffer {
  const digest = createHash("sha256").update(chart).digest("hex");
  return Buffer.from(
    [
      "-----BEGIN PGP SIGNED MESSAGE-----",
      "Hash: SHA512",
      "",
      "apiVersion: v2",
      "name: demo",
      "version: 1.2.3",
      "",
      "...",
      "files:",
      `  demo-1.2.3.tgz: sha256:${digest}`,
      "-----BEGIN PGP SIGNATURE-----",
      "",
      "wsBcBAEBCgAQBQJkAAAAAAkQAAAAAAAAAAAAAA==",
      "-----END PGP SIGNATURE-----",
      "",
    ].join("\n"),
  );
}

function upload(
  server: { url: string },
  chart: Buffer,
  options: Partial<ChartMuseumUploadOptions> = {},
) {
  return uploadToChartMuseum({
    uri: server.url,
    chart,
    fileName: "demo-1.2.3.tgz",
    env: {},
    ...options,
  });
}

/** Returns the error an upload rejects with. */
async function uploadError(
  server: { url: string },
  chart: Buffer,
  options: Partial<ChartMuseumUploadOptions> = {},
): Promise<PpaLoadError> {
  const error = await upload(server, chart, options).then(
    () => undefined,
    (reason: unknown) => reason,
  );
  expect(error).toBeInstanceOf(PpaLoadError);
  return error as PpaLoadError;
}

async function download(url: string, authorization?: string): Promise<Buffer> {
  const response = await fetch(url, {
    headers: authorization ? { authorization } : {},
  });
  expect(response.status, url).toBe(200);
  return Buffer.from(await response.arrayBuffer());
}

describe("uploadToChartMuseum", () => {
  it("uploads the chart as the raw body", async () => {
    const server = await museum();
    const chart = demoChart();

    const result = await upload(server, chart);

    expect(result.status).toBe("uploaded");
    expect(result.url).toBe(`${server.url}/charts/demo-1.2.3.tgz`);
    expect(server.requests).toHaveLength(1);
    expect(server.requests[0].method).toBe("POST");
    expect(server.requests[0].url).toBe("/api/charts");
    expect(server.requests[0].contentType).toBe("application/octet-stream");
    expect(server.charts.get("demo-1.2.3.tgz")?.content.equals(chart)).toBe(
      true,
    );
    expect((await download(result.url)).equals(chart)).toBe(true);
  });

  it("serves the uploaded chart through the API", async () => {
    const server = await museum();
    const chart = demoChart();
    await upload(server, chart);

    const list = (await (
      await fetch(`${server.url}/api/charts`)
    ).json()) as Record<string, { name: string; version: string }[]>;
    expect(Object.keys(list)).toEqual(["demo"]);
    expect(list.demo.map((entry) => entry.version)).toEqual(["1.2.3"]);

    const version = (await (
      await fetch(`${server.url}/api/charts/demo/1.2.3`)
    ).json()) as { name: string; urls: string[]; digest: string };
    expect(version.name).toBe("demo");
    expect(version.urls).toEqual(["charts/demo-1.2.3.tgz"]);
    expect(version.digest).toBe(
      createHash("sha256").update(chart).digest("hex"),
    );

    const index = await (await fetch(`${server.url}/index.yaml`)).text();
    expect(index).toContain("charts/demo-1.2.3.tgz");

    const deleted = await fetch(`${server.url}/api/charts/demo/1.2.3`, {
      method: "DELETE",
    });
    expect(deleted.status).toBe(200);
    expect(await deleted.json()).toEqual({ deleted: true });
    const gone = await fetch(`${server.url}/api/charts/demo/1.2.3`);
    expect(gone.status).toBe(404);
  });

  it("sends provenance in a multipart form", async () => {
    const server = await museum();
    const chart = demoChart();
    const provenance = provenanceFor(chart);

    const result = await upload(server, chart, { provenance });

    expect(result.status).toBe("uploaded");
    expect(server.requests[0].contentType).toMatch(
      /^multipart\/form-data; boundary=/,
    );
    expect(server.charts.get("demo-1.2.3.tgz")?.content.equals(chart)).toBe(
      true,
    );
    expect(
      server.provenance.get("demo-1.2.3.tgz.prov")?.equals(provenance),
    ).toBe(true);
    expect((await download(result.url)).equals(chart)).toBe(true);
    expect((await download(`${result.url}.prov`)).equals(provenance)).toBe(
      true,
    );
  });

  it("uploads below a context path", async () => {
    const server = await museum({ contextPath: "/museum" });
    const chart = demoChart();

    const result = await upload(server, chart, { uri: `${server.url}/` });

    expect(server.url).toMatch(/\/museum$/);
    expect(result.status).toBe("uploaded");
    expect(server.requests[0].url).toBe("/museum/api/charts");
    expect(result.url).toBe(`${server.url}/charts/demo-1.2.3.tgz`);
    expect((await download(result.url)).equals(chart)).toBe(true);
  });

  it("uploads to a multitenant repository", async () => {
    const server = await museum({ depth: 2 });
    const chart = demoChart();

    const result = await upload(server, chart, { repository: "org1/repoa" });

    expect(result.status).toBe("uploaded");
    expect(server.requests[0].url).toBe("/api/org1/repoa/charts");
    expect(result.url).toBe(`${server.url}/org1/repoa/charts/demo-1.2.3.tgz`);
    expect(server.charts.has("org1/repoa/demo-1.2.3.tgz")).toBe(true);
    expect((await download(result.url)).equals(chart)).toBe(true);
  });

  it("reports a wrong context path", async () => {
    const server = await museum({ contextPath: "/museum" });
    const root = server.url.replace(/\/museum$/, "");

    const error = await uploadError({ url: root }, demoChart());

    expect(error.code).toBe("CHART");
    expect(error.message).toContain("404");
    expect(error.message).toContain(`${root}/api/charts`);
    expect(error.message).toContain("not found");
    expect(error.hint).toContain("--context-path");
  });

  it("sends basic credentials", async () => {
    const server = await museum({
      basicAuth: { user: "uploader", password: "s3cret-pass" },
    });
    const chart = demoChart();
    const authorization = `Basic ${Buffer.from("uploader:s3cret-pass").toString("base64")}`;

    const result = await upload(server, chart, {
      username: "uploader",
      password: "s3cret-pass",
    });

    expect(result.status).toBe("uploaded");
    expect(server.requests[0].authorization).toBe(authorization);
    expect((await download(result.url, authorization)).equals(chart)).toBe(
      true,
    );
  });

  it("rejects a wrong password without printing it", async () => {
    const server = await museum({
      basicAuth: { user: "uploader", password: "s3cret-pass" },
    });

    const error = await uploadError(server, demoChart(), {
      username: "uploader",
      password: "wrong-pass-123",
    });

    expect(error.code).toBe("CHART");
    expect(error.message).toContain("401");
    expect(error.message).toContain("unauthorized");
    expect(error.message).not.toContain("wrong-pass-123");
    expect(error.hint).toContain("user and password");
    expect(error.hint).not.toContain("wrong-pass-123");
    expect(server.charts.size).toBe(0);
  });

  it("asks for missing credentials", async () => {
    const server = await museum({
      basicAuth: { user: "uploader", password: "s3cret-pass" },
    });

    const error = await uploadError(server, demoChart());

    expect(error.message).toContain("401");
    expect(error.hint).toContain("requires credentials");
  });

  it("sends a bearer token", async () => {
    const server = await museum({ bearerToken: "token-abc" });

    const result = await upload(server, demoChart(), { token: "token-abc" });

    expect(result.status).toBe("uploaded");
    expect(server.requests[0].authorization).toBe("Bearer token-abc");
  });

  it("rejects a wrong token without printing it", async () => {
    const server = await museum({ bearerToken: "token-abc" });

    const error = await uploadError(server, demoChart(), {
      token: "token-xyz",
    });

    expect(error.message).toContain("401");
    expect(error.message).not.toContain("token-xyz");
    expect(error.hint).toContain("token");
  });

  it("keeps an existing version", async () => {
    const server = await museum();
    const first = demoChart("replicas: 1\n");
    const second = demoChart("replicas: 2\n");
    await upload(server, first);

    const result = await upload(server, second);

    expect(result.status).toBe("exists");
    expect(result.url).toBe(`${server.url}/charts/demo-1.2.3.tgz`);
    expect(server.requests).toHaveLength(2);
    expect(server.charts.get("demo-1.2.3.tgz")?.content.equals(first)).toBe(
      true,
    );
  });

  it("replaces an existing version with force", async () => {
    const server = await museum();
    const first = demoChart("replicas: 1\n");
    const second = demoChart("replicas: 2\n");
    await upload(server, first);

    const result = await upload(server, second, { force: true });

    expect(result.status).toBe("replaced");
    expect(server.requests.map((request) => request.url)).toEqual([
      "/api/charts",
      "/api/charts",
      "/api/charts?force=true",
    ]);
    expect(server.charts.get("demo-1.2.3.tgz")?.content.equals(second)).toBe(
      true,
    );
    expect((await download(result.url)).equals(second)).toBe(true);
  });

  it("replaces chart and provenance with force", async () => {
    const server = await museum();
    const first = demoChart("replicas: 1\n");
    const second = demoChart("replicas: 2\n");
    await upload(server, first, { provenance: provenanceFor(first) });

    const result = await upload(server, second, {
      provenance: provenanceFor(second),
      force: true,
    });

    expect(result.status).toBe("replaced");
    expect(server.charts.get("demo-1.2.3.tgz")?.content.equals(second)).toBe(
      true,
    );
    expect(
      server.provenance
        .get("demo-1.2.3.tgz.prov")
        ?.equals(provenanceFor(second)),
    ).toBe(true);
  });

  it("reports a server that refuses force", async () => {
    const server = await museum({ disableForceOverwrite: true });
    await upload(server, demoChart("replicas: 1\n"));

    const error = await uploadError(server, demoChart("replicas: 2\n"), {
      force: true,
    });

    expect(error.code).toBe("CHART");
    expect(error.message).toContain("409");
    expect(error.message).toContain("?force=true");
    expect(error.message).toContain("file already exists");
    expect(error.hint).toContain("--disable-force-overwrite");
  });

  it("reports an overwriting server's replacement as uploaded", async () => {
    const server = await museum({ allowOverwrite: true });
    await upload(server, demoChart("replicas: 1\n"));
    const second = demoChart("replicas: 2\n");

    const result = await upload(server, second);

    expect(result.status).toBe("uploaded");
    expect(server.charts.get("demo-1.2.3.tgz")?.content.equals(second)).toBe(
      true,
    );
  });

  it("passes on the server's error message", async () => {
    const server = await museum({
      failUploads: {
        status: 500,
        body: JSON.stringify({ error: "storage backend unavailable" }),
      },
    });

    const error = await uploadError(server, demoChart());

    expect(error.code).toBe("CHART");
    expect(error.message).toContain("500");
    expect(error.message).toContain("storage backend unavailable");
    expect(error.message).toContain("demo-1.2.3.tgz");
    expect(error.message).toContain(`${server.url}/api/charts`);
    expect(error.hint).toContain("log");
  });

  it("passes on a body that is not JSON", async () => {
    const server = await museum({
      failUploads: { status: 502, body: "<html>Bad Gateway</html>" },
    });

    const error = await uploadError(server, demoChart());

    expect(error.message).toContain("502");
    expect(error.message).toContain("<html>Bad Gateway</html>");
  });

  it("explains a size limit", async () => {
    const server = await museum({ maxUploadSize: 100 });

    const error = await uploadError(server, demoChart());

    expect(error.message).toContain("413");
    expect(error.hint).toContain("--max-upload-size");
  });

  it("reports redirects without following", async () => {
    // The target responds with 200, so a followed redirect would look like success.
    const redirect = createServer((request, response) => {
      request.resume();
      if (request.url === "/moved/api/charts") {
        response.writeHead(200).end();
        return;
      }
      response.writeHead(301, { location: "/moved/api/charts" }).end();
    });
    await new Promise<void>((resolve) =>
      redirect.listen(0, "127.0.0.1", resolve),
    );
    servers.push({
      close: () =>
        new Promise<void>((resolve) => redirect.close(() => resolve())),
    });
    const { port } = redirect.address() as AddressInfo;
    const root = `http://127.0.0.1:${port}`;

    const error = await uploadError({ url: root }, demoChart(), {
      username: "uploader",
      password: "s3cret-pass",
    });

    expect(error.message).toContain("301");
    expect(error.message).toContain(`${root}/moved/api/charts`);
    expect(error.hint).toContain("redirects");
  });

  it("reports an unreachable server", async () => {
    const server = await museum();
    const url = server.url;
    await servers.pop()?.close();

    const error = await uploadError({ url }, demoChart());

    expect(error.code).toBe("CHART");
    expect(error.message).toContain("cannot reach ChartMuseum");
    expect(error.hint).toContain("running");
  });

  it("times out on a silent server", async () => {
    // The server reads the upload and never responds.
    const silent = await plainServers.start((request) => request.resume());

    const error = await uploadError(silent, demoChart(), { timeoutMs: 300 });

    expect(error.code).toBe("CHART");
    expect(error.message).toContain("did not answer POST");
    expect(error.message).toContain("within 0.3 s");
    expect(error.hint).toContain("--request-timeout");
  });

  it("rejects a non-chart before sending", async () => {
    const server = await museum();

    const error = await uploadError(server, Buffer.from("not a chart"));

    expect(error.code).toBe("CHART");
    expect(error.message).toContain("demo-1.2.3.tgz");
    expect(error.message).toContain("gzip");
    expect(server.requests).toHaveLength(0);
  });

  it("rejects a token together with a user", async () => {
    const server = await museum();

    const error = await uploadError(server, demoChart(), {
      token: "token-abc",
      username: "uploader",
      password: "s3cret-pass",
    });

    expect(error.code).toBe("USAGE");
    expect(server.requests).toHaveLength(0);
  });
});

describe("chartMuseumUrls", () => {
  it("puts the repository after /api", () => {
    expect(chartMuseumUrls("https://h.example/museum/", "org1/repoa")).toEqual({
      upload: "https://h.example/museum/api/org1/repoa/charts",
      charts: "https://h.example/museum/org1/repoa/charts",
    });
  });

  it("rejects credentials without printing them", () => {
    let error: unknown;
    try {
      chartMuseumUrls("https://user:pa55word@h.example/");
    } catch (caught) {
      error = caught;
    }
    expect(error).toBeInstanceOf(PpaLoadError);
    expect((error as PpaLoadError).code).toBe("USAGE");
    expect((error as PpaLoadError).message).toContain("credentials");
    expect((error as PpaLoadError).message).not.toContain("pa55word");
  });

  it.each([
    ["ftp://h.example/", "http or https"],
    ["https://h.example/?x=1", "query"],
    ["h.example", "invalid ChartMuseum URI"],
  ])("rejects %s", (uri, expected) => {
    expect(() => chartMuseumUrls(uri)).toThrow(expected);
  });

  it("rejects a repository that climbs out", () => {
    expect(() => chartMuseumUrls("https://h.example/", "org/../x")).toThrow(
      '".."',
    );
  });
});
