/**
 * Writes the golden archives into testdata/archives/.
 *
 *   node --experimental-strip-types testdata/regenerate.ts
 *
 * Node resolves relative imports by exact file name, so this script loads
 * generate.ts by its .ts name. tsc rejects a static import that ends in .ts
 * unless allowImportingTsExtensions is set, so the import is dynamic and its
 * type comes from the .js name that tsc maps to generate.ts.
 */
import { mkdirSync, writeFileSync } from "node:fs";

type Generator = typeof import("./generate.js");

const generatorUrl = new URL("./generate.ts", import.meta.url);
const { goldenArchives }: Generator = await import(generatorUrl.href);

const folder = new URL("./archives/", import.meta.url);
mkdirSync(folder, { recursive: true });
for (const [name, bytes] of goldenArchives()) {
  const target = new URL(name, folder);
  writeFileSync(target, bytes);
  console.log(`wrote testdata/archives/${name} (${bytes.length} bytes)`);
}
