import assert from 'node:assert/strict';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { after, before, describe, it } from 'node:test';
import { gzipSync } from 'node:zlib';

import { CatalogueError } from '../../src/items/errors.js';
import type { CatalogueErrorCode } from '../../src/items/errors.js';
import { loadCatalogue } from '../../src/items/loaders.js';

// Four items of dim 3, every value exact in float32, so each format must give these bits.
const IDS = ['10', '20', '30', '40'];
const ROWS = [
  [1, 0.5, -2],
  [0.25, 3, 1.5],
  [-1, -0.75, 0.125],
  [2, 2, -4],
];
const EXPECTED = Float32Array.from(ROWS.flat());

let root: string;
let fixtureCount = 0;

before(async () => {
  root = await mkdtemp(join(tmpdir(), 'affinity-loaders-'));
});

after(async () => {
  await rm(root, { recursive: true, force: true });
});

/** A fresh directory for one test's files. */
async function scratch(): Promise<string> {
  const dir = join(root, `case-${fixtureCount++}`);
  await mkdir(dir);
  return dir;
}

function float32Bytes(rows: readonly (readonly number[])[]): Buffer {
  const values = rows.flat();
  const bytes = Buffer.alloc(values.length * 4);
  values.forEach((x, i) => bytes.writeFloatLE(x, 4 * i));
  return bytes;
}

interface FolderFixture {
  ids?: string;
  rows?: readonly (readonly number[])[];
  meta?: Record<string, unknown>;
}

async function writeFolder(fixture: FolderFixture = {}): Promise<string> {
  const dir = await scratch();
  const rows = fixture.rows ?? ROWS;
  const meta = { count: rows.length, dim: rows[0]!.length, dtype: 'float32', ...fixture.meta };
  await writeFile(join(dir, 'items.json'), JSON.stringify(meta));
  await writeFile(join(dir, 'items.ids.txt'), fixture.ids ?? `${IDS.join('\n')}\n`);
  await writeFile(join(dir, 'items.f32'), float32Bytes(rows));
  return dir;
}

interface NpyFixture {
  descr?: string;
  fortran?: boolean;
  shape?: string;
  version?: 1 | 2 | 3;
  rows?: readonly (readonly number[])[];
}

/**
 * A .npy file built by hand from the format spec (numpy/lib/format.py): magic, version, header
 * length (uint16 LE for 1.0, uint32 LE for 2.0 and 3.0), the dict padded with spaces and ended by
 * a newline so that the data starts at a multiple of 64 bytes, then the data.
 */
function npyBytes(fixture: NpyFixture = {}): Buffer {
  const rows = fixture.rows ?? ROWS;
  const descr = fixture.descr ?? '<f4';
  const version = fixture.version ?? 1;
  const shape = fixture.shape ?? `(${rows.length}, ${rows[0]!.length})`;
  const fortran = fixture.fortran === true ? 'True' : 'False';
  const dict = `{'descr': '${descr}', 'fortran_order': ${fortran}, 'shape': ${shape}, }`;

  const prefixBytes = version === 1 ? 10 : 12;
  const total = Math.ceil((prefixBytes + dict.length + 1) / 64) * 64;
  const header = `${dict.padEnd(total - prefixBytes - 1, ' ')}\n`;
  const prefix = Buffer.alloc(prefixBytes);
  prefix[0] = 0x93;
  prefix.write('NUMPY', 1, 'latin1');
  prefix[6] = version;
  prefix[7] = 0;
  if (version === 1) prefix.writeUInt16LE(header.length, 8);
  else prefix.writeUInt32LE(header.length, 8);

  const values = rows.flat();
  const itemBytes = descr.endsWith('8') ? 8 : 4;
  const data = Buffer.alloc(values.length * itemBytes);
  values.forEach((x, i) =>
    itemBytes === 8 ? data.writeDoubleLE(x, 8 * i) : data.writeFloatLE(x, 4 * i),
  );
  return Buffer.concat([prefix, Buffer.from(header, 'latin1'), data]);
}

async function writeNpy(fixture: NpyFixture = {}, ids = `${IDS.join('\n')}\n`): Promise<string> {
  const dir = await scratch();
  const file = join(dir, 'items.npy');
  await writeFile(file, npyBytes(fixture));
  await writeFile(join(dir, 'items.ids.txt'), ids);
  return file;
}

async function writeJsonl(lines: readonly string[], name = 'items.jsonl'): Promise<string> {
  const file = join(await scratch(), name);
  await writeFile(file, `${lines.join('\n')}\n`);
  return file;
}

function jsonlLines(): string[] {
  return ROWS.map((row, i) => JSON.stringify({ id: IDS[i], embedding: row }));
}

/** Awaits a CatalogueError with `code` whose message contains every fragment. */
async function rejectsWith(
  promise: Promise<unknown>,
  code: CatalogueErrorCode,
  ...fragments: string[]
): Promise<CatalogueError> {
  let caught: unknown;
  await assert.rejects(promise, (err) => {
    caught = err;
    return true;
  });
  assert.ok(caught instanceof CatalogueError, `expected a CatalogueError, got ${String(caught)}`);
  assert.equal(caught.code, code, caught.message);
  for (const fragment of fragments) {
    assert.ok(caught.message.includes(fragment), `"${caught.message}" lacks "${fragment}"`);
  }
  return caught;
}

describe('loadCatalogue: every format gives the same catalogue', () => {
  it('reads a folder', async () => {
    const catalogue = await loadCatalogue(await writeFolder());
    assert.deepEqual(catalogue, { dim: 3, ids: IDS, vectors: EXPECTED });
  });

  for (const version of [1, 2, 3] as const) {
    it(`reads a float32 .npy, format version ${version}.0, with the sibling ids file`, async () => {
      const catalogue = await loadCatalogue(await writeNpy({ version }));
      assert.deepEqual(catalogue, { dim: 3, ids: IDS, vectors: EXPECTED });
    });
  }

  it('reads a float64 .npy, rounding to float32', async () => {
    const rows = [...ROWS.slice(0, 3), [0.1, 1 / 3, -2.7]];
    const catalogue = await loadCatalogue(await writeNpy({ descr: '<f8', rows }));
    assert.deepEqual(catalogue.vectors.subarray(0, 9), EXPECTED.subarray(0, 9));
    assert.deepEqual([...catalogue.vectors.subarray(9)], [0.1, 1 / 3, -2.7].map(Math.fround));
  });

  it('takes the ids file from the ids option and detects .npy by its magic', async () => {
    const dir = await scratch();
    const file = join(dir, 'matrix.bin');
    await writeFile(file, npyBytes());
    await writeFile(join(dir, 'names.txt'), IDS.join('\r\n'));
    const catalogue = await loadCatalogue(file, { ids: join(dir, 'names.txt') });
    assert.deepEqual(catalogue, { dim: 3, ids: IDS, vectors: EXPECTED });
  });

  it('reads JSONL with either field names, blank lines and CRLF', async () => {
    const lines = [
      JSON.stringify({ id: '10', embedding: ROWS[0] }),
      '',
      `${JSON.stringify({ item: '20', vector: ROWS[1] })}\r`,
      '   ',
      JSON.stringify({ id: 30, embedding: ROWS[2] }),
      JSON.stringify({ item: '40', vector: ROWS[3], extra: true }),
    ];
    const catalogue = await loadCatalogue(await writeJsonl(lines));
    assert.deepEqual(catalogue, { dim: 3, ids: IDS, vectors: EXPECTED });
  });

  it('reads gzip-compressed JSONL, and JSONL under any name when told or sniffed', async () => {
    const dir = await scratch();
    const gz = join(dir, 'items.jsonl.gz');
    await writeFile(gz, gzipSync(`${jsonlLines().join('\n')}\n`));
    const plain = join(dir, 'catalogue.data');
    await writeFile(plain, `${jsonlLines().join('\n')}\n`);

    for (const catalogue of [
      await loadCatalogue(gz),
      await loadCatalogue(plain),
      await loadCatalogue(plain, { format: 'jsonl' }),
    ]) {
      assert.deepEqual(catalogue, { dim: 3, ids: IDS, vectors: EXPECTED });
    }
  });

  it('grows its buffer past the first thousand JSONL rows', async () => {
    const count = 2500;
    const lines = Array.from({ length: count }, (_, i) =>
      JSON.stringify({ id: `item-${i}`, embedding: [i + 1, -i, 0.5] }),
    );
    const catalogue = await loadCatalogue(await writeJsonl(lines));
    assert.equal(catalogue.ids.length, count);
    assert.equal(catalogue.vectors.length, count * 3);
    assert.deepEqual([...catalogue.vectors.subarray(3 * 2499)], [2500, -2499, 0.5]);
  });

  it('accepts a dim option that matches', async () => {
    const catalogue = await loadCatalogue(await writeFolder(), { dim: 3 });
    assert.equal(catalogue.dim, 3);
  });
});

describe('loadCatalogue: folder faults', () => {
  it('non-finite value names file, row, id and component', async () => {
    const rows = ROWS.map((row) => [...row]);
    rows[2]![1] = Number.NaN;
    const err = await rejectsWith(
      loadCatalogue(await writeFolder({ rows })),
      'ITEMS_NON_FINITE',
      'items.f32 (row 2, id "30")',
      'component 1',
    );
    assert.deepEqual(err.location.row, 2);
    assert.deepEqual(err.location.id, '30');
  });

  it('zero vector, exact or below 1e-12 * sqrt(dim)', async () => {
    for (const zero of [
      [0, 0, 0],
      [1e-13, 0, -1e-13],
    ]) {
      const rows = [ROWS[0]!, zero, ROWS[2]!, ROWS[3]!];
      await rejectsWith(
        loadCatalogue(await writeFolder({ rows })),
        'ITEMS_ZERO_VECTOR',
        'row 1, id "20"',
      );
    }
    const small = [ROWS[0]!, [1e-11, 0, 0], ROWS[2]!, ROWS[3]!];
    await loadCatalogue(await writeFolder({ rows: small }));
  });

  it('duplicate id names both lines', async () => {
    await rejectsWith(
      loadCatalogue(await writeFolder({ ids: '10\n20\n10\n40\n' })),
      'ITEMS_DUPLICATE_ID',
      'items.ids.txt:3 (row 2, id "10")',
      'first at row 0, line 1',
    );
  });

  it('empty id names its line', async () => {
    await rejectsWith(
      loadCatalogue(await writeFolder({ ids: '10\n \n30\n40\n' })),
      'ITEMS_FORMAT',
      'items.ids.txt:2 (row 1)',
      'empty id',
    );
  });

  it('ids count against items.json count', async () => {
    await rejectsWith(
      loadCatalogue(await writeFolder({ ids: '10\n20\n30\n' })),
      'ITEMS_FORMAT',
      'items.ids.txt',
      '3 ids',
      'count 4',
    );
  });

  it('items.json dim against the size of items.f32', async () => {
    await rejectsWith(
      loadCatalogue(await writeFolder({ meta: { dim: 5 } })),
      'ITEMS_DIMENSION',
      'items.f32',
      'dim 5',
    );
    await rejectsWith(
      loadCatalogue(await writeFolder({ meta: { count: 5 } })),
      'ITEMS_FORMAT',
      'count 5',
    );
  });

  it('dim option against the catalogue', async () => {
    await rejectsWith(loadCatalogue(await writeFolder(), { dim: 4 }), 'ITEMS_DIMENSION', 'dim 3');
  });

  it('dtype other than float32, and a missing member', async () => {
    await rejectsWith(
      loadCatalogue(await writeFolder({ meta: { dtype: 'float64' } })),
      'ITEMS_FORMAT',
      'items.json',
      '"float64"',
    );

    const dir = await writeFolder();
    await rm(join(dir, 'items.f32'));
    await rejectsWith(loadCatalogue(dir), 'ITEMS_FORMAT', 'items.f32', 'missing');
  });

  it('an empty catalogue', async () => {
    const dir = await scratch();
    await writeFile(join(dir, 'items.json'), '{"count":0,"dim":3,"dtype":"float32"}');
    await writeFile(join(dir, 'items.ids.txt'), '');
    await writeFile(join(dir, 'items.f32'), Buffer.alloc(0));
    await rejectsWith(loadCatalogue(dir), 'ITEMS_FORMAT', 'no items');
  });

  it('a path that does not exist is ITEMS_IO with the cause', async () => {
    const missing = join(root, 'does-not-exist');
    const err = await rejectsWith(loadCatalogue(missing), 'ITEMS_IO', missing);
    assert.equal((err.cause as NodeJS.ErrnoException).code, 'ENOENT');
  });
});

describe('loadCatalogue: .npy faults', () => {
  it('fortran order', async () => {
    await rejectsWith(
      loadCatalogue(await writeNpy({ fortran: true })),
      'ITEMS_FORMAT',
      'fortran_order',
    );
  });

  it('dtypes other than <f4 and <f8', async () => {
    for (const descr of ['<i4', '>f4', '<f2']) {
      await rejectsWith(
        loadCatalogue(await writeNpy({ descr })),
        'ITEMS_FORMAT',
        `dtype '${descr}'`,
      );
    }
  });

  it('shapes that are not 2-D', async () => {
    await rejectsWith(loadCatalogue(await writeNpy({ shape: '(12,)' })), 'ITEMS_FORMAT', '2-D');
  });

  it('a file without the magic', async () => {
    const dir = await scratch();
    await writeFile(join(dir, 'items.npy'), 'not numpy at all');
    await writeFile(join(dir, 'items.ids.txt'), IDS.join('\n'));
    await rejectsWith(loadCatalogue(join(dir, 'items.npy')), 'ITEMS_FORMAT', 'magic');
  });

  it('data shorter than the shape says', async () => {
    const file = await writeNpy();
    const dir = join(file, '..');
    const truncated = npyBytes().subarray(0, -12);
    await writeFile(join(dir, 'short.npy'), truncated);
    await writeFile(join(dir, 'short.ids.txt'), IDS.join('\n'));
    await rejectsWith(loadCatalogue(join(dir, 'short.npy')), 'ITEMS_FORMAT', 'holds 3 rows');
  });

  it('a float64 value that overflows float32', async () => {
    const rows = [...ROWS.slice(0, 3), [1e39, 0, 0]];
    await rejectsWith(
      loadCatalogue(await writeNpy({ descr: '<f8', rows })),
      'ITEMS_NON_FINITE',
      'items.npy (row 3, id "40")',
      'Infinity',
    );
  });

  it('no ids file, too few ids, and an ids option for another format', async () => {
    const dir = await scratch();
    await writeFile(join(dir, 'lonely.npy'), npyBytes());
    await rejectsWith(loadCatalogue(join(dir, 'lonely.npy')), 'ITEMS_FORMAT', 'lonely.ids.txt');

    await rejectsWith(
      loadCatalogue(await writeNpy({}, '10\n20\n30\n')),
      'ITEMS_FORMAT',
      '3 ids for 4 rows',
    );

    const folder = await writeFolder();
    await rejectsWith(
      loadCatalogue(folder, { ids: join(folder, 'items.ids.txt') }),
      'ITEMS_FORMAT',
      'ids file',
    );
  });

  it('duplicate id in the ids file', async () => {
    await rejectsWith(
      loadCatalogue(await writeNpy({}, '10\n20\n30\n20\n')),
      'ITEMS_DUPLICATE_ID',
      'items.ids.txt:4 (row 3, id "20")',
    );
  });
});

describe('loadCatalogue: JSONL faults', () => {
  it('dimension against the first row, counting blank lines', async () => {
    const lines = jsonlLines();
    lines.splice(1, 0, '');
    lines[3] = JSON.stringify({ id: '30', embedding: [1, 2] });
    await rejectsWith(
      loadCatalogue(await writeJsonl(lines)),
      'ITEMS_DIMENSION',
      'items.jsonl:4 (row 2, id "30")',
      'as on line 1',
    );
  });

  it('dimension against the dim option', async () => {
    await rejectsWith(
      loadCatalogue(await writeJsonl(jsonlLines()), { dim: 4 }),
      'ITEMS_DIMENSION',
      'items.jsonl:1 (row 0, id "10")',
      'dim option',
    );
  });

  it('broken JSON, bare NaN, non-objects, missing and empty ids, non-numbers', async () => {
    const cases: [string, CatalogueErrorCode, string][] = [
      ['{"id": "20", "embedding": [1, 2', 'ITEMS_FORMAT', 'not valid JSON'],
      ['{"id": "20", "embedding": [1, NaN, 3]}', 'ITEMS_NON_FINITE', 'id "20"'],
      ['{"id": "20", "embedding": [1, -Infinity, 3]}', 'ITEMS_NON_FINITE', 'NaN or Infinity'],
      ['[1, 2, 3]', 'ITEMS_FORMAT', 'not a JSON object'],
      ['{"embedding": [1, 2, 3]}', 'ITEMS_FORMAT', '"id"'],
      ['{"id": "", "embedding": [1, 2, 3]}', 'ITEMS_FORMAT', 'id ""'],
      ['{"id": 1.5, "embedding": [1, 2, 3]}', 'ITEMS_FORMAT', 'id 1.5'],
      ['{"id": "20", "embedding": []}', 'ITEMS_FORMAT', '"embedding"'],
      ['{"id": "20", "embedding": [1, "2", 3]}', 'ITEMS_FORMAT', 'component 1 is "2"'],
      ['{"id": "20", "embedding": [1, null, 3]}', 'ITEMS_FORMAT', 'component 1 is null'],
    ];
    for (const [line, code, fragment] of cases) {
      const lines = jsonlLines();
      lines[1] = line;
      await rejectsWith(loadCatalogue(await writeJsonl(lines)), code, 'items.jsonl:2', fragment);
    }
  });

  it('values that overflow float32', async () => {
    const lines = jsonlLines();
    lines[1] = '{"id": "20", "embedding": [1, 1e39, 3]}';
    await rejectsWith(
      loadCatalogue(await writeJsonl(lines)),
      'ITEMS_NON_FINITE',
      'items.jsonl:2 (row 1, id "20")',
      'component 1 is Infinity',
    );
  });

  it('zero vector', async () => {
    const lines = jsonlLines();
    lines[2] = '{"id": "30", "embedding": [0, 0, 0]}';
    await rejectsWith(
      loadCatalogue(await writeJsonl(lines)),
      'ITEMS_ZERO_VECTOR',
      'items.jsonl:3 (row 2, id "30")',
    );
  });

  it('duplicate id', async () => {
    const lines = jsonlLines();
    lines[2] = JSON.stringify({ item: 10, vector: [1, 1, 1] });
    await rejectsWith(
      loadCatalogue(await writeJsonl(lines)),
      'ITEMS_DUPLICATE_ID',
      'items.jsonl:3 (row 2, id "10")',
      'first at row 0, line 1',
    );
  });

  it('an empty file, an unrecognised file, a corrupt gzip file', async () => {
    await rejectsWith(loadCatalogue(await writeJsonl(['', ''])), 'ITEMS_FORMAT', 'no items');

    const dir = await scratch();
    await writeFile(join(dir, 'notes.txt'), 'hello');
    await rejectsWith(loadCatalogue(join(dir, 'notes.txt')), 'ITEMS_FORMAT', 'cannot tell');

    const gz = gzipSync(`${jsonlLines().join('\n')}\n`);
    await writeFile(join(dir, 'bad.jsonl.gz'), gz.subarray(0, 20));
    await rejectsWith(loadCatalogue(join(dir, 'bad.jsonl.gz')), 'ITEMS_IO', 'bad.jsonl.gz');
  });
});
