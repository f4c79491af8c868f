export { importArchive, type ImportOptions } from "./import.js";
export { ImportSession } from "./session.js";
export { dryRunImport, type DryRunResult, type TagCheck } from "./dry-run.js";
export {
  inspectArchive,
  type InspectOptions,
  type InspectResult,
} from "./inspect.js";
export type {
  EventListener,
  Failure,
  ImportEvent,
  ImportResult,
  LoadedImage,
  Phase,
  PublishedList,
  PublishedReference,
  WrittenChart,
} from "./events.js";
export type {
  Plan,
  PlannedChart,
  PlannedList,
  PlannedReference,
  SkippedItem,
} from "./plan.js";
export type {
  ChartSpec,
  ImageSpec,
  Platform,
  PublishManifest,
  ReferenceSpec,
} from "./manifest/model.js";
export { PpaLoadError, ExitCode, type ErrorCode } from "./errors.js";
export { RegistryError } from "./registry/errors.js";
export { DockerEngine } from "./publish/docker-engine.js";
