import { randomBytes } from "node:crypto";
import {
  type HttpRequestInit,
  type HttpResponse,
  httpRequest,
} from "../registry/http.js";

import { PpaLoadError, errorMessage } from "../errors.js";
import { formatSeconds } from "../text.js";
import { redactUrl } from "../registry/errors.js";
import { Transport } from "../registry/transport.js";
import { readChartMetadata } from "./oci-chart.js";

export interface ChartMuseumUploadOptions {
  /**
   * Root URL of the ChartMuseum server, including the context path it runs
   * under (`--context-path`), e.g. `https://charts.example.com/museum`.
   */
  uri: string;
  /**
   * Repository below the root on a multitenant server (`--depth`), e.g.
   * `org1/repoa`. ChartMuseum puts it after `/api` in upload URLs.
   */
  repository?: string;
  /** The chart archive (.tgz). */
  chart: Buffer;
  /** File name of the chart, used for the upload and in messages. */
  fileName: string;
  /** The provenance file (.prov), uploaded together with the chart. */
  provenance?: Buffer;
  /** User for basic authentication. */
  username?: string;
  password?: string;
  /** Token for bearer authentication, in place of a user and password. */
  token?: string;
  /** Replace a chart version that the server has, with `?force`. */
  force?: boolean;
  /** PEM certificates of a private CA (`--ca-cert`), trusted in addition to Node's default CAs. */
  caCert?: string | Buffer;
  /**
   * Environment that `HTTPS_PROXY`, `HTTP_PROXY` and `NO_PROXY` are read
   * from; `process.env` by default. src/registry/transport.ts gives the rules.
   */
  env?: NodeJS.ProcessEnv;
  /** Time each request may take in all, body included. Default 240000. */
  timeoutMs?: number;
  signal?: AbortSignal;
}

export interface ChartMuseumUploadResult {
  /**
   * `uploaded` when the server stored the chart, `exists` when it already
   * had this chart version and `force` was not set, and `replaced` when it
   * had the version and `force` replaced it. A server that runs with
   * `--allow-overwrite` replaces versions without reporting a conflict, so
   * the result is then `uploaded`.
   */
  status: "uploaded" | "exists" | "replaced";
  /** Download URL of the stored chart, without credentials. */
  url: string;
}

/** The URLs of one ChartMuseum repository. */
export interface ChartMuseumUrls {
  /** `POST` target for charts: `ROOT/api[/REPOSITORY]/charts`. */
  upload: string;
  /** Folder of the chart files: `ROOT[/REPOSITORY]/charts`. */
  charts: string;
}

type Authentication = "none" | "basic" | "token";

/**
 * Returns the upload and download URLs of a ChartMuseum repository. Throws
 * a `USAGE` error when the URI is not an http or https URL, carries
 * credentials, a query or a fragment, or the repository path is invalid.
 */
export function chartMuseumUrls(
  uri: string,
  repository?: string,
): ChartMuseumUrls {
  const example = "https://charts.example.com or https://host/museum";
  let url: URL;
  try {
    url = new URL(uri);
  } catch {
    // An unparsable URI may still contain a password, so it is left out.
    throw new PpaLoadError(
      "USAGE",
      uri.includes("@")
        ? "invalid ChartMuseum URI: it is not a URL with a scheme such as http://"
        : `invalid ChartMuseum URI "${uri}": it is not a URL with a scheme such as http://`,
      { hint: `give the server's root URL, e.g. ${example}` },
    );
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    throw new PpaLoadError(
      "USAGE",
      `invalid ChartMuseum URI "${redactUrl(uri)}": the scheme must be http or https`,
      { hint: `give the server's root URL, e.g. ${example}` },
    );
  }
  if (url.username || url.password) {
    throw new PpaLoadError(
      "USAGE",
      `the ChartMuseum URI ${redactUrl(uri)} contains credentials`,
      {
        hint: "remove them from the URI and give the user and password, or a token, as options",
      },
    );
  }
  if (url.search || url.hash) {
    throw new PpaLoadError(
      "USAGE",
      `invalid ChartMuseum URI "${redactUrl(uri)}": it has a query or fragment`,
      { hint: `give the server's root URL, e.g. ${example}` },
    );
  }
  const root = `${url.origin}${url.pathname.replace(/\/+$/, "")}`;
  const tenant = repository === undefined ? "" : repositorySegments(repository);
  return {
    upload: `${root}/api${tenant}/charts`,
    charts: `${root}${tenant}/charts`,
  };
}

/** Returns `/SEGMENT/...` for a multitenant repository path, each segment encoded. */
function repositorySegments(repository: string): string {
  const segments = repository.replace(/^\/+|\/+$/g, "").split("/");
  const invalid = segments.find(
    (segment) => segment === "" || segment === "." || segment === "..",
  );
  if (invalid !== undefined) {
    throw new PpaLoadError(
      "USAGE",
      `invalid ChartMuseum repository "${repository}": it has an empty, "." or ".." segment`,
      { hint: "give the repository as ORG/REPO, e.g. org1/repoa" },
    );
  }
  return segments.map((segment) => `/${encodeURIComponent(segment)}`).join("");
}

function authentication(options: ChartMuseumUploadOptions): Authentication {
  if (options.token !== undefined && options.username !== undefined) {
    throw new PpaLoadError(
      "USAGE",
      "both a token and a user were given for ChartMuseum",
      { hint: "give either a token or a user and password" },
    );
  }
  if (options.token !== undefined) return "token";
  if (options.username !== undefined) return "basic";
  return "none";
}

function authorizationHeader(
  options: ChartMuseumUploadOptions,
): string | undefined {
  if (options.token !== undefined) return `Bearer ${options.token}`;
  if (options.username === undefined) return undefined;
  const pair = `${options.username}:${options.password ?? ""}`;
  return `Basic ${Buffer.from(pair).toString("base64")}`;
}

/**
 * Uploads a chart to ChartMuseum with `POST ROOT/api/charts`: the chart
 * bytes as the body, or a multipart form with the fields `chart` and `prov`
 * when there is a provenance file. ChartMuseum names the stored file
 * `NAME-VERSION.tgz` from Chart.yaml, whatever `fileName` is.
 *
 * When the server already has the chart version (409), the result is
 * `exists`, unless `force` is set: then the chart is sent again with
 * `?force`, which ChartMuseum accepts unless it runs with
 * `--disable-force-overwrite`. A file that is not a chart throws a `CHART`
 * error before anything is sent, and so does any other failure, with the
 * server's message. Credentials never appear in messages or URLs.
 */
export async function uploadToChartMuseum(
  options: ChartMuseumUploadOptions,
): Promise<ChartMuseumUploadResult> {
  const urls = chartMuseumUrls(options.uri, options.repository);
  const auth = authentication(options);
  const label = `the chart ${options.fileName}`;
  const { metadata } = await readChartMetadata(options.chart, label);
  const storedName = `${metadata.name}-${metadata.version}.tgz`;
  const url = `${urls.charts}/${encodeURIComponent(storedName)}`;

  const transport = new Transport({ caCert: options.caCert, env: options.env });
  try {
    const first = await postChart(urls.upload, options, transport);
    if (first.ok) {
      await discard(first);
      return { status: "uploaded", url };
    }
    if (first.status === 409) {
      await discard(first);
      if (!options.force) return { status: "exists", url };
      const forcedUrl = `${urls.upload}?force=true`;
      const second = await postChart(forcedUrl, options, transport);
      if (second.ok) {
        await discard(second);
        return { status: "replaced", url };
      }
      throw await uploadFailure(second, forcedUrl, label, auth, metadata);
    }
    throw await uploadFailure(first, urls.upload, label, auth, metadata);
  } finally {
    transport.destroy();
  }
}

/**
 * Checks, before anything is published, that the server serves its API
 * and accepts the credentials, with `GET ROOT/api/charts`. Throws a `CHART`
 * error naming the options to fix.
 */
export async function checkChartMuseum(
  options: Omit<ChartMuseumUploadOptions, "chart" | "fileName">,
): Promise<void> {
  const urls = chartMuseumUrls(options.uri, options.repository);
  const target = new URL(urls.upload);
  const transport = new Transport({ caCert: options.caCert, env: options.env });
  try {
    const headers: Record<string, string> = { "user-agent": "ppa-load" };
    const authorization = authorizationHeader({
      ...options,
      chart: Buffer.alloc(0),
      fileName: "",
    });
    if (authorization) headers.authorization = authorization;
    let response: HttpResponse;
    const timeout = requestTimeout(options);
    try {
      response = await httpRequest(urls.upload, {
        headers,
        agent: (requested: URL) => transport.agentFor(requested),
        signal: timeout.signal,
      });
    } catch (error) {
      if (timeout.expired()) throw timedOut(target, "GET", timeout.ms);
      throw unreachable(target, transport, error, "GET");
    }
    if (response.ok) {
      await discard(response);
      return;
    }
    const message = await serverMessage(response);
    const credentialHint =
      "give --chartmuseum-user with the password in CHARTMUSEUM_PASSWORD (or --chartmuseum-password-stdin), or a token with --chartmuseum-token";
    throw new PpaLoadError(
      "CHART",
      `ChartMuseum at ${redactUrl(options.uri)} refused GET ${redactUrl(urls.upload)}: ${response.status}, ${message}`,
      {
        hint:
          response.status === 401 || response.status === 403
            ? credentialHint
            : response.status === 404
              ? "check --chartmuseum-uri: give the server's root URL, with its context path if it has one"
              : "check that the server is ChartMuseum and that it is running",
      },
    );
  } finally {
    transport.destroy();
  }
}

async function postChart(
  url: string,
  options: ChartMuseumUploadOptions,
  transport: Transport,
): Promise<HttpResponse> {
  const target = new URL(url);
  // Resolving the agent first reports a bad proxy variable as it is.
  transport.agentFor(target);
  const headers: Record<string, string> = { "user-agent": "ppa-load" };
  const authorization = authorizationHeader(options);
  if (authorization) headers.authorization = authorization;

  let body: Buffer;
  if (options.provenance) {
    const form = multipartForm([
      { field: "chart", fileName: options.fileName, data: options.chart },
      {
        field: "prov",
        fileName: `${options.fileName}.prov`,
        data: options.provenance,
      },
    ]);
    body = form.body;
    headers["content-type"] = form.contentType;
  } else {
    body = options.chart;
    headers["content-type"] = "application/octet-stream";
  }

  const timeout = requestTimeout(options);
  const init: HttpRequestInit = {
    method: "POST",
    headers,
    body,
    // httpRequest returns a redirect unfollowed: following it would turn the
    // POST into a GET or send the credentials to another host, so it is
    // reported.
    agent: (requested: URL) => transport.agentFor(requested),
    signal: timeout.signal,
  };
  try {
    return await httpRequest(url, init);
  } catch (error) {
    if (options.signal?.aborted) {
      throw new PpaLoadError(
        "ABORTED",
        `the upload to ${target.host} was cancelled`,
      );
    }
    if (timeout.expired()) throw timedOut(target, "POST", timeout.ms);
    throw unreachable(target, transport, error);
  }
}

interface FormFile {
  field: string;
  fileName: string;
  data: Buffer;
}

/** Builds a `multipart/form-data` body (RFC 7578) of file fields. */
function multipartForm(files: FormFile[]): {
  body: Buffer;
  contentType: string;
} {
  let boundary: string;
  do {
    boundary = `ppa-load-${randomBytes(16).toString("hex")}`;
  } while (files.some((file) => file.data.includes(boundary)));
  const parts: Buffer[] = [];
  for (const file of files) {
    const fileName = file.fileName.replace(/[\\"]/g, (c) => `\\${c}`);
    parts.push(
      Buffer.from(
        `--${boundary}\r\n` +
          `Content-Disposition: form-data; name="${file.field}"; filename="${fileName}"\r\n` +
          "Content-Type: application/octet-stream\r\n\r\n",
      ),
      file.data,
      Buffer.from("\r\n"),
    );
  }
  parts.push(Buffer.from(`--${boundary}--\r\n`));
  return {
    body: Buffer.concat(parts),
    contentType: `multipart/form-data; boundary=${boundary}`,
  };
}

async function discard(response: HttpResponse): Promise<void> {
  await response.discard();
}

/** Returns the `error` field of ChartMuseum's JSON error body, or the start of any other body. */
async function serverMessage(response: HttpResponse): Promise<string> {
  const text = await response.textStart();
  try {
    const parsed = JSON.parse(text) as { error?: unknown };
    if (typeof parsed.error === "string" && parsed.error) return parsed.error;
  } catch {
    // Not JSON, so a proxy or another server responded.
  }
  return text.replace(/\s+/g, " ").trim().slice(0, 200) || "no error body";
}

async function uploadFailure(
  response: HttpResponse,
  url: string,
  label: string,
  auth: Authentication,
  chart: { name: string; version: string },
): Promise<PpaLoadError> {
  const status = `${response.status}${response.statusText ? ` ${response.statusText}` : ""}`;
  const location = response.headers.get("location");
  const message =
    response.status >= 300 && response.status < 400
      ? `redirect to ${location ? redirectTarget(location, url) : "no location"}`
      : await serverMessage(response);
  return new PpaLoadError(
    "CHART",
    `uploading ${label} to ${redactUrl(url)} failed: ${status}, ${message}`,
    { hint: failureHint(response, url, auth, chart) },
  );
}

/** Returns a redirect's target for a message, also when it is not a valid URL. */
function redirectTarget(location: string, url: string): string {
  try {
    return redactUrl(new URL(location, url).href);
  } catch {
    return `${JSON.stringify(location.slice(0, 200))}, which is not a valid URL`;
  }
}

function failureHint(
  response: HttpResponse,
  url: string,
  auth: Authentication,
  chart: { name: string; version: string },
): string | undefined {
  const status = response.status;
  if (status >= 300 && status < 400) {
    return "give the URL that the server redirects to as the ChartMuseum URI";
  }
  switch (status) {
    case 400:
      return "the server rejected the chart or provenance file as invalid; check them with helm lint and helm verify";
    case 401:
      if (auth === "token") {
        return "the server rejected the token; check that it is valid, has not expired and allows push";
      }
      if (auth === "basic") {
        return "the server rejected the user and password; check them";
      }
      return "the server requires credentials; give a user and password, or a token";
    case 403:
      return "the server accepted the credentials, but the account may not upload to this repository; check its permissions";
    case 404:
    case 405:
      return `no ChartMuseum API answers at ${redactUrl(url)}; check the URI and its context path (ChartMuseum's --context-path), the repository of a multitenant server (--depth), and that the server does not run with --disable-api`;
    case 409:
      return `the server does not replace chart versions even with ?force, as ChartMuseum does with --disable-force-overwrite; delete ${chart.name} ${chart.version} on the server first, or publish a new chart version`;
    case 413:
      return "the upload is larger than the server or a proxy in front of it accepts (ChartMuseum's --max-upload-size is 20 MiB by default); raise that limit";
    case 507:
      return "the repository has reached the server's limit on stored files (ChartMuseum's --max-storage-objects); delete old chart versions or raise the limit";
  }
  if (status >= 500) {
    return "the server failed to store the chart; check its log, then run the upload again";
  }
  return undefined;
}

function unreachable(
  target: URL,
  transport: Transport,
  error: unknown,
  method = "POST",
): PpaLoadError {
  const code = (error as { code?: unknown }).code;
  const certificateProblem =
    (typeof code === "string" && /CERT|SELF_SIGNED|ALTNAME/.test(code)) ||
    /certificate/i.test(errorMessage(error));
  const proxy = transport.proxyFor(target);
  let hint: string;
  if (certificateProblem) {
    hint = `if a private CA signed the certificate of ${target.host}, give its PEM file with --ca-cert`;
  } else if (proxy) {
    hint = `the request went through the proxy ${redactUrl(proxy.href)}; check that the proxy is running and lets ${target.host} through, or add ${target.hostname} to NO_PROXY`;
  } else {
    hint = "check the ChartMuseum URI and that the server is running";
  }
  return new PpaLoadError(
    "CHART",
    `cannot reach ChartMuseum at ${target.host} (${method} ${redactUrl(target.href)}): ${errorMessage(error)}`,
    { cause: error, hint },
  );
}

/**
 * Time a ChartMuseum request may take in all, body included, when the
 * caller sets none. Charts are small, so this is the limit that registry
 * responses other than blobs get by default: twice the 120 s idle timeout.
 */
const defaultTimeoutMs = 240_000;

/**
 * Returns the time limit of a ChartMuseum request for a registry request
 * timeout (`--request-timeout`, in ms): twice it, as for the registry's own
 * responses that are not blobs.
 */
export function chartMuseumTimeout(
  requestTimeoutMs: number | undefined,
): number | undefined {
  return requestTimeoutMs === undefined ? undefined : 2 * requestTimeoutMs;
}

/** Combines the caller's signal with the time limit of one request. */
function requestTimeout(options: {
  timeoutMs?: number;
  signal?: AbortSignal;
}): { signal: AbortSignal; ms: number; expired: () => boolean } {
  const ms = options.timeoutMs ?? defaultTimeoutMs;
  const timeout = AbortSignal.timeout(ms);
  return {
    signal: options.signal
      ? AbortSignal.any([options.signal, timeout])
      : timeout,
    ms,
    expired: () => timeout.aborted,
  };
}

function timedOut(target: URL, method: string, ms: number): PpaLoadError {
  return new PpaLoadError(
    "CHART",
    `ChartMuseum at ${target.host} did not answer ${method} ${redactUrl(target.href)} within ${formatSeconds(ms)}`,
    {
      hint: "check that the server is running and reachable; the limit is twice --request-timeout",
    },
  );
}
