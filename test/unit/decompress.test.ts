import { gzipSync } from "node:zlib";
import { describe, expect, it } from "vitest";

import {
  LineBreakSample,
  sniff,
  tarBytes,
} from "../../src/archive/decompress.js";
import { PpaLoadError } from "../../src/errors.js";
import {
  crlfToLf,
  lfToCrlf,
  pseudoRandomBytes,
  tarEntries,
} from "../../testdata/generate.js";

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

/** Returns the verdict of a sample of `bytes`, added in chunks of `chunkSize`. */
function damageOf(bytes: Buffer, compressed: boolean, chunkSize = 4096) {
  const sample = new LineBreakSample();
  for (let offset = 0; offset < bytes.length; offset += chunkSize) {
    sample.add(bytes.subarray(offset, offset + chunkSize));
  }
  return sample.damage(compressed);
}

/** A tar of text files with many lines, as a layer of an image holds. */
const textTar = tarEntries(
  Array.from({ length: 8 }, (_, i) => ({
    path: `etc/file-${i}.conf`,
    body: Array.from({ length: 40 }, (_, line) => `key${line}=${i}`).join("\n"),
  })),
);

describe("LineBreakSample", () => {
  it("recognises LF rewritten as CR LF", () => {
    expect(damageOf(lfToCrlf(textTar), false)).toBe("lf-to-crlf");
    const random = pseudoRandomBytes("lf-to-crlf", 64 * 1024);
    expect(damageOf(lfToCrlf(gzipSync(random)), true)).toBe("lf-to-crlf");
  });

  it("counts a CR at the end of the previous chunk", () => {
    // Chunks of 2 bytes split every "\r\n" of "a\r\n" repeated.
    const bytes = Buffer.from("a\r\n".repeat(40).slice(1));
    expect(damageOf(bytes, false, 2)).toBe("lf-to-crlf");
  });

  it("recognises CR LF rewritten as LF in compressed data", () => {
    const random = pseudoRandomBytes("crlf-to-lf", 2 * 1024 * 1024);
    expect(damageOf(crlfToLf(random), true)).toBe("crlf-to-lf");
  });

  it("does not judge CR LF removal in data that is not compressed", () => {
    const random = pseudoRandomBytes("crlf-to-lf", 2 * 1024 * 1024);
    expect(damageOf(crlfToLf(random), false)).toBeUndefined();
    expect(damageOf(textTar, false)).toBeUndefined();
  });

  it("needs enough line feeds to judge", () => {
    expect(damageOf(Buffer.from("a\r\nb\r\nc\r\n"), false)).toBeUndefined();
    expect(damageOf(crlfToLf(pseudoRandomBytes("few", 65536)), true)).toBe(
      undefined,
    );
  });

  it("finds no damage in random and compressed data", () => {
    for (let seed = 0; seed < 20; seed += 1) {
      const random = pseudoRandomBytes(`clean-${seed}`, 1024 * 1024);
      expect(damageOf(random, true), `seed ${seed}`).toBeUndefined();
      expect(damageOf(gzipSync(random), true), `seed ${seed}`).toBeUndefined();
    }
  });
});

describe("tarBytes on rewritten line breaks", () => {
  async function failure(input: Buffer): Promise<PpaLoadError> {
    try {
      await collect(input, 65536);
    } catch (error) {
      expect(error).toBeInstanceOf(PpaLoadError);
      return error as PpaLoadError;
    }
    throw new Error("tarBytes did not fail");
  }

  it("names gzip whose LF bytes became CR LF", async () => {
    const random = pseudoRandomBytes("gzip-lf-to-crlf", 64 * 1024);
    const error = await failure(
      lfToCrlf(gzipSync(tarEntries([{ path: "blob", body: random }]))),
    );

    expect(error.message).toMatch(
      /^images\/x\.tar is not a valid gzip-compressed tar file \(.+\): each of the \d+ line feed \(LF\) bytes in the first \d+ bytes follows a carriage return \(CR\), so its line breaks were probably rewritten from LF to CR LF by a text-mode transfer/,
    );
    expect(error.hint).toMatch(/binary mode/);
    expect(error.hint).toMatch(/docker save -o FILE IMAGE/);
  });

  it("names gzip whose CR LF pairs became LF", async () => {
    const random = pseudoRandomBytes("gzip-crlf-to-lf", 1536 * 1024);
    const error = await failure(
      crlfToLf(gzipSync(tarEntries([{ path: "blob", body: random }]))),
    );

    expect(error.message).toMatch(
      /^images\/x\.tar is not a valid gzip-compressed tar file \(.+\): (none|only one) of the \d+ line feed \(LF\) bytes in the first 1 MiB follows a carriage return \(CR\)/,
    );
    expect(error.hint).toMatch(/binary mode/);
  });

  it("blames no line breaks for other damage", async () => {
    for (let seed = 0; seed < 20; seed += 1) {
      const random = pseudoRandomBytes(`flip-${seed}`, 256 * 1024);
      const compressed = gzipSync(tarEntries([{ path: "blob", body: random }]));
      const flipped = Buffer.from(compressed);
      flipped[1000 + seed * 97] ^= 0x55;
      const cut = compressed.subarray(0, 100_000 + seed * 1000);

      for (const damaged of [flipped, cut]) {
        const error = await failure(damaged);
        expect(error.message, `seed ${seed}`).not.toMatch(/line feed/);
      }
    }
  });
});
