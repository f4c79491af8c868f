export { importArchive, type ImportOptions } from "./import.js";
export type { RetryOptions } from "./registry/client.js";
export { ImportSession } from "./session.js";
export { dryRunImport, type DryRunResult, type TagCheck } from "./dry-run.js";
export {
  inspectArchive,
  type InspectOptions,
  type InspectResult,
  type InspectedChart,
  type InspectedImage,
  type InspectedList,
  type InspectedManifest,
  type InspectedReference,
  type InspectedTarball,
  type InspectedTarget,
  type InspectedValueChange,
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
