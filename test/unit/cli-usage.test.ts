import { Readable, Writable } from "node:stream";
import { describe, expect, it } from "vitest";

import { main } from "../../src/cli/main.js";

/** Runs ppa-load with `args` in this process and returns its exit code and output. */
async function run(
  args: string[],
): Promise<{ code: number; stdout: string; stderr: string }> {
  const output = { stdout: "", stderr: "" };
  const capture = (name: "stdout" | "stderr") =>
    new Writable({
      write(chunk, _encoding, callback) {
        output[name] += String(chunk);
        callback();
      },
    }) as unknown as NodeJS.WriteStream;
  const code = await main(["node", "ppa-load", ...args], {
    stdin: Readable.from([]),
    stdout: capture("stdout"),
    stderr: capture("stderr"),
    env: {},
  });
  return { code, ...output };
}

describe("command line without arguments", () => {
  it("names both required options and exits 2", async () => {
    const { code, stdout, stderr } = await run([]);

    expect(code).toBe(2);
    expect(stdout).toBe("");
    expect(stderr).toContain("no archive and no namespace given");
    expect(stderr).toContain("--archive FILE.tgz --namespace NAMESPACE");
  });
});
