#!/usr/bin/env node
const [major, minor] = process.versions.node.split(".").map(Number);
if (major < 22 || (major === 22 && minor < 12)) {
  process.stderr.write(
    `error: ppa-load needs Node.js 22.12 or newer, and this is ${process.version}\n` +
      "hint: install Node.js 22 or 24 (for example from https://nodejs.org or with nvm install 22)\n",
  );
  process.exit(2);
}

// Node.js exits with 13 when the event loop runs empty while a top-level
// await is pending, because some step waited for work that could never
// finish. Its own warning names only this file, so the handler explains.
let finished = false;
process.on("exit", (code) => {
  if (code === 13 && !finished) {
    process.stderr.write(
      "error: ppa-load stopped with its work unfinished, waiting for a step that could not go on (an internal error); nothing more was published\n" +
        "hint: run the command again; if it stops the same way, report it with the output of --verbose\n",
    );
  }
});

// A last resort for temporary folders on any exit, such as an uncaught
// error; an import removes its own when it ends.
const { removeTemporaryFoldersNow } =
  await import("../dist/temporary-folders.js");
process.on("exit", () => removeTemporaryFoldersNow());

const { main } = await import("../dist/cli/main.js");
process.exitCode = await main(process.argv);
finished = true;
