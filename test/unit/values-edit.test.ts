import { describe, expect, it } from "vitest";

import {
  InvalidYamlError,
  type ScalarEdit,
  doubleQuoted,
  editYamlScalars,
  hasYamlPath,
  readYamlValue,
} from "../../src/charts/values-edit.js";

/** Returns an edit that sets a dotted key to a fixed value. */
function set(key: string, value: string): ScalarEdit {
  return { path: key.split("."), replace: () => value };
}

/**
 * Checks that `after` is `before` with exactly one span replaced by
 * `replacement`, and returns the span's offset in `before`.
 */
function expectOnlySpanChanged(
  before: string,
  after: string,
  original: string,
  replacement: string,
): number {
  const start = before.indexOf(original);
  expect(start).toBeGreaterThanOrEqual(0);
  expect(after.slice(0, start)).toBe(before.slice(0, start));
  expect(after.slice(start, start + replacement.length)).toBe(replacement);
  expect(after.slice(start + replacement.length)).toBe(
    before.slice(start + original.length),
  );
  return start;
}

describe("editYamlScalars", () => {
  it("keeps comments around every rewritten key", () => {
    const before = [
      "# Default values.",
      "",
      "image:",
      "  # repository is the container repository to use",
      "  repository: ibmcom/mq   # the image",
      "  # tag is the tag to use",
      "  tag: 9.1.5.0-r1",
      "",
      "mcImage:",
      "  repository: ibmcom/minio-mc # another comment",
      "# trailing comment",
      "",
    ].join("\n");

    const { text, results } = editYamlScalars(before, [
      set("image.repository", "r.example/ns/ibmcom/mq"),
      set("mcImage.repository", "r.example/ns/ibmcom/minio-mc"),
    ]);

    expect(text).toBe(
      before
        .replace("ibmcom/mq ", "r.example/ns/ibmcom/mq ")
        .replace("ibmcom/minio-mc", "r.example/ns/ibmcom/minio-mc"),
    );
    expect(results.map((r) => r.status)).toEqual(["changed", "changed"]);
    expect(results[0]).toMatchObject({
      path: ["image", "repository"],
      from: "ibmcom/mq",
      to: "r.example/ns/ibmcom/mq",
      style: "plain",
    });
  });

  it("keeps single quotes and escapes quotes in them", () => {
    const before = "a: 'old'\nb: 'x'\n";

    const { text, results } = editYamlScalars(before, [
      set("a", "r/ns/new"),
      set("b", "it's"),
    ]);

    expect(text).toBe("a: 'r/ns/new'\nb: 'it''s'\n");
    expect(results.map((r) => r.style)).toEqual(["single", "single"]);
  });

  it("keeps double quotes and escapes what they need", () => {
    const before = 'a: "old" # c\nb: "x"\nc: "y"\n';

    const { text } = editYamlScalars(before, [
      set("a", "r/ns/new"),
      set("b", 'say "hi" \\ there'),
      set("c", "tab\there"),
    ]);

    expect(text).toBe(
      'a: "r/ns/new" # c\nb: "say \\"hi\\" \\\\ there"\nc: "tab\\there"\n',
    );
  });

  it("double-quotes a single-quoted value with a line break", () => {
    const { text, results } = editYamlScalars("a: 'x'\n", [
      set("a", "two\nlines"),
    ]);

    expect(text).toBe('a: "two\\nlines"\n');
    expect(results[0].style).toBe("double");
  });

  it("quotes a plain value only when it needs quotes", () => {
    const before = [
      "a: x",
      "b: x",
      "c: x",
      "d: x",
      "e: x",
      "f: x",
      "g: x",
      "h: x",
      "i: x",
      "",
    ].join("\n");

    const { text, results } = editYamlScalars(before, [
      set("a", "127.0.0.1:5000/team/ibmcom/mq"),
      set("b", "yes"),
      set("c", "1.5"),
      set("d", "key: value"),
      set("e", "#hash"),
      set("f", ""),
      set("g", " padded"),
      set("h", "null"),
      set("i", "y"),
    ]);

    expect(text).toBe(
      [
        "a: 127.0.0.1:5000/team/ibmcom/mq",
        'b: "yes"',
        'c: "1.5"',
        'd: "key: value"',
        'e: "#hash"',
        'f: ""',
        'g: " padded"',
        'h: "null"',
        // go-yaml v2, which Helm uses, reads a plain y as true (YAML 1.1).
        'i: "y"',
        "",
      ].join("\n"),
    );
    expect(results.map((r) => r.style)).toEqual([
      "plain",
      "double",
      "double",
      "double",
      "double",
      "double",
      "double",
      "double",
      "double",
    ]);
  });

  it("reports a key that does not exist and creates nothing", () => {
    const before = "image:\n  repository: a\nname: x\n";

    const { text, results } = editYamlScalars(before, [
      set("image.registry", "r"),
      set("other.repository", "r"),
      set("name.repository", "r"),
    ]);

    expect(text).toBe(before);
    expect(results.map((r) => r.status)).toEqual([
      "missing",
      "missing",
      "missing",
    ]);
    expect(results[0].detail).toBe("image has no key registry");
    expect(results[1].detail).toBe("the document has no key other");
    expect(results[2].detail).toBe("name is a string, not a map");
  });

  it("reports values that are not strings", () => {
    const before = [
      "map: {a: 1}",
      "list: [a]",
      "number: 5",
      "boolean: yes",
      "empty:",
      "tilde: ~",
      "",
    ].join("\n");

    const { text, results } = editYamlScalars(before, [
      set("map", "x"),
      set("list", "x"),
      set("number", "x"),
      set("boolean", "x"),
      set("empty", "x"),
      set("tilde", "x"),
    ]);

    expect(text).toBe(before);
    expect(results.map((r) => r.status)).toEqual(Array(6).fill("not-a-string"));
    expect(results.map((r) => r.detail)).toEqual([
      "a map",
      "a list",
      "a number (5)",
      "a boolean (true)",
      "null",
      "null",
    ]);
  });

  it("rewrites null values only when asked to", () => {
    const before = "a:\nb: \nc: ~\nd: null\n";
    const edits: ScalarEdit[] = ["a", "b", "c", "d"].map((key) => ({
      path: [key],
      acceptNull: true,
      replace: (current) => (current === null ? "r.example" : undefined),
    }));

    const { text, results } = editYamlScalars(before, edits);

    expect(text).toBe(
      "a: r.example\nb: r.example\nc: r.example\nd: r.example\n",
    );
    expect(results.map((r) => r.from)).toEqual([null, null, null, null]);
  });

  it("rewrites an anchored scalar and keeps its anchor", () => {
    const before = "base: &img ibmcom/mq\nother: *img\n";

    const { text, results } = editYamlScalars(before, [
      set("base", "r/ns/ibmcom/mq"),
    ]);

    expect(text).toBe("base: &img r/ns/ibmcom/mq\nother: *img\n");
    expect(results[0].status).toBe("changed");
    expect(results[0].aliasedAt).toEqual(["other"]);
  });

  it("finds the aliases that resolve to an edited value", () => {
    const before = [
      "image: &img",
      "  repository: ibmcom/mq",
      "init: *img",
      "migrate:",
      "  <<: *img",
      "side: &img",
      "  repository: busybox",
      "late: *img",
      "",
    ].join("\n");

    const { results } = editYamlScalars(before, [
      set("image.repository", "r/ns/ibmcom/mq"),
    ]);

    // late refers to the second &img, which contains busybox.
    expect(results[0].aliasedAt).toEqual(["init", "migrate.<<"]);
  });

  it("reports aliases and does not rewrite through them", () => {
    const before = [
      "defaults: &defaults",
      "  repository: ibmcom/mq",
      "base: &img ibmcom/mq",
      "other: *img",
      "copy: *defaults",
      "merged:",
      "  <<: *defaults",
      "  tag: 1",
      "",
    ].join("\n");

    const { text, results } = editYamlScalars(before, [
      set("other", "x"),
      set("copy.repository", "x"),
      set("merged.repository", "x"),
    ]);

    expect(text).toBe(before);
    expect(results.map((r) => r.status)).toEqual(["alias", "alias", "alias"]);
    expect(results[0].detail).toBe("an alias of &img");
    expect(results[1].detail).toBe("copy is an alias of &defaults");
    expect(results[2].detail).toBe(
      "merged has no key repository of its own, only a << merge key",
    );
  });

  it("edits values inside flow maps", () => {
    const before =
      'image: {repository: ibmcom/mq, tag: "1.0"}\nlist: [a, {repository: b}]\n';

    const { text } = editYamlScalars(before, [
      set("image.repository", "r/ns/ibmcom/mq"),
      set("image.tag", "2.0"),
    ]);

    expect(text).toBe(
      'image: {repository: r/ns/ibmcom/mq, tag: "2.0"}\nlist: [a, {repository: b}]\n',
    );
  });

  it("quotes a flow value that contains flow indicators", () => {
    const { text, results } = editYamlScalars("image: {repository: a}\n", [
      set("image.repository", "a,b"),
    ]);

    expect(text).toBe('image: {repository: "a,b"}\n');
    expect(results[0].style).toBe("double");
  });

  it("keeps CRLF line endings", () => {
    const before =
      "# values\r\nimage:\r\n  repository: ibmcom/mq\r\n  tag: '1'\r\n\r\nother: x\r\n";

    const { text } = editYamlScalars(before, [
      set("image.repository", "r/ns/ibmcom/mq"),
      set("image.tag", "2"),
    ]);

    expect(text).toBe(
      "# values\r\nimage:\r\n  repository: r/ns/ibmcom/mq\r\n  tag: '2'\r\n\r\nother: x\r\n",
    );
    expect(text.split("\r\n")).toHaveLength(before.split("\r\n").length);
  });

  it("edits the first document only", () => {
    const before =
      "%YAML 1.1\n---\nimage:\n  repository: a\n...\n---\nimage:\n  repository: a\n";

    const { text } = editYamlScalars(before, [set("image.repository", "b")]);

    expect(text).toBe(
      "%YAML 1.1\n---\nimage:\n  repository: b\n...\n---\nimage:\n  repository: a\n",
    );
  });

  it("edits a document that starts with ---", () => {
    const before = "--- # values\nimage:\n  repository: a\n";

    const { text } = editYamlScalars(before, [set("image.repository", "b")]);

    expect(text).toBe("--- # values\nimage:\n  repository: b\n");
  });

  it("leaves every byte outside the rewritten scalar as it was", () => {
    const before = [
      "\ufeff# Copyright header",
      "global:   {registry: docker.io}   # flow",
      "",
      "",
      "image:",
      "    # odd indentation",
      "    repository:    'quay.io/org/app'    # spaces",
      "    tag: !!str 1.0",
      "    pullPolicy: IfNotPresent",
      "list:",
      "- a",
      "-   b",
      "anchors: &a {x: 1}",
      "use: *a",
      "text: |",
      "  block",
      "    kept",
      "",
    ].join("\r\n");

    const { text } = editYamlScalars(before, [
      set("image.repository", "r/ns/org/app"),
    ]);

    expectOnlySpanChanged(before, text, "'quay.io/org/app'", "'r/ns/org/app'");
  });

  it("keeps a tag and replaces a multi-line plain scalar", () => {
    const before = "a: !!str 1.0\nb: first\n  second\nc: z\n";

    const { text } = editYamlScalars(before, [set("a", "x"), set("b", "yy")]);

    expect(text).toBe("a: !!str x\nb: yy\nc: z\n");
  });

  it("passes the current value and keeps it on undefined", () => {
    const seen: (string | null)[] = [];
    const before = "a: old\nb: same\n";

    const { text, results } = editYamlScalars(before, [
      {
        path: ["a"],
        replace: (current) => {
          seen.push(current);
          return undefined;
        },
      },
      set("b", "same"),
    ]);

    expect(text).toBe(before);
    expect(seen).toEqual(["old"]);
    expect(results.map((r) => r.status)).toEqual(["unchanged", "unchanged"]);
  });

  it("reports block scalars and duplicate keys", () => {
    const before = "a: |\n  x\nb: 1\nb: 2\n";

    const { text, results } = editYamlScalars(before, [
      set("a", "y"),
      set("b", "y"),
    ]);

    expect(text).toBe(before);
    expect(results.map((r) => r.status)).toEqual([
      "block-scalar",
      "duplicate-key",
    ]);
  });

  it("treats an empty text as a document without keys", () => {
    const { text, results } = editYamlScalars("", [set("a", "x")]);

    expect(text).toBe("");
    expect(results[0].status).toBe("missing");
  });

  it("throws on YAML that does not parse", () => {
    expect(() => editYamlScalars("a: b: c\n", [set("a", "x")])).toThrow(
      InvalidYamlError,
    );
  });
});

describe("doubleQuoted", () => {
  it("escapes control characters", () => {
    expect(doubleQuoted("a\u0001b\u007f")).toBe('"a\\x01b\\x7f"');
  });
});

describe("readYamlValue and hasYamlPath", () => {
  it("reads values and tells missing paths apart", () => {
    const text = "image:\n  registry: docker.io\n  pull: [a]\nempty:\n";

    expect(readYamlValue(text, ["image", "registry"])).toEqual({
      found: true,
      value: "docker.io",
    });
    expect(readYamlValue(text, ["image", "pull"])).toEqual({
      found: true,
      value: ["a"],
    });
    expect(readYamlValue(text, ["image", "tag"])).toMatchObject({
      found: false,
    });
    expect(hasYamlPath(text, ["empty"])).toBe(true);
    expect(hasYamlPath(text, ["image", "tag"])).toBe(false);
  });

  it("reads each text's own values in turn", () => {
    const first = "image:\n  repository: first\n";
    const second = "image:\n  repository: second\n";
    const path = ["image", "repository"];

    expect(readYamlValue(first, path)).toEqual({ found: true, value: "first" });
    expect(readYamlValue(second, path)).toEqual({
      found: true,
      value: "second",
    });
    expect(readYamlValue(first, path)).toEqual({ found: true, value: "first" });
    expect(editYamlScalars(second, [set("image.repository", "x")]).text).toBe(
      "image:\n  repository: x\n",
    );
    expect(() => readYamlValue("a: b: c\n", path)).toThrow(InvalidYamlError);
    expect(() => hasYamlPath("a: b: c\n", path)).toThrow(InvalidYamlError);
  });
});
