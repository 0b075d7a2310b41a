/**
 * The evaluation protocol on small synthetic logs: which events become queries and which items
 * may be negatives (queries.ts), and a whole `runEvaluation` on a log where the embeddings carry
 * the users' taste by construction, so embedding features must beat the baseline.
 */
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, stat, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import type { TestContext } from 'node:test';
import { loadConfig } from '../../src/config/config.js';
import type { InteractionEvent } from '../../src/events/types.js';
import { parseSignals } from '../../src/events/types.js';
import { parseSignalMap } from '../../src/neural/events.js';
import { runEvaluation } from '../../src/offline/evaluate.js';
import { seededRandom } from '../../src/offline/metrics.js';
import { buildQueries, indexLog } from '../../src/offline/queries.js';
import type { EvaluationReport } from '../../src/offline/report.js';
import { methodSettings } from '../../src/offline/settings.js';

const SIGNALS = parseSignals('like:+3,dislike:-3');
const DAY_MS = 86_400_000;

function event(user: string, item: string, day: number, type = 'like'): InteractionEvent {
  return { user, item, ts: day * DAY_MS, type };
}

const CATALOGUE = {
  ids: Array.from({ length: 30 }, (_, i) => `i${i}`),
  has: (item: string) => /^i\d+$/.test(item) && Number(item.slice(1)) < 30,
};

test('queries: positives of the period with an earlier event; negatives never seen by the user', () => {
  const events = [
    event('a', 'i0', 1),
    event('a', 'i1', 10),
    event('a', 'i2', 11),
    event('a', 'i3', 12, 'dislike'),
    event('b', 'i4', 10), // b's first event: no earlier one, not a query
    event('a', 'zz', 11), // no embedding
  ];
  const log = indexLog(events, SIGNALS);
  const period = { name: 'test' as const, startMs: 10 * DAY_MS, endMs: 20 * DAY_MS };
  const options = {
    negatives: 'uniform' as const,
    negativesPerPositive: 20,
    seed: 1,
    maxQueries: 100,
  };
  const queries = buildQueries(log, period, CATALOGUE, options);

  assert.deepEqual(
    queries.queries.map((q) => [q.user, q.candidates[0], q.atMs / DAY_MS]),
    [
      ['a', 'i1', 10],
      ['a', 'i2', 11],
    ],
  );
  assert.equal(queries.counts.noEarlierEvent, 1);
  assert.equal(queries.counts.noEmbedding, 1);
  for (const query of queries.queries) {
    const negatives = query.candidates.slice(1);
    assert.equal(negatives.length, 20);
    assert.equal(new Set(negatives).size, 20);
    for (const item of ['i0', 'i1', 'i2', 'i3']) assert.ok(!negatives.includes(item));
  }
  assert.deepEqual([...queries.offsets], [0, 21]);
});

test("log negatives: the user's later negative events of the period, not ones already seen", () => {
  const events = [
    event('a', 'i0', 1),
    event('a', 'i5', 2, 'dislike'), // before the query: known, not a negative
    event('a', 'i1', 10),
    event('a', 'i5', 12, 'dislike'),
    event('a', 'i6', 13, 'dislike'),
    event('a', 'i7', 25, 'dislike'), // after the period
  ];
  const log = indexLog(events, SIGNALS);
  const period = { name: 'test' as const, startMs: 10 * DAY_MS, endMs: 20 * DAY_MS };
  const options = {
    negatives: 'log' as const,
    negativesPerPositive: 100,
    seed: 1,
    maxQueries: 100,
  };
  const queries = buildQueries(log, period, CATALOGUE, options);
  assert.deepEqual(queries.queries[0]!.candidates, ['i1', 'i6']);
});

/**
 * 60 users, each with a taste vector; items are random unit vectors in d = 8; a user likes the
 * items closest to their taste and dislikes the farthest, over 100 days.
 */
async function tasteLog(dir: string): Promise<void> {
  const random = seededRandom(5);
  const gaussian = () => Math.sqrt(-2 * Math.log(1 - random())) * Math.cos(2 * Math.PI * random());
  const items = Array.from({ length: 150 }, (_, i) => ({
    id: `i${i}`,
    embedding: Array.from({ length: 8 }, gaussian),
  }));
  const lines = ['user_id,item_id,timestamp,signal'];
  for (let u = 0; u < 60; u++) {
    const taste = Array.from({ length: 8 }, gaussian);
    const score = (e: number[]) => e.reduce((sum, x, k) => sum + x * taste[k]!, 0);
    const ranked = [...items].sort((a, b) => score(b.embedding) - score(a.embedding));
    for (let n = 0; n < 40; n++) {
      const liked = n % 4 !== 3;
      const pool = liked ? ranked.slice(0, 40) : ranked.slice(-40);
      const item = pool[Math.floor(random() * pool.length)]!;
      const ts = Math.floor(random() * 100 * 86_400);
      lines.push(`u${u},${item.id},${ts},${liked ? 5 : 1}`);
    }
  }
  await writeFile(join(dir, 'events.csv'), `${lines.join('\n')}\n`);
  await writeFile(join(dir, 'items.jsonl'), items.map((item) => JSON.stringify(item)).join('\n'));
}

async function workspace(t: TestContext): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'affinity-evaluate-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

test('runEvaluation writes the three reports; embeddings beat the baseline on a taste log', async (t) => {
  const dir = await workspace(t);
  await tasteLog(dir);
  const stages: string[] = [];
  await runEvaluation({
    events: {
      path: join(dir, 'events.csv'),
      timestampUnit: 's',
      signalMap: parseSignalMap('like:>=4,dislike:<=2'),
    },
    itemsPath: join(dir, 'items.jsonl'),
    catalogue: { center: false, normalize: true },
    outDir: join(dir, 'out'),
    settings: methodSettings(loadConfig({})),
    negatives: 'popularity',
    negativesPerPositive: 20,
    seed: 1,
    maxQueriesPerPeriod: 400,
    bootstrapResamples: 100,
    sweep: false,
    validationFraction: 0.3,
    testFraction: 0.3,
    onProgress: (progress) => stages.push(progress.stage),
  });

  for (const name of ['report.md', 'report.svg', 'report.json'])
    assert.ok((await stat(join(dir, 'out', name))).size > 0, name);
  const report = JSON.parse(
    await readFile(join(dir, 'out', 'report.json'), 'utf8'),
  ) as EvaluationReport;
  assert.deepEqual(
    report.rankers.map((ranker) => ranker.set),
    ['baseline', '+agg', '+dual'],
  );
  const [baseline, agg] = report.rankers;
  assert.ok(agg!.test.auc.value > baseline!.test.auc.value + 0.1, JSON.stringify(report.rankers));
  assert.ok(agg!.delta!.auc.low > 0, 'the gain of +agg has an interval above 0');
  assert.ok(stages.includes('report written'));
  assert.match(await readFile(join(dir, 'out', 'report.svg'), 'utf8'), /^<svg /);
});
