import { describe, expect, it } from "vitest";

import {
  checkHost,
  checkRegistryOption,
  checkReference,
  checkRepositoryPath,
  checkTag,
  parseReference,
  targetRepository,
} from "../../src/reference.js";

describe("parseReference", () => {
  it.each([
    ["busybox", { path: "busybox" }],
    ["ibmcom/mq:9.1.5.0-r1", { path: "ibmcom/mq", tag: "9.1.5.0-r1" }],
    ["quay.io/org/app:1.0", { host: "quay.io", path: "org/app", tag: "1.0" }],
    ["localhost/app", { host: "localhost", path: "app" }],
    [
      "127.0.0.1:5000/ns/app:2",
      { host: "127.0.0.1:5000", path: "ns/app", tag: "2" },
    ],
    [
      "docker.elastic.co/elasticsearch/elasticsearch-oss:6.6.1",
      {
        host: "docker.elastic.co",
        path: "elasticsearch/elasticsearch-oss",
        tag: "6.6.1",
      },
    ],
    [
      "app@sha256:" + "a".repeat(64),
      { path: "app", digest: "sha256:" + "a".repeat(64) },
    ],
  ])("splits %s", (text, expected) => {
    expect(parseReference(text)).toEqual({
      host: undefined,
      tag: undefined,
      digest: undefined,
      ...expected,
    });
  });

  it("treats a host:port with no tag as a host, not a tag", () => {
    expect(parseReference("registry:5000/app")).toMatchObject({
      host: "registry:5000",
      path: "app",
      tag: undefined,
    });
  });
});

describe("checkRepositoryPath", () => {
  it.each(["ns", "team/product", "a.b_c__d-e--f", "ibmcom/minio-mc-amd64"])(
    "accepts %s",
    (path) => {
      expect(checkRepositoryPath(path)).toBeUndefined();
    },
  );

  it("names an empty component as the problem", () => {
    for (const path of ["/team", "team/", "team//app"]) {
      expect(checkRepositoryPath(path), path).toBe(
        `"${path}" has an empty path component: it starts or ends with "/", or has "//"`,
      );
    }
  });

  it("names uppercase letters as the problem", () => {
    expect(checkRepositoryPath("Team/app")).toMatch(/uppercase/);
  });

  it.each(["", "-ns", "ns-", "a..b", "a/", "a//b", "a b"])(
    "rejects %j",
    (path) => {
      expect(checkRepositoryPath(path)).toBeDefined();
    },
  );
});

describe("checkTag", () => {
  it.each([
    "latest",
    "RELEASE.2019-04-09T01-22-30Z.1",
    "_x",
    "9.1.5.0-r1-amd64",
    "a".repeat(128),
  ])("accepts %s", (tag) => {
    expect(checkTag(tag)).toBeUndefined();
  });

  it("rejects + with a message naming it", () => {
    expect(checkTag("1.0.0+build.1")).toMatch(/"\+"/);
  });

  it("rejects a tag over 128 characters", () => {
    expect(checkTag("a".repeat(129))).toMatch(/longer than 128/);
  });

  it.each([".hidden", "-dash"])("rejects %s for its first character", (tag) => {
    expect(checkTag(tag)).toMatch(/starts with/);
  });
});

describe("checkHost", () => {
  it.each([
    "127.0.0.1:5000",
    "registry.example.com",
    "localhost:5000",
    "[::1]:5000",
    "us.icr.io",
  ])("accepts %s", (host) => {
    expect(checkHost(host)).toBeUndefined();
  });

  it.each(["http://r.example", "r.example/ns", "r.example:port", ""])(
    "rejects %j",
    (host) => {
      expect(checkHost(host)).toBeDefined();
    },
  );
});

describe("checkRegistryOption", () => {
  it.each([
    [
      "http://127.0.0.1:5077",
      'write --registry 127.0.0.1:5077, without "http://"',
    ],
    [
      "https://registry.example.com/v2/",
      "write --registry registry.example.com,",
    ],
    [
      "https://registry.example.com/team/apps/",
      "write --registry registry.example.com --namespace team/apps,",
    ],
    ["127.0.0.1:5077/team", "write --registry 127.0.0.1:5077 --namespace team"],
  ])("gives the fix for %s", (value, fix) => {
    expect(checkRegistryOption(value)).toContain("is not a registry host");
    expect(checkRegistryOption(value)).toContain(fix);
  });

  it("accepts a host", () => {
    expect(checkRegistryOption("registry.example.com:5000")).toBeUndefined();
  });

  it("adds no fix to other invalid values", () => {
    expect(checkRegistryOption("bad host")).toMatch(
      /registry host \(expected HOST or HOST:PORT, [^)]*\)$/,
    );
  });
});

describe("checkReference", () => {
  it("accepts a full target", () => {
    expect(
      checkReference("127.0.0.1:5000/ns/ibmcom/mq:9.1.5.0-r1"),
    ).toBeUndefined();
  });

  it("rejects a name over 255 characters", () => {
    expect(checkReference(`r.example/${"a".repeat(250)}:1`)).toMatch(
      /longer than 255/,
    );
  });
});

describe("targetRepository", () => {
  it("drops the source registry host", () => {
    expect(targetRepository("r:5000", "ns", "quay.io/org/app")).toBe(
      "r:5000/ns/org/app",
    );
  });

  it("keeps a source path without a host", () => {
    expect(targetRepository("r:5000", "team/x", "ibmcom/mq")).toBe(
      "r:5000/team/x/ibmcom/mq",
    );
  });
});
