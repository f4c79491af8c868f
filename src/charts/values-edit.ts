/**
 * In-place edits of scalar values in YAML text. Only the characters of each
 * targeted scalar change (an empty null value also gets a space before it),
 * so comments, key order, blank lines, indentation, line endings, anchors and
 * flow style stay byte for byte as they were.
 *
 * The `yaml` package (eemeli/yaml) gives every node its source range, which
 * js-yaml does not, so it parses here. Values are resolved as YAML 1.1
 * (`yes` and `on` are booleans), as go-yaml v2 in Helm resolves them.
 */
import { createRequire } from "node:module";
import type { Document, Node, Scalar } from "yaml";

type YamlModule = typeof import("yaml");

let yamlModule: YamlModule | undefined;

/**
 * Returns the `yaml` package, loaded on first use. Loading it takes about
 * 8 MB of memory, which an import needs only once it rewrites a chart.
 */
export function yaml(): YamlModule {
  yamlModule ??= createRequire(import.meta.url)("yaml") as YamlModule;
  return yamlModule;
}

export type ScalarEditStatus =
  /** The scalar was given the new value. */
  | "changed"
  /** `replace` returned undefined or the current value. */
  | "unchanged"
  /** The path does not exist; nothing is created. */
  | "missing"
  /** The value is a map, list, number, boolean or null. */
  | "not-a-string"
  /** The value, or a map on the path, is an alias or comes from a `<<` merge key. */
  | "alias"
  /** A map on the path has the same key more than once. */
  | "duplicate-key"
  /** The value is a block scalar (`|` or `>`), which is not rewritten. */
  | "block-scalar";

export type ScalarStyle = "plain" | "single" | "double";

export interface ScalarEdit {
  /** Keys from the top of the document down, e.g. `["image", "repository"]`. */
  path: string[];
  /**
   * Returns the new value for the current one, or undefined to keep it. It is
   * called with the current string, or with null when `acceptNull` is set and
   * the value is null (`key:`, `key: ~`).
   */
  replace: (current: string | null) => string | undefined;
  acceptNull?: boolean;
}

export interface ScalarEditResult {
  path: string[];
  status: ScalarEditStatus;
  /** The current value, when it is a string (or null with `acceptNull`). */
  from?: string | null;
  /** The new value, when the status is "changed". */
  to?: string;
  /** The style the new value was written in, when the status is "changed". */
  style?: ScalarStyle;
  /** A description of the value found, for every status but "changed" and "unchanged". */
  detail?: string;
  /**
   * When the status is "changed" and the scalar has an anchor: the paths of
   * the aliases (`*NAME`) of that anchor, which take the new value too.
   */
  aliasedAt?: string[];
}

/** A YAML text that does not parse, so no scalar of it can be located. */
export class InvalidYamlError extends Error {
  constructor(message: string) {
    super(message);
    this.name = "InvalidYamlError";
  }
}

/** The node a path leads to in a document, or the reason it leads nowhere. */
type Located =
  | { kind: "scalar"; node: Scalar; inFlow: boolean }
  | { kind: "other"; status: ScalarEditStatus; detail: string; node?: Node };

interface Replacement {
  start: number;
  end: number;
  text: string;
}

/**
 * Parses the first document of a YAML text. Helm reads values files with
 * sigs.k8s.io/yaml, which decodes the first document only, so later
 * documents are never looked at. Returns undefined for a text without a
 * document.
 */
function firstDocument(text: string): Document.Parsed | undefined {
  let document =
    lastParsed?.text === text ? lastParsed.document.deref() : undefined;
  if (!document) {
    // Composing stops after the first document, so later ones are not parsed.
    const composer = new (yaml().Composer)({
      version: "1.1",
      uniqueKeys: false,
    });
    for (const parsed of composer.compose(new (yaml().Parser)().parse(text))) {
      document = parsed;
      break;
    }
    if (!document) return undefined;
    lastParsed = { text, document: new WeakRef(document) };
  }
  const [error] = document.errors;
  if (error) throw new InvalidYamlError(`invalid YAML: ${error.message}`);
  return document;
}

/**
 * The text parsed last and its first document. A chart's values are read
 * several times in a row (each key is looked up, then edited), and a large
 * values file is slow to parse: about 1 s for 100 000 lines in one
 * measurement. The weak reference lets the collector free the document
 * once the chart is done.
 */
let lastParsed:
  { text: string; document: WeakRef<Document.Parsed> } | undefined;

function describeNode(node: unknown): string {
  if (yaml().isMap(node)) return "a map";
  if (yaml().isSeq(node)) return "a list";
  if (yaml().isAlias(node)) return `an alias of &${node.source}`;
  if (yaml().isScalar(node)) {
    if (node.value === null) return "null";
    if (typeof node.value === "string") return "a string";
    if (typeof node.value === "boolean") return `a boolean (${node.value})`;
    if (typeof node.value === "number" || typeof node.value === "bigint") {
      return `a number (${String(node.value)})`;
    }
    return `a ${typeof node.value}`;
  }
  return "empty";
}

function keyText(key: unknown): string | undefined {
  if (!yaml().isScalar(key)) return undefined;
  // YAML 1.1 parses the merge key `<<` to a symbol; its source is `<<`.
  if (typeof key.value === "symbol") return key.source;
  return String(key.value);
}

/** Follows a path of keys from the document's root to its value. */
function locate(
  document: Document.Parsed | undefined,
  path: string[],
): Located {
  let node: unknown = document?.contents;
  let inFlow = false;
  for (let depth = 0; depth < path.length; depth += 1) {
    const key = path[depth];
    const where = path.slice(0, depth).join(".") || "the document";
    if (yaml().isAlias(node)) {
      return {
        kind: "other",
        status: "alias",
        detail: `${where} is an alias of &${node.source}`,
      };
    }
    if (!yaml().isMap(node)) {
      return {
        kind: "other",
        status: "missing",
        detail: `${where} is ${describeNode(node)}, not a map`,
      };
    }
    inFlow ||= Boolean(node.flow);
    const pairs = node.items.filter((pair) => keyText(pair.key) === key);
    if (pairs.length > 1) {
      return {
        kind: "other",
        status: "duplicate-key",
        detail: `${[...path.slice(0, depth), key].join(".")} is defined ${pairs.length} times`,
      };
    }
    if (pairs.length === 0) {
      const merged = node.items.some((pair) => keyText(pair.key) === "<<");
      return merged
        ? {
            kind: "other",
            status: "alias",
            detail: `${where} has no key ${key} of its own, only a << merge key`,
          }
        : {
            kind: "other",
            status: "missing",
            detail: `${where} has no key ${key}`,
          };
    }
    node = yaml().isPair(pairs[0]) ? pairs[0].value : undefined;
  }
  if (yaml().isAlias(node)) {
    return {
      kind: "other",
      status: "alias",
      detail: describeNode(node),
      node,
    };
  }
  if (yaml().isScalar(node)) {
    return { kind: "scalar", node, inFlow };
  }
  return {
    kind: "other",
    status: "not-a-string",
    detail: describeNode(node),
    node: node as Node | undefined,
  };
}

/**
 * Reads the value at a path of the first document, as a plain JavaScript
 * value, or reports that the path does not exist. Aliases are not followed.
 */
export function readYamlValue(
  text: string,
  path: string[],
): { found: true; value: unknown } | { found: false; detail: string } {
  const located = locate(firstDocument(text), path);
  if (located.kind === "scalar") {
    return { found: true, value: located.node.value };
  }
  if (located.status === "not-a-string" && located.node) {
    return { found: true, value: located.node.toJSON() };
  }
  if (located.status === "missing" || located.status === "duplicate-key") {
    return { found: false, detail: located.detail };
  }
  return { found: true, value: undefined };
}

/** Checks whether a path exists in the first document, whatever its value. */
export function hasYamlPath(text: string, path: string[]): boolean {
  const located = locate(firstDocument(text), path);
  return located.kind === "scalar" || located.status !== "missing";
}

function isNullSource(source: string): boolean {
  return ["", "~", "null", "Null", "NULL"].includes(source);
}

/** Checks whether a value reads back as the same string when written plain. */
function fitsPlain(value: string, inFlow: boolean): boolean {
  if (value === "" || value.trim() !== value) return false;
  if (/[\u0000-\u001f\u007f-\u009f\u2028\u2029\ufeff]/.test(value)) {
    return false;
  }
  if (/^[-?:,[\]{}#&*!|>'"%@`]/.test(value)) return false;
  if (value.includes(": ") || value.includes(" #") || value.endsWith(":")) {
    return false;
  }
  if (inFlow && /[,[\]{}]/.test(value)) return false;
  // A plain scalar that resolves to a number, boolean, null or date in either
  // YAML version would change type.
  for (const version of ["1.1", "1.2"] as const) {
    const document = yaml().parseDocument(value, { version });
    if (document.errors.length > 0 || document.warnings.length > 0) {
      return false;
    }
    if (document.toJS() !== value) return false;
  }
  return true;
}

/** Writes a double-quoted scalar, escaping what YAML requires. */
export function doubleQuoted(value: string): string {
  let out = '"';
  for (const char of value) {
    const code = char.codePointAt(0)!;
    if (char === '"') out += '\\"';
    else if (char === "\\") out += "\\\\";
    else if (char === "\n") out += "\\n";
    else if (char === "\t") out += "\\t";
    else if (char === "\r") out += "\\r";
    else if (code < 0x20 || (code >= 0x7f && code <= 0x9f)) {
      out += `\\x${code.toString(16).padStart(2, "0")}`;
    } else if (code === 0x2028 || code === 0x2029 || code === 0xfeff) {
      out += `\\u${code.toString(16)}`;
    } else out += char;
  }
  return `${out}"`;
}

function singleQuoted(value: string): string | undefined {
  // A line break in a single-quoted scalar folds, and it has no escapes for
  // control characters, so such values go double-quoted instead.
  if (/[\u0000-\u001f\u007f-\u009f\u2028\u2029\ufeff]/.test(value)) {
    return undefined;
  }
  return `'${value.replaceAll("'", "''")}'`;
}

/** Renders a new value in the style of the scalar it replaces. */
function render(
  value: string,
  type: Scalar["type"],
  inFlow: boolean,
): { text: string; style: ScalarStyle } {
  if (type === yaml().Scalar.QUOTE_SINGLE) {
    const text = singleQuoted(value);
    if (text !== undefined) return { text, style: "single" };
  }
  if (type === yaml().Scalar.PLAIN && fitsPlain(value, inFlow)) {
    return { text: value, style: "plain" };
  }
  return { text: doubleQuoted(value), style: "double" };
}

function applyEdit(
  text: string,
  document: Document.Parsed | undefined,
  edit: ScalarEdit,
  pending: Map<Scalar, Replacement & { value: string }>,
): ScalarEditResult {
  const path = edit.path;
  const located = locate(document, path);
  if (located.kind === "other") {
    return { path, status: located.status, detail: located.detail };
  }
  const { node, inFlow } = located;
  const [start, end] = node.range!;
  const source = text.slice(start, end);
  const earlier = pending.get(node);
  let current: string | null;
  if (earlier) {
    current = earlier.value;
  } else if (typeof node.value === "string") {
    if (
      node.type === yaml().Scalar.BLOCK_LITERAL ||
      node.type === yaml().Scalar.BLOCK_FOLDED
    ) {
      return {
        path,
        status: "block-scalar",
        from: node.value,
        detail: "a block scalar (| or >)",
      };
    }
    current = node.value;
  } else if (node.value === null && edit.acceptNull && isNullSource(source)) {
    current = null;
  } else {
    return { path, status: "not-a-string", detail: describeNode(node) };
  }

  const value = edit.replace(current);
  if (value === undefined || value === current) {
    return { path, status: "unchanged", from: current };
  }
  let { text: rendered, style } = render(
    value,
    current === null ? yaml().Scalar.PLAIN : node.type,
    inFlow,
  );
  // An empty null (`key:`) has no characters of its own: the new value goes
  // right after the colon, with a space unless one is already there.
  if (source === "" && !/[ \t]/.test(text[start - 1] ?? "")) {
    rendered = ` ${rendered}`;
  }
  pending.set(node, { start, end, text: rendered, value });
  const aliasedAt = aliasPaths(document, node);
  return {
    path,
    status: "changed",
    from: current,
    to: value,
    style,
    ...(aliasedAt.length > 0 ? { aliasedAt } : {}),
  };
}

/**
 * Returns the dotted key paths of the aliases that resolve to a node: to an
 * anchor on the node itself or on a map or list that contains it. An alias
 * refers to the last anchor of its name before it, so a later anchor of the
 * same name ends the ones that count.
 */
function aliasPaths(
  document: Document.Parsed | undefined,
  target: Node,
): string[] {
  const paths: string[] = [];
  if (!document) return paths;
  const anchored = new Set<unknown>();
  yaml().visit(document, (_key, node, ancestors) => {
    if (node !== target) return undefined;
    for (const candidate of [...ancestors, node]) {
      if (yaml().isNode(candidate) && candidate.anchor) anchored.add(candidate);
    }
    return yaml().visit.BREAK;
  });
  if (anchored.size === 0) return paths;
  /** Whether each anchor name refers to the node or a container of it now. */
  const current = new Map<string, boolean>();
  yaml().visit(document, (_key, node, ancestors) => {
    if (yaml().isAlias(node)) {
      if (!current.get(node.source)) return;
      const keys = ancestors.flatMap((ancestor) =>
        yaml().isPair(ancestor) ? [keyText(ancestor.key) ?? "?"] : [],
      );
      paths.push(keys.join(".") || "the document");
    } else if (yaml().isNode(node) && node.anchor) {
      current.set(node.anchor, anchored.has(node));
    }
  });
  return paths;
}

/**
 * Changes scalar values at dotted key paths of the first YAML document,
 * touching only the characters of each changed scalar. A quoted value keeps
 * its quotes and a plain one stays plain unless the new value needs quotes,
 * when it is written double-quoted. Keys that do not exist are reported and
 * never created, and values that are not strings, are aliases or sit behind
 * aliases are reported and left alone. Two edits of the same scalar apply in
 * order. Throws InvalidYamlError when the text does not parse.
 */
export function editYamlScalars(
  text: string,
  edits: ScalarEdit[],
): { text: string; results: ScalarEditResult[] } {
  const document = firstDocument(text);
  const pending = new Map<Scalar, Replacement & { value: string }>();
  const results = edits.map((edit) => applyEdit(text, document, edit, pending));
  const replacements = [...pending.values()].sort((a, b) => b.start - a.start);
  let edited = text;
  for (const { start, end, text: replacement } of replacements) {
    edited = edited.slice(0, start) + replacement + edited.slice(end);
  }
  return { text: edited, results };
}
