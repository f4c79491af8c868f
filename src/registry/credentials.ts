import { spawn } from "node:child_process";
import { readFile } from "node:fs/promises";
import { homedir } from "node:os";
import { join } from "node:path";

import { PpaLoadError, errorMessage } from "../errors.js";

/** Credentials for one registry. `identityToken` is an OAuth2 refresh token. */
export type Credentials =
  | { username: string; password: string; source: string }
  | { identityToken: string; source: string };

interface DockerConfig {
  auths?: Record<
    string,
    {
      auth?: string;
      username?: string;
      password?: string;
      identitytoken?: string;
    }
  >;
  credsStore?: string;
  credHelpers?: Record<string, string>;
}

/** Returns the Docker config folder: `DOCKER_CONFIG`, else `~/.docker`. */
export function dockerConfigDir(env: NodeJS.ProcessEnv = process.env): string {
  return env.DOCKER_CONFIG || join(homedir(), ".docker");
}

/** The keys Docker may have stored a registry's entry under. */
function configKeys(registry: string): string[] {
  const keys = [
    registry,
    `https://${registry}`,
    `http://${registry}`,
    `https://${registry}/v1/`,
    `https://${registry}/v2/`,
  ];
  if (registry === "docker.io" || registry === "registry-1.docker.io") {
    keys.push("https://index.docker.io/v1/", "index.docker.io");
  }
  return keys;
}

async function readDockerConfig(
  dir: string,
): Promise<DockerConfig | undefined> {
  const path = join(dir, "config.json");
  let text: string;
  try {
    text = await readFile(path, "utf8");
  } catch (error) {
    if ((error as NodeJS.ErrnoException).code === "ENOENT") return undefined;
    throw new PpaLoadError(
      "CREDENTIALS",
      `cannot read ${path}: ${errorMessage(error)}`,
    );
  }
  try {
    return JSON.parse(text) as DockerConfig;
  } catch (error) {
    throw new PpaLoadError(
      "CREDENTIALS",
      `${path} is not valid JSON: ${errorMessage(error)}`,
      {
        hint: "fix or remove the file, or give --username and --password-stdin",
      },
    );
  }
}

/**
 * Finds credentials for a registry the way the Docker CLI does: a
 * `credHelpers` entry for the host, else `credsStore`, else `auths`.
 */
export async function findCredentials(
  registry: string,
  configDir = dockerConfigDir(),
): Promise<Credentials | undefined> {
  const config = await readDockerConfig(configDir);
  if (!config) return undefined;
  const keys = configKeys(registry);
  const configPath = join(configDir, "config.json");

  const helper = keys.map((key) => config.credHelpers?.[key]).find(Boolean);
  if (helper) return runCredentialHelper(helper, registry);

  if (config.credsStore) {
    const stored = await runCredentialHelper(config.credsStore, registry);
    if (stored) return stored;
  }

  const entry = keys.map((key) => config.auths?.[key]).find(Boolean);
  if (!entry) return undefined;
  const source = `${configPath} (auths)`;
  if (entry.identitytoken)
    return { identityToken: entry.identitytoken, source };
  if (entry.username && entry.password) {
    return { username: entry.username, password: entry.password, source };
  }
  if (entry.auth) {
    const decoded = Buffer.from(entry.auth, "base64").toString("utf8");
    const colon = decoded.indexOf(":");
    if (colon < 0) {
      throw new PpaLoadError(
        "CREDENTIALS",
        `${configPath}: the "auth" value for ${registry} is not base64 of USER:PASSWORD`,
        { hint: `run docker login ${registry} again` },
      );
    }
    return {
      username: decoded.slice(0, colon),
      password: decoded.slice(colon + 1),
      source,
    };
  }
  return undefined;
}

/** Runs `docker-credential-NAME get`, the credential helper protocol. */
function runCredentialHelper(
  name: string,
  registry: string,
): Promise<Credentials | undefined> {
  const program = `docker-credential-${name}`;
  return new Promise((resolve, reject) => {
    const child = spawn(program, ["get"], { stdio: ["pipe", "pipe", "pipe"] });
    let stdout = "";
    let stderr = "";
    child.stdout.on("data", (chunk) => (stdout += chunk));
    child.stderr.on("data", (chunk) => (stderr += chunk));
    child.on("error", (error) => {
      reject(
        new PpaLoadError(
          "CREDENTIALS",
          `cannot run credential helper ${program}: ${error.message}`,
          {
            hint: `install ${program}, or remove it from your Docker config, or give --username and --password-stdin`,
          },
        ),
      );
    });
    child.on("close", (code) => {
      if (code !== 0) {
        // Helpers report a missing entry as an error; that only means no credentials.
        if (/credentials not found/i.test(stdout + stderr))
          return resolve(undefined);
        return reject(
          new PpaLoadError(
            "CREDENTIALS",
            `${program} get failed for ${registry} (exit ${code}): ${(stdout + stderr).trim()}`,
          ),
        );
      }
      try {
        const answer = JSON.parse(stdout) as {
          Username?: string;
          Secret?: string;
        };
        if (!answer.Secret) return resolve(undefined);
        const source = `credential helper ${program}`;
        if (answer.Username === "<token>") {
          return resolve({ identityToken: answer.Secret, source });
        }
        resolve({
          username: answer.Username ?? "",
          password: answer.Secret,
          source,
        });
      } catch {
        reject(
          new PpaLoadError(
            "CREDENTIALS",
            `${program} get printed something other than JSON`,
          ),
        );
      }
    });
    child.stdin.end(registry);
  });
}
