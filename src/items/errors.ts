/**
 * The one error type of the item catalogue: loading a file, validating its rows and checking an
 * embedding that arrives on the `item-embeddings` topic. Each carries a code to classify it by
 * and, where known, the place of the bad data (file, line, row, item id), both as fields and
 * spelled out in the message so a user can go straight to the row.
 *
 * Lines are 1-based, as an editor counts them; rows are 0-based, as NumPy indexes them.
 */

/** What went wrong, stable across releases; classify by this, never by the message. */
export type CatalogueErrorCode =
  /** The input cannot be read as a catalogue: bad header, bad JSON, missing id, count mismatch. */
  | 'ITEMS_FORMAT'
  /** A vector's length differs from the catalogue's dimension or from the one expected. */
  | 'ITEMS_DIMENSION'
  /** A component is NaN or infinite, or overflows float32. */
  | 'ITEMS_NON_FINITE'
  /** A vector has no direction: its norm is zero up to the tolerance in `transform.ts`. */
  | 'ITEMS_ZERO_VECTOR'
  /** Two rows share an item id. */
  | 'ITEMS_DUPLICATE_ID'
  /** The file system refused: missing file, permission, read failure. `cause` has the details. */
  | 'ITEMS_IO';

/** Where the bad data is. Every field is optional; those present appear in the message. */
export interface CatalogueLocation {
  readonly file?: string;
  /** 1-based line of a text file (JSONL, ids file). */
  readonly line?: number;
  /** 0-based row of the catalogue. */
  readonly row?: number;
  readonly id?: string;
}

export class CatalogueError extends Error {
  readonly code: CatalogueErrorCode;
  readonly location: CatalogueLocation;
  /** The problem alone, without the location prefix that `message` adds. */
  readonly detail: string;

  constructor(
    code: CatalogueErrorCode,
    detail: string,
    location: CatalogueLocation = {},
    options: { cause?: unknown } = {},
  ) {
    super(
      formatMessage(detail, location),
      options.cause === undefined ? undefined : { cause: options.cause },
    );
    this.name = 'CatalogueError';
    this.code = code;
    this.location = location;
    this.detail = detail;
  }
}

/** `file:line (row r, id "x"): detail`, leaving out whatever is unknown. */
function formatMessage(detail: string, location: CatalogueLocation): string {
  const { file, line, row, id } = location;
  const place = file === undefined ? '' : line === undefined ? file : `${file}:${line}`;
  const within: string[] = [];
  if (row !== undefined) within.push(`row ${row}`);
  if (id !== undefined) within.push(`id ${JSON.stringify(id)}`);

  const prefix = [place, within.length > 0 ? `(${within.join(', ')})` : '']
    .filter((part) => part !== '')
    .join(' ');
  return prefix === '' ? detail : `${prefix}: ${detail}`;
}
