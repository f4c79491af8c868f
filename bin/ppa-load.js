#!/usr/bin/env node
const [major, minor] = process.versions.node.split(".").map(Number);
if (major < 22 || (major === 22 && minor < 12)) {
  process.stderr.write(
    `error: ppa-load needs Node.js 22.12 or newer, and this is ${process.version}\n` +
      "hint: install Node.js 22 or 24 (for example from https://nodejs.org or with nvm install 22)\n",
  );
  process.exit(2);
}

const { main } = await import("../dist/cli/main.js");
process.exitCode = await main(process.argv);
