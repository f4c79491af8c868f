import { gzipSync } from "node:zlib";
import { describe, expect, it } from "vitest";

import { sniff, tarBytes } from "../../src/archive/decompress.js";
import { tarEntries } from "../../testdata/generate.js";

const tar = tarEntries([{ path: "hello.txt", body: "hello\n" }]);

async function collect(input: Buffer, chunkSize = 100): Promise<Buffer> {
  async function* chunks() {
    for (let offset = 0; offset < input.length; offset += chunkSize) {
      yield input.subarray(offset, offset + chunkSize);
    }
  }
  const output: Buffer[] = [];
  for await (const chunk of tarBytes(
    chunks(),
    "images/x.tar",
    "IMAGE_TARBALL_INVALID",
  )) {
    output.push(chunk);
  }
  return Buffer.concat(output);
}

describe("sniff", () => {
  it("recognises each format", () => {
    expect(sniff(tar)).toBe("tar");
    expect(sniff(gzipSync(tar))).toBe("gzip");
    expect(sniff(Buffer.from([0xff, 0xfe, 0x41, 0]))).toBe("utf16-text");
    expect(sniff(Buffer.from("\ufeffimages:"))).toBe("utf8-bom-text");
    expect(sniff(Buffer.from("BZh91AY&SY"))).toBe("bzip2");
    expect(sniff(Buffer.from([0x28, 0xb5, 0x2f, 0xfd, 0, 0]))).toBe("zstd");
    expect(sniff(Buffer.from("images:\n  - a\n".repeat(60)))).toBe("unknown");
  });
});

describe("tarBytes", () => {
  it("passes a plain tar through", async () => {
    expect((await collect(tar)).equals(tar)).toBe(true);
  });

  it("unwraps gzip and gzip inside gzip", async () => {
    expect((await collect(gzipSync(tar))).equals(tar)).toBe(true);
    expect((await collect(gzipSync(gzipSync(tar)))).equals(tar)).toBe(true);
  });

  it("names a tarball written as UTF-16 text", async () => {
    const text = Buffer.concat([
      Buffer.from([0xff, 0xfe]),
      Buffer.from(tar.toString("latin1"), "utf16le"),
    ]);
    await expect(collect(text)).rejects.toThrow(
      /images\/x\.tar is not a valid tar file: it starts with a UTF-16 byte order mark/,
    );
  });

  it("says a cut gzip stream is cut short", async () => {
    const cut = gzipSync(
      Buffer.concat([tar, Buffer.alloc(100_000, 7)]),
    ).subarray(0, 200);
    await expect(collect(cut)).rejects.toThrow(/images\/x\.tar is cut short/);
  });

  it("rejects bytes that are neither gzip nor tar", async () => {
    await expect(collect(Buffer.alloc(600, 0x41))).rejects.toThrow(
      /is neither gzip nor a tar file \(it starts with the bytes 41 41/,
    );
  });

  it("rejects an empty file", async () => {
    await expect(collect(Buffer.alloc(0))).rejects.toThrow(
      /images\/x\.tar is empty/,
    );
  });
});
