/** Formats a count with its noun: `1 image`, `3 images`. */
export function countOf(
  count: number,
  singular: string,
  plural = `${singular}s`,
): string {
  return `${count} ${count === 1 ? singular : plural}`;
}

/**
 * Replaces control characters other than line feed and tab with escapes
 * such as `\x1b`, so that names from an archive cannot move the cursor,
 * retitle or clear the terminal when they are printed.
 */
export function printable(text: string): string {
  return text.replace(
    /[\u0000-\u0008\u000b-\u001f\u007f-\u009f]/g,
    (character) =>
      `\\x${character.charCodeAt(0).toString(16).padStart(2, "0")}`,
  );
}

/** Formats a time in milliseconds as seconds, with a tenth below ten seconds. */
export function formatSeconds(milliseconds: number): string {
  const seconds = milliseconds / 1000;
  return `${seconds < 10 ? seconds.toFixed(1) : Math.round(seconds)} s`;
}

/**
 * Prefixes a message with the item it is about, as `ITEM: MESSAGE`, unless
 * the message already starts with the item followed by a space or colon.
 */
export function withSubject(item: string, message: string): string {
  return message.startsWith(`${item}:`) || message.startsWith(`${item} `)
    ? message
    : `${item}: ${message}`;
}
