import { existsSync, readFileSync, readdirSync } from "node:fs";
import { dirname, join, relative, resolve } from "node:path";
import { Readable, Writable } from "node:stream";
import { describe, expect, it } from "vitest";

import { main } from "../../src/cli/main.js";
import { repoRoot } from "../helpers/environment.js";

function readRepoFile(path: string): string {
  return readFileSync(join(repoRoot, path), "utf8");
}

/** Runs `ppa-load COMMAND --help` in this process and returns what it printed. */
async function helpOf(command: string): Promise<string> {
  let output = "";
  const capture = new Writable({
    write(chunk, _encoding, callback) {
      output += String(chunk);
      callback();
    },
  }) as unknown as NodeJS.WriteStream;
  const code = await main(["node", "ppa-load", command, "--help"], {
    stdin: Readable.from([]),
    stdout: capture,
    stderr: capture,
    env: {},
  });
  expect(code).toBe(0);
  return output;
}

/** Returns the long option of each line of a commander help text that defines one. */
function longOptions(help: string): string[] {
  const options: string[] = [];
  for (const line of help.split("\n")) {
    const match = /^\s+(?:-\w, )?(--[a-z][a-z0-9-]*)/.exec(line);
    if (match) options.push(match[1]);
  }
  return options;
}

function escapeRegExp(text: string): string {
  return text.replace(/[.*+?^${}()|[\]\\]/g, "\\$&");
}

/** Removes fenced code blocks and inline code spans, which contain no links. */
function withoutCode(markdown: string): string {
  return markdown.replace(/^```[\s\S]*?^```/gm, "").replace(/`[^`\n]*`/g, "");
}

/** Returns the target of every inline Markdown link. */
function linkTargets(markdown: string): string[] {
  const targets: string[] = [];
  for (const match of withoutCode(markdown).matchAll(/\]\(([^)\s]+)\)/g)) {
    targets.push(match[1]);
  }
  return targets;
}

/**
 * Returns the anchors that GitHub gives the headings of a Markdown file. An
 * anchor is the lowercased heading text without formatting and punctuation
 * (except "-" and "_"), with "-" for spaces and "-1", "-2" for repeats.
 */
function headingAnchors(markdown: string): Set<string> {
  const anchors = new Set<string>();
  const counts = new Map<string, number>();
  const text = markdown.replace(/^```[\s\S]*?^```/gm, "");
  for (const match of text.matchAll(/^#{1,6}\s+(.+?)\s*#*\s*$/gm)) {
    const plain = match[1]
      .replace(/\[([^\]]*)\]\([^)]*\)/g, "$1")
      .replace(/[`*]/g, "");
    const slug = plain
      .toLowerCase()
      .replace(/[^\p{L}\p{M}\p{N}\p{Pc}\- ]/gu, "")
      .replace(/ /g, "-");
    const seen = counts.get(slug) ?? 0;
    counts.set(slug, seen + 1);
    anchors.add(seen === 0 ? slug : `${slug}-${seen}`);
  }
  return anchors;
}

const markdownFiles = [
  "README.md",
  ...readdirSync(join(repoRoot, "docs"))
    .filter((name) => name.endsWith(".md"))
    .map((name) => `docs/${name}`),
];

describe("docs/usage.md", () => {
  it.each(["import", "inspect"])(
    "lists every option of %s",
    async (command) => {
      const usage = readRepoFile("docs/usage.md");
      const options = longOptions(await helpOf(command));
      expect(options.length).toBeGreaterThan(0);
      const missing = options.filter(
        (option) =>
          !new RegExp(`${escapeRegExp(option)}(?![\\w-])`).test(usage),
      );
      expect(missing).toEqual([]);
    },
  );
});

describe("docs/troubleshooting.md", () => {
  it("has a heading for every error code", () => {
    const source = readRepoFile("src/errors.ts");
    const union = /export type ErrorCode =([^;]+);/.exec(source)?.[1] ?? "";
    const codes = [...union.matchAll(/"([A-Z_]+)"/g)].map((m) => m[1]);
    expect(codes).toContain("USAGE");
    const troubleshooting = readRepoFile("docs/troubleshooting.md");
    const missing = codes.filter(
      (code) =>
        !new RegExp(`^#{1,6}\\s.*(?<![\\w-])${code}(?![\\w-])`, "m").test(
          troubleshooting,
        ),
    );
    expect(missing).toEqual([]);
  });
});

describe("docs/json.md", () => {
  it("names every record type of the events schema", () => {
    const schema = JSON.parse(
      readRepoFile("docs/schema/events.schema.json"),
    ) as {
      oneOf: { $ref: string }[];
      $defs: Record<string, { properties: { type: { const: string } } }>;
    };
    const types = schema.oneOf.map(
      (ref) => schema.$defs[ref.$ref.split("/").at(-1)!].properties.type.const,
    );
    expect(types).toContain("summary");
    const json = readRepoFile("docs/json.md");
    const missing = types.filter((type) => !json.includes(`\`${type}\``));
    expect(missing).toEqual([]);
  });
});

describe("relative links", () => {
  it.each(markdownFiles)("in %s reach files and headings", (file) => {
    const text = readRepoFile(file);
    const broken: string[] = [];
    for (const target of linkTargets(text)) {
      if (/^[a-z][a-z0-9+.-]*:/i.test(target)) continue;
      const [path, anchor] = target.split("#");
      const resolved = path
        ? resolve(repoRoot, dirname(file), path)
        : join(repoRoot, file);
      if (!existsSync(resolved)) {
        broken.push(`${target} (no file ${relative(repoRoot, resolved)})`);
        continue;
      }
      if (anchor !== undefined && resolved.endsWith(".md")) {
        const anchors = headingAnchors(readFileSync(resolved, "utf8"));
        if (!anchors.has(anchor)) broken.push(`${target} (no heading)`);
      }
    }
    expect(broken).toEqual([]);
  });
});
