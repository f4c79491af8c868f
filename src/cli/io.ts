/** Streams and environment of one CLI run, so that tests can run it in process. */
export interface CliIO {
  stdin: NodeJS.ReadableStream;
  stdout: NodeJS.WriteStream;
  stderr: NodeJS.WriteStream;
  env: NodeJS.ProcessEnv;
}
