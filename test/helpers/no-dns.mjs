/**
 * Preloaded with `node --import` into CLI runs that name a registry that is
 * not on loopback and reach it through a proxy on 127.0.0.1. It makes every
 * DNS lookup of a name other than `localhost` fail, so a request that skips
 * the proxy fails at once instead of sending a DNS query off this machine.
 * Node.js connects to IP addresses without a lookup.
 */
import dns from "node:dns";

const allowed = new Set(["localhost"]);

function blocked(hostname) {
  return Object.assign(
    new Error(
      `getaddrinfo ENOTFOUND ${hostname}: DNS lookups are blocked in this test`,
    ),
    { code: "ENOTFOUND", hostname },
  );
}

const lookup = dns.lookup;
dns.lookup = function lookupLoopbackOnly(hostname, ...rest) {
  if (allowed.has(String(hostname).toLowerCase())) {
    return lookup.call(this, hostname, ...rest);
  }
  const callback = rest.at(-1);
  process.nextTick(() => callback(blocked(hostname)));
  return undefined;
};

const lookupPromise = dns.promises.lookup;
dns.promises.lookup = function lookupLoopbackOnly(hostname, ...rest) {
  if (allowed.has(String(hostname).toLowerCase())) {
    return lookupPromise.call(this, hostname, ...rest);
  }
  return Promise.reject(blocked(hostname));
};
