import { describe, expect, it } from "vitest";

import { RegistryError, summarizeBody } from "../../src/registry/errors.js";

const styles = Array.from(
  { length: 50 },
  (_, i) => `.rule-${i} { margin: ${i}px; }`,
).join("\n");

describe("summarizeBody", () => {
  it("quotes the title of an HTML page", () => {
    const page = `<!DOCTYPE html>\r\n<html><head><style>${styles}</style><title>413 Request Entity Too Large</title></head><body><h1>413</h1></body></html>`;

    expect(summarizeBody(page)).toBe("HTML page: 413 Request Entity Too Large");
  });

  it("quotes the text of a page without a title", () => {
    const page = `<html><head><style>${styles}</style><script>var a = "<b>";</script></head><body><h1>Bad Gateway</h1><p>The upstream &amp; its peers are down.</p></body></html>`;

    expect(summarizeBody(page)).toBe(
      "HTML page: Bad Gateway The upstream & its peers are down.",
    );
  });

  it("reads past an empty title", () => {
    const page = "<html><title> </title><body>Request blocked</body></html>";

    expect(summarizeBody(page)).toBe("HTML page: Request blocked");
  });

  it("names an HTML page without text", () => {
    expect(summarizeBody("<html><body></body></html>")).toBe(
      "an HTML page without text",
    );
  });

  it("quotes the start of any other body", () => {
    expect(summarizeBody(`  upstream\n timed out ${"x".repeat(300)}`)).toBe(
      `upstream timed out ${"x".repeat(181)}`,
    );
    expect(summarizeBody("<h1>Service Unavailable</h1>")).toBe(
      "<h1>Service Unavailable</h1>",
    );
    expect(summarizeBody("")).toBe("no error body");
  });
});

describe("RegistryError with an HTML body", () => {
  it("puts the page's title in the message", () => {
    const error = new RegistryError({
      method: "PUT",
      url: "http://r.example/v2/ns/app/blobs/uploads/1",
      status: 413,
      errors: [],
      body: `<html><head><style>${styles}</style><title>413 Request Entity Too Large</title></head></html>`,
    });

    expect(error.message).toBe(
      "PUT http://r.example/v2/ns/app/blobs/uploads/1 failed: 413, HTML page: 413 Request Entity Too Large",
    );
  });
});

describe("RegistryError hints", () => {
  it("says to leave out --insecure for an HTTPS registry", () => {
    const error = new RegistryError({
      method: "GET",
      url: "http://r.example:5000/v2/",
      status: 400,
      errors: [],
      body: "Client sent an HTTP request to an HTTPS server.\n",
    });

    expect(error.message).toBe(
      "GET http://r.example:5000/v2/ failed: 400, Client sent an HTTP request to an HTTPS server.",
    );
    expect(error.hint).toBe(
      "the registry speaks HTTPS; leave out --insecure, and give --ca-cert if a private CA signed its certificate",
    );
  });
});
