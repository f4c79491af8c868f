import { t } from "tar";

/** Returns the bytes of one entry of a (gzipped) tar file. */
export async function readEntry(file: string, path: string): Promise<Buffer> {
  const chunks: Buffer[] = [];
  let found = false;
  await t({
    file,
    filter: (entryPath) => entryPath.replace(/^\.\//, "") === path,
    onReadEntry: (entry) => {
      found = true;
      entry.on("data", (chunk: Buffer) => chunks.push(chunk));
    },
  });
  if (!found) throw new Error(`${file} has no entry ${path}`);
  return Buffer.concat(chunks);
}
