/**
 * An in-memory server that follows ChartMuseum's HTTP API, for tests where
 * ChartMuseum itself is not installed. It implements the routes of the
 * ChartMuseum README (github.com/helm/chartmuseum): `POST /api/charts` with
 * a raw body or a multipart form (`chart`, `prov`), `POST /api/prov`,
 * `GET|DELETE /api/charts/NAME/VERSION`, `GET /api/charts[/NAME]`,
 * `GET /charts/FILE`, `GET /index.yaml` and `GET /health`, with the status
 * codes and JSON bodies of ChartMuseum's handlers (pkg/chartmuseum/server).
 * Like ChartMuseum, it reads the name and version of an uploaded chart from
 * its Chart.yaml and stores it as `NAME-VERSION.tgz`.
 */
import { createHash } from "node:crypto";
import {
  type IncomingMessage,
  type ServerResponse,
  createServer,
} from "node:http";
import type { AddressInfo } from "node:net";
import yaml from "js-yaml";
import { Parser, type ReadEntry } from "tar";

export interface ChartMuseumOptions {
  /** Protects every route but `/health` with basic authentication. */
  basicAuth?: { user: string; password: string };
  /** Protects every route but `/health` with this bearer token. */
  bearerToken?: string;
  /** Root of all routes, like `--context-path`, e.g. `/museum`. */
  contextPath?: string;
  /** Levels of repositories before each route, like `--depth`. Default 0. */
  depth?: number;
  /** Replaces existing chart versions without `?force`, like `--allow-overwrite`. */
  allowOverwrite?: boolean;
  /** Rejects replacing versions even with `?force`, like `--disable-force-overwrite`. */
  disableForceOverwrite?: boolean;
  /** Largest request body in bytes, like `--max-upload-size`; unlimited by default. */
  maxUploadSize?: number;
  /** Status and body of the response to every chart upload, to test failures. */
  failUploads?: { status: number; body: string };
}

export interface StoredChart {
  /** Repository of a multitenant server; empty at depth 0. */
  repository: string;
  name: string;
  version: string;
  /** `NAME-VERSION.tgz`, as ChartMuseum names the stored file. */
  fileName: string;
  content: Buffer;
  /** Chart.yaml as parsed YAML. */
  metadata: Record<string, unknown>;
  created: Date;
}

export interface ReceivedRequest {
  method: string;
  /** Path and query as received. */
  url: string;
  contentType?: string;
  authorization?: string;
}

export interface ChartMuseumServer {
  /** Root URL, including the context path. */
  url: string;
  /** Stored charts by storage path: `[REPOSITORY/]NAME-VERSION.tgz`. */
  charts: Map<string, StoredChart>;
  /** Stored provenance files by storage path: `[REPOSITORY/]NAME-VERSION.tgz.prov`. */
  provenance: Map<string, Buffer>;
  /** Every request, in order. */
  requests: ReceivedRequest[];
  close(): Promise<void>;
}

class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

/** Starts the server on a free port of 127.0.0.1. */
export async function startChartMuseum(
  options: ChartMuseumOptions = {},
): Promise<ChartMuseumServer> {
  const charts = new Map<string, StoredChart>();
  const provenance = new Map<string, Buffer>();
  const requests: ReceivedRequest[] = [];
  const contextPath = (options.contextPath ?? "").replace(/\/+$/, "");

  const server = createServer((request, response) => {
    requests.push({
      method: request.method ?? "",
      url: request.url ?? "",
      contentType: request.headers["content-type"],
      authorization: request.headers.authorization,
    });
    handle(request, response).catch((error: unknown) => {
      if (error instanceof HttpError) {
        sendJson(response, error.status, { error: error.message });
      } else {
        sendJson(response, 500, { error: String(error) });
      }
    });
  });

  async function handle(
    request: IncomingMessage,
    response: ServerResponse,
  ): Promise<void> {
    const url = new URL(request.url ?? "/", "http://chartmuseum.test");
    const force = url.searchParams.has("force");
    let path = url.pathname;
    if (contextPath) {
      if (path !== contextPath && !path.startsWith(`${contextPath}/`)) {
        throw new HttpError(404, "not found");
      }
      path = path.slice(contextPath.length) || "/";
    }
    const segments = path
      .split("/")
      .filter(Boolean)
      .map((segment) => decodeURIComponent(segment));
    const method = request.method ?? "GET";

    if (method === "GET" && path === "/health") {
      sendJson(response, 200, { healthy: true });
      return;
    }
    if (!authorized(request, response)) return;

    const body = await readBody(request);
    if (
      options.maxUploadSize !== undefined &&
      body.length > options.maxUploadSize
    ) {
      throw new HttpError(413, "request body too large");
    }

    const depth = options.depth ?? 0;
    const isApi = segments[0] === "api";
    const routeStart = isApi ? 1 : 0;
    const repository = segments.slice(routeStart, routeStart + depth).join("/");
    if (segments.length < routeStart + depth) {
      throw new HttpError(404, "not found");
    }
    const route = segments.slice(routeStart + depth);

    if (!isApi) {
      if (method === "GET" && route.length === 1 && route[0] === "index.yaml") {
        response.writeHead(200, { "content-type": "application/x-yaml" });
        response.end(indexYaml(repository));
        return;
      }
      if (method === "GET" && route.length === 2 && route[0] === "charts") {
        sendFile(response, repository, route[1]);
        return;
      }
      throw new HttpError(404, "not found");
    }

    if (route[0] === "prov" && route.length === 1 && method === "POST") {
      let fileName: string;
      try {
        fileName = provenanceFileName(body);
      } catch (error) {
        // ChartMuseum's raw routes respond with 500 to content they cannot read.
        throw new HttpError(500, (error as Error).message);
      }
      const key = storagePath(repository, fileName);
      if (provenance.has(key) && !overwriteAllowed(force)) {
        throw new HttpError(409, "file already exists");
      }
      provenance.set(key, body);
      sendJson(response, 201, { saved: true });
      return;
    }
    if (route[0] !== "charts") throw new HttpError(404, "not found");

    if (route.length === 1 && method === "POST") {
      if (options.failUploads) {
        response.writeHead(options.failUploads.status, {
          "content-type": "application/json; charset=utf-8",
        });
        response.end(options.failUploads.body);
        return;
      }
      const contentType = request.headers["content-type"] ?? "";
      if (contentType.split(";")[0].trim() === "multipart/form-data") {
        await uploadForm(repository, contentType, body, force);
      } else {
        await uploadRaw(repository, body, force);
      }
      sendJson(response, 201, { saved: true });
      return;
    }
    if (route.length === 1 && method === "GET") {
      sendJson(response, 200, entries(repository));
      return;
    }
    if (route.length === 2 && method === "GET") {
      const versions = entries(repository)[route[1]];
      if (!versions) throw new HttpError(404, "chart not found");
      sendJson(response, 200, versions);
      return;
    }
    if (route.length === 3 && method === "GET") {
      sendJson(response, 200, chartVersion(repository, route[1], route[2]));
      return;
    }
    if (route.length === 3 && method === "DELETE") {
      const fileName = `${route[1]}-${route[2]}.tgz`;
      const key = storagePath(repository, fileName);
      if (!charts.delete(key)) {
        throw new HttpError(404, `${key} not found`);
      }
      provenance.delete(`${key}.prov`);
      sendJson(response, 200, { deleted: true });
      return;
    }
    throw new HttpError(404, "not found");
  }

  function authorized(
    request: IncomingMessage,
    response: ServerResponse,
  ): boolean {
    const header = request.headers.authorization;
    let challenge: string | undefined;
    if (options.basicAuth) {
      const { user, password } = options.basicAuth;
      const expected = `Basic ${Buffer.from(`${user}:${password}`).toString("base64")}`;
      if (header !== expected) challenge = 'Basic realm="ChartMuseum"';
    } else if (options.bearerToken !== undefined) {
      if (header !== `Bearer ${options.bearerToken}`) {
        challenge = 'Bearer realm="ChartMuseum",service="chartmuseum"';
      }
    }
    if (challenge === undefined) return true;
    response.setHeader("www-authenticate", challenge);
    sendJson(response, 401, { error: "unauthorized" });
    request.resume();
    return false;
  }

  function overwriteAllowed(force: boolean): boolean {
    return (
      options.allowOverwrite === true ||
      (options.disableForceOverwrite !== true && force)
    );
  }

  /** Stores a raw chart body. ChartMuseum responds with 500 when it is not a chart. */
  async function uploadRaw(
    repository: string,
    body: Buffer,
    force: boolean,
  ): Promise<void> {
    let chart: ParsedChart;
    try {
      chart = await parseChart(body);
    } catch (error) {
      throw new HttpError(500, (error as Error).message);
    }
    const key = storagePath(repository, chart.fileName);
    if (charts.has(key) && !overwriteAllowed(force)) {
      throw new HttpError(409, "file already exists");
    }
    store(repository, chart, body);
  }

  async function uploadForm(
    repository: string,
    contentType: string,
    body: Buffer,
    force: boolean,
  ): Promise<void> {
    const form = await new Request("http://chartmuseum.test/", {
      method: "POST",
      headers: { "content-type": contentType },
      body,
    }).formData();

    const chartFile = form.get("chart");
    const provFile = form.get("prov");
    let chart: { parsed: ParsedChart; content: Buffer } | undefined;
    let prov: { fileName: string; content: Buffer } | undefined;
    let conflict = false;

    if (chartFile instanceof File) {
      const content = Buffer.from(await chartFile.arrayBuffer());
      try {
        chart = { parsed: await parseChart(content), content };
      } catch (error) {
        throw new HttpError(400, (error as Error).message);
      }
      conflict ||= charts.has(storagePath(repository, chart.parsed.fileName));
    }

    if (provFile instanceof File) {
      const content = Buffer.from(await provFile.arrayBuffer());
      try {
        prov = { fileName: provenanceFileName(content), content };
      } catch (error) {
        throw new HttpError(400, (error as Error).message);
      }
      conflict ||= provenance.has(storagePath(repository, prov.fileName));
    }

    if (!chart && !prov) {
      throw new HttpError(
        400,
        "no package or provenance file found in form fields chart and prov",
      );
    }
    if (conflict && !overwriteAllowed(force)) {
      throw new HttpError(409, "chart already exists");
    }

    if (chart) store(repository, chart.parsed, chart.content);
    if (prov) {
      provenance.set(storagePath(repository, prov.fileName), prov.content);
    }
  }

  function store(repository: string, chart: ParsedChart, content: Buffer) {
    charts.set(storagePath(repository, chart.fileName), {
      repository,
      name: chart.name,
      version: chart.version,
      fileName: chart.fileName,
      content,
      metadata: chart.metadata,
      created: new Date(),
    });
  }

  function sendFile(
    response: ServerResponse,
    repository: string,
    fileName: string,
  ): void {
    const key = storagePath(repository, fileName);
    const content = fileName.endsWith(".prov")
      ? provenance.get(key)
      : charts.get(key)?.content;
    if (!content) throw new HttpError(404, "object not found");
    response.writeHead(200, {
      "content-type": fileName.endsWith(".prov")
        ? "application/pgp-signature"
        : "application/x-tar",
      "content-length": content.length,
    });
    response.end(content);
  }

  function versionEntry(chart: StoredChart): Record<string, unknown> {
    return {
      ...chart.metadata,
      name: chart.name,
      version: chart.version,
      urls: [`charts/${chart.fileName}`],
      created: chart.created.toISOString(),
      digest: createHash("sha256").update(chart.content).digest("hex"),
    };
  }

  /** Chart versions of a repository by chart name, newest version first. */
  function entries(repository: string): Record<string, unknown[]> {
    const stored = [...charts.values()]
      .filter((chart) => chart.repository === repository)
      .sort(
        (a, b) =>
          a.name.localeCompare(b.name) ||
          b.version.localeCompare(a.version, "en", { numeric: true }),
      );
    const result: Record<string, unknown[]> = {};
    for (const chart of stored) {
      (result[chart.name] ??= []).push(versionEntry(chart));
    }
    return result;
  }

  function chartVersion(
    repository: string,
    name: string,
    version: string,
  ): Record<string, unknown> {
    const versions = entries(repository)[name] ?? [];
    const found =
      version === "latest"
        ? versions[0]
        : versions.find(
            (entry) => (entry as { version: string }).version === version,
          );
    if (!found) {
      throw new HttpError(404, `no chart version found for ${name}-${version}`);
    }
    return found as Record<string, unknown>;
  }

  function indexYaml(repository: string): string {
    return yaml.dump({
      apiVersion: "v1",
      entries: entries(repository),
      generated: new Date().toISOString(),
    });
  }

  await new Promise<void>((resolve, reject) => {
    server.once("error", reject);
    server.listen(0, "127.0.0.1", () => resolve());
  });
  const { port } = server.address() as AddressInfo;
  return {
    url: `http://127.0.0.1:${port}${contextPath}`,
    charts,
    provenance,
    requests,
    close: () =>
      new Promise<void>((resolve, reject) => {
        server.close((error) => (error ? reject(error) : resolve()));
        server.closeAllConnections();
      }),
  };
}

function storagePath(repository: string, fileName: string): string {
  return repository ? `${repository}/${fileName}` : fileName;
}

function sendJson(
  response: ServerResponse,
  status: number,
  body: unknown,
): void {
  response.writeHead(status, {
    "content-type": "application/json; charset=utf-8",
  });
  response.end(JSON.stringify(body));
}

async function readBody(request: IncomingMessage): Promise<Buffer> {
  const chunks: Buffer[] = [];
  for await (const chunk of request) chunks.push(chunk as Buffer);
  return Buffer.concat(chunks);
}

interface ParsedChart {
  name: string;
  version: string;
  fileName: string;
  metadata: Record<string, unknown>;
}

/**
 * Reads name and version from `TOP/Chart.yaml` of a gzip tar, the checks
 * that decide whether ChartMuseum stores an upload.
 */
async function parseChart(content: Buffer): Promise<ParsedChart> {
  if (content[0] !== 0x1f || content[1] !== 0x8b) {
    throw new Error("gzip: invalid header");
  }
  let chartYaml: Buffer | undefined;
  await new Promise<void>((resolve, reject) => {
    const parser = new Parser({
      strict: true,
      onReadEntry: (entry: ReadEntry) => {
        const parts = entry.path.split("/");
        if (
          entry.type === "File" &&
          parts.length === 2 &&
          parts[1] === "Chart.yaml"
        ) {
          const chunks: Buffer[] = [];
          entry.on("data", (chunk: Buffer) => chunks.push(chunk));
          entry.on("end", () => (chartYaml = Buffer.concat(chunks)));
        } else {
          entry.resume();
        }
      },
    });
    parser.on("error", reject);
    parser.on("end", () => resolve());
    parser.end(content);
  });
  if (!chartYaml) throw new Error("Chart.yaml file is missing");
  const metadata = yaml.load(chartYaml.toString("utf8"), {
    schema: yaml.CORE_SCHEMA,
  }) as Record<string, unknown> | null;
  const name = metadata?.name;
  const version = metadata?.version;
  if (typeof name !== "string" || name === "") {
    throw new Error("validation: chart.metadata.name is required");
  }
  if (typeof version !== "string" && typeof version !== "number") {
    throw new Error("validation: chart.metadata.version is required");
  }
  return {
    name,
    version: String(version),
    fileName: `${name}-${version}.tgz`,
    metadata: metadata ?? {},
  };
}

/**
 * Returns `NAME-VERSION.tgz.prov` from a provenance file, as ChartMuseum
 * reads it: a PGP signed message with `name:` and `version:` lines.
 */
function provenanceFileName(content: Buffer): string {
  const text = content.toString("utf8");
  const name = /name:[ *](.+)/.exec(text)?.[1];
  const version = /version:[ *](.+)/.exec(text)?.[1];
  if (
    !text.startsWith("-----BEGIN PGP SIGNED MESSAGE-----") ||
    !name ||
    !version
  ) {
    throw new Error("invalid provenance file");
  }
  return `${name}-${version}.tgz.prov`;
}
