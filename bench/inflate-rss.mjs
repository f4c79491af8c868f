// Measures the peak RSS of inflating a gzip file and hashing the output, to
// show how much of ppa-load's peak comes from released buffers that V8 has
// not yet collected. Each mode runs in its own process:
//
//   node bench/inflate-rss.mjs FILE stream        zlib's stream, a new 1 MiB buffer per output chunk
//   node bench/inflate-rss.mjs FILE reused        one output buffer, used again for every chunk
//   node bench/inflate-rss.mjs FILE reused N      as reused, but every Nth chunk is copied into a new buffer
//   node bench/inflate-rss.mjs FILE detached      zlib's stream, and every read and output buffer detached
//                                                 (ArrayBuffer transfer) once used, as ppa-load does
//
// The reused mode drives zlib's native handle (`_handle`) directly. That is
// an internal interface of Node.js, fit for this measurement only, and may
// change in any release.

import { createHash } from "node:crypto";
import { createReadStream } from "node:fs";
import { open } from "node:fs/promises";
import { Writable } from "node:stream";
import { pipeline } from "node:stream/promises";
import zlib, { createGunzip } from "node:zlib";

const chunkSize = 1024 * 1024;

async function inflateWithStream(file, hash) {
  await pipeline(
    createReadStream(file, { highWaterMark: chunkSize }),
    createGunzip({ chunkSize }),
    new Writable({
      write(chunk, _encoding, callback) {
        hash.update(chunk);
        callback();
      },
    }),
  );
}

async function inflateAndDetach(file, hash) {
  const gunzip = createGunzip({ chunkSize });
  let current;
  const done = pipeline(
    gunzip,
    new Writable({
      write(chunk, _encoding, callback) {
        hash.update(chunk);
        // zlib fills one buffer with consecutive chunks, so a buffer is
        // detached once a chunk arrives in the next one.
        if (current && current !== chunk.buffer) current.transfer(0);
        current = chunk.buffer;
        callback();
      },
    }),
  );
  const source = await open(file);
  try {
    for (;;) {
      const input = Buffer.allocUnsafeSlow(chunkSize);
      const { bytesRead } = await source.read(input, 0, chunkSize, null);
      if (bytesRead === 0) break;
      await new Promise((resolve, reject) =>
        gunzip.write(input.subarray(0, bytesRead), (error) => {
          input.buffer.transfer(0);
          if (error) reject(error);
          else resolve();
        }),
      );
    }
  } finally {
    await source.close();
  }
  gunzip.end();
  await done;
}

async function inflateIntoOneBuffer(file, hash, copyEvery) {
  const NativeZlib = createGunzip()._handle.constructor;
  const handle = new NativeZlib(zlib.constants.GUNZIP);
  // [avail_out, avail_in] after each write, filled in by the handle.
  const state = new Uint32Array(2);
  let written;
  handle.onerror = (message) => {
    throw new Error(`${file}: ${message}`);
  };
  handle.init(15, 6, 8, 0, state, () => written(), undefined);

  const input = Buffer.allocUnsafe(chunkSize);
  const output = Buffer.allocUnsafe(chunkSize);
  const source = await open(file);
  let chunks = 0;
  try {
    for (;;) {
      const { bytesRead } = await source.read(input, 0, input.length, null);
      if (bytesRead === 0) break;
      let offset = 0;
      let remaining = bytesRead;
      for (;;) {
        await new Promise((resolve) => {
          written = resolve;
          handle.write(
            zlib.constants.Z_NO_FLUSH,
            input,
            offset,
            remaining,
            output,
            0,
            output.length,
          );
        });
        const produced = output.length - state[0];
        chunks += 1;
        if (copyEvery > 0 && chunks % copyEvery === 0) {
          hash.update(Buffer.from(output.subarray(0, produced)));
        } else {
          hash.update(output.subarray(0, produced));
        }
        offset += remaining - state[1];
        remaining = state[1];
        if (state[0] !== 0 && remaining === 0) break;
      }
    }
  } finally {
    await source.close();
    handle.close();
  }
}

const [file, mode = "stream", every = "0"] = process.argv.slice(2);
if (!file || !["stream", "reused", "detached"].includes(mode)) {
  console.error(
    "usage: node bench/inflate-rss.mjs FILE stream|reused [N]|detached",
  );
  process.exit(2);
}
const hash = createHash("sha256");
const started = performance.now();
if (mode === "stream") await inflateWithStream(file, hash);
else if (mode === "detached") await inflateAndDetach(file, hash);
else await inflateIntoOneBuffer(file, hash, Number(every));
const seconds = (performance.now() - started) / 1000;
const peakMiB = process.resourceUsage().maxRSS / 1024;
console.log(
  `${mode}${mode === "reused" && every !== "0" ? ` copying 1 in ${every}` : ""}: ` +
    `sha256 ${hash.digest("hex").slice(0, 12)}, ${seconds.toFixed(2)} s, ` +
    `peak RSS ${peakMiB.toFixed(0)} MiB (${((peakMiB * 1048576) / 1e6).toFixed(0)} MB), Node.js ${process.version}`,
);
