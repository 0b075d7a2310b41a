/**
 * The evaluation protocol on small synthetic logs: which events become queries and which items
 * may be negatives (queries.ts), and a whole `runEvaluation` on a log where the embeddings carry
 * the users' taste by construction, so embedding features must beat the baseline.
 */
import assert from 'node:assert/strict';
import { mkdtemp, readFile, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { test } from 'node:test';
import type { TestContext } from 'node:test';
import type { InteractionEvent } from '../../src/events/types.js';
import { parseSignals } from '../../src/events/types.js';
import { runEvaluation } from '../../src/offline/evaluate.js';
import { DEFAULT_EXCLUSION, buildQueries, indexLog } from '../../src/offline/queries.js';
import type { EvaluationReport } from '../../src/offline/report.js';
import { tasteOptions, writeTasteLog } from '../helpers/taste-log.js';

const SIGNALS = parseSignals('like:+3,dislike:-3');
const DAY_MS = 86_400_000;

function event(user: string, item: string, day: number, type = 'like'): InteractionEvent {
  return { user, item, ts: day * DAY_MS, type };
}

const CATALOGUE = {
  ids: Array.from({ length: 30 }, (_, i) => `i${i}`),
  has: (item: string) => /^i\d+$/.test(item) && Number(item.slice(1)) < 30,
};

test('queries: positives of the period with an earlier event; whole-log: negatives never seen by the user', () => {
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
    exclusion: { rule: 'whole-log' as const, windowMs: 0 },
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

test('point-in-time exclusion: items rated after the window may be negatives, earlier ones not', () => {
  const events = [
    event('a', 'i0', 1),
    event('a', 'i1', 10), // the query
    { ...event('a', 'i2', 10), ts: 10.5 * DAY_MS }, // the same session: excluded
    event('a', 'i3', 11), // exactly at the end of the window: excluded
    event('a', 'i4', 12, 'dislike'), // after the window: may be a negative
    event('a', 'i5', 40), // long after: may be a negative
  ];
  const log = indexLog(events, SIGNALS);
  const period = { name: 'test' as const, startMs: 10 * DAY_MS, endMs: 11 * DAY_MS };
  // 30 catalogue items and 100 wanted: 5,000 uniform draws take every eligible item.
  const options = {
    negatives: 'uniform' as const,
    exclusion: { rule: 'point-in-time' as const, windowMs: DAY_MS },
    negativesPerPositive: 100,
    seed: 1,
    maxQueries: 100,
  };
  const first = buildQueries(log, period, CATALOGUE, options).queries[0]!;
  assert.equal(first.atMs, 10 * DAY_MS);
  const expected = CATALOGUE.ids.filter((id) => !['i0', 'i1', 'i2', 'i3'].includes(id));
  assert.deepEqual([...first.candidates.slice(1)].sort(), expected.sort());

  const wholeLog = { ...options, exclusion: { rule: 'whole-log' as const, windowMs: 0 } };
  const strict = buildQueries(log, period, CATALOGUE, wholeLog).queries[0]!;
  for (const item of ['i4', 'i5']) assert.ok(!strict.candidates.includes(item), item);
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
    exclusion: DEFAULT_EXCLUSION,
    negativesPerPositive: 100,
    seed: 1,
    maxQueries: 100,
  };
  const queries = buildQueries(log, period, CATALOGUE, options);
  assert.deepEqual(queries.queries[0]!.candidates, ['i1', 'i6']);
});

async function workspace(t: TestContext): Promise<string> {
  const dir = await mkdtemp(join(tmpdir(), 'affinity-evaluate-'));
  t.after(() => rm(dir, { recursive: true, force: true }));
  return dir;
}

test('runEvaluation writes the three reports; embeddings beat the baseline on a taste log', async (t) => {
  const dir = await workspace(t);
  await writeTasteLog(dir);
  const stages: string[] = [];
  await runEvaluation(
    tasteOptions(dir, stages, { maxQueriesPerPeriod: 400, bootstrapResamples: 100 }),
  );

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
