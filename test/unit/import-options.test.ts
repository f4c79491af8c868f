import { mkdir, mkdtemp, readdir, rm, writeFile } from "node:fs/promises";
import { tmpdir } from "node:os";
import { join } from "node:path";
import { describe, expect, it } from "vitest";

import { type PpaLoadError, importArchive } from "../../src/index.js";
import {
  ibmCloudNamespaceProblem,
  isIbmCloudRegistry,
} from "../../src/registry/ibm-cloud.js";

describe("isIbmCloudRegistry", () => {
  it.each([
    "icr.io",
    "us.icr.io",
    "private.de.icr.io",
    "registry.ng.bluemix.net",
  ])("recognises %s", (host) => {
    expect(isIbmCloudRegistry(host)).toBe(true);
  });

  it.each(["quay.io", "myicr.io", "127.0.0.1:5000", "icr.io.example.com"])(
    "leaves %s alone",
    (host) => {
      expect(isIbmCloudRegistry(host)).toBe(false);
    },
  );
});

describe("ibmCloudNamespaceProblem", () => {
  it.each(["team", "team_1", "0team", "a".repeat(30), "team/product/sub"])(
    "accepts %s",
    (namespace) => {
      expect(ibmCloudNamespaceProblem(namespace)).toBeUndefined();
    },
  );

  it.each([
    ["abc", /4 to 30 characters/],
    ["a".repeat(31), /4 to 30 characters/],
    ["Team", /lowercase letters, digits and underscores/],
    ["my-team", /lowercase letters, digits and underscores/],
    ["_team", /start with a letter or digit/],
  ])("rejects %s", (namespace, problem) => {
    expect(ibmCloudNamespaceProblem(namespace)).toMatch(problem);
  });
});

describe("importArchive with an IBM Cloud registry", () => {
  it("rejects a bad namespace before anything else", async () => {
    const error = await importArchive({
      archive: "/nonexistent/archive.tgz",
      registry: "us.icr.io",
      namespace: "my-team",
    }).catch((caught: unknown) => caught);

    expect(error).toMatchObject({ code: "USAGE" });
    expect((error as Error).message).toMatch(
      /invalid namespace "my-team" for us\.icr\.io: .*ibmcloud cr namespace-add/,
    );
  });
});

describe("importArchive option checks", () => {
  it("rejects a ChartMuseum token with a user", async () => {
    const error = await importArchive({
      archive: "/nonexistent/archive.tgz",
      namespace: "team",
      chartMuseum: {
        uri: "http://127.0.0.1:1",
        token: "token-abc",
        username: "uploader",
      },
    }).catch((caught: unknown) => caught);

    expect(error).toMatchObject({ code: "USAGE" });
    expect((error as Error).message).toMatch(
      /token .* or a user and password, not both/,
    );
    expect((error as Error).message).not.toContain("token-abc");
  });

  it("rejects at once with an aborted signal", async () => {
    const controller = new AbortController();
    controller.abort();

    const error = await importArchive({
      archive: "/nonexistent/archive.tgz",
      namespace: "team",
      signal: controller.signal,
    }).catch((caught: unknown) => caught);

    expect(error).toMatchObject({ code: "ABORTED" });
  });

  it("rejects a CA certificate path given as caCert", async () => {
    const error = await importArchive({
      archive: "/nonexistent/archive.tgz",
      namespace: "team",
      registry: "registry.example.com",
      caCert: "/etc/ssl/private-ca.pem",
    }).catch((caught: unknown) => caught);

    expect(error).toMatchObject({ code: "USAGE" });
    expect((error as Error).message).toContain("caCert contains no PEM");
    expect((error as Error).message).toContain("looks like a file path");
  });

  it("rejects a caCert whose certificate does not parse", async () => {
    const error = await importArchive({
      archive: "/nonexistent/archive.tgz",
      namespace: "team",
      registry: "registry.example.com",
      caCert:
        "-----BEGIN CERTIFICATE-----\nbm90IGEgY2VydGlmaWNhdGU=\n-----END CERTIFICATE-----\n",
    }).catch((caught: unknown) => caught);

    expect(error).toMatchObject({ code: "USAGE" });
    expect((error as Error).message).toContain(
      "caCert contains a certificate that does not parse (number 1 of 1",
    );
  });

  it("rejects a missing temporary folder before reading", async () => {
    const folder = await mkdtemp(join(tmpdir(), "ppa-load-options-"));
    try {
      const error = await importArchive({
        archive: "/nonexistent/archive.tgz",
        namespace: "team",
        registry: `oci:${join(folder, "layout")}`,
        outputDir: join(folder, "out"),
        tempDir: join(folder, "missing"),
      }).catch((caught: unknown) => caught);

      expect(error).toMatchObject({ code: "USAGE" });
      expect((error as Error).message).toBe(
        `the folder for temporary files ${join(folder, "missing")} does not exist`,
      );
      expect((error as PpaLoadError).hint).toMatch(/--temp-dir/);
      expect(await readdir(folder)).toEqual([]);
    } finally {
      await rm(folder, { recursive: true, force: true });
    }
  });

  it("rejects a file where the charts folder goes", async () => {
    const folder = await mkdtemp(join(tmpdir(), "ppa-load-options-"));
    try {
      const outputDir = join(folder, "out");
      await mkdir(outputDir);
      await writeFile(join(outputDir, "charts"), "");

      const error = await importArchive({
        archive: "/nonexistent/archive.tgz",
        namespace: "team",
        registry: `oci:${join(folder, "layout")}`,
        outputDir,
      }).catch((caught: unknown) => caught);

      expect(error).toMatchObject({ code: "USAGE" });
      expect((error as Error).message).toBe(
        `${join(outputDir, "charts")} is a file, but the charts are written into a folder of that name`,
      );
    } finally {
      await rm(folder, { recursive: true, force: true });
    }
  });
});
