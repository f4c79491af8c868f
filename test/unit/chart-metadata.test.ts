import { describe, expect, it } from "vitest";

import { readChartMetadata } from "../../src/charts/oci-chart.js";
import { gzipDeterministic, tarEntries } from "../../testdata/generate.js";

const chartYaml = "apiVersion: v2\nname: app\nversion: 1.0.0\n";
/** The start of an AppleDouble file, as macOS tar writes for extended attributes. */
const appleDouble = Buffer.from([0, 5, 22, 7, 0, 2, 0, 0]);

describe("readChartMetadata with macOS metadata files", () => {
  it("reads a chart with ._ files in its folder", async () => {
    const chart = gzipDeterministic(
      tarEntries([
        { path: "app/._Chart.yaml", body: appleDouble },
        { path: "app/Chart.yaml", body: chartYaml },
      ]),
    );

    const info = await readChartMetadata(chart, "the chart charts/app.tgz");

    expect(info.metadata.name).toBe("app");
  });

  it("names the ._ file beside the chart folder, which Helm rejects", async () => {
    const chart = gzipDeterministic(
      tarEntries([
        { path: "._app", body: appleDouble },
        { path: "app/Chart.yaml", body: chartYaml },
      ]),
    );

    await expect(
      readChartMetadata(chart, "the chart charts/app.tgz"),
    ).rejects.toThrow(
      'the chart charts/app.tgz contains the macOS metadata file "._app" outside the chart folder, which Helm also rejects; package the chart with helm package, or set COPYFILE_DISABLE=1 before tar on macOS so that it writes no ._ files',
    );
  });
});
