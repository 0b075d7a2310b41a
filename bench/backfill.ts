/**
 * Replay speed of the backfill (src/offline/replay.ts), for method 1 alone and for methods 1
 * and 2: events per second, measured three ways, and requests per second answered (the
 * reader's fold, the dual solve when the user changed, and `computeFeatures`).
 *
 * Synthetic data, no I/O: a catalogue of 10,000 random unit vectors at d = 384, U users (default
 * 1,000) with E events each (default 100, so 100,000 events) of the default signal types spread
 * over 30 days, and R request rows per user (default 5) at random times in that span, one
 * candidate each (a typical training-set backfill: every row its own time, so with method 2
 * every request finds a changed user and costs a solve). Default settings otherwise
 * (AFFINITY_* unset: half-lives 1h,6h,365d, history 200 events).
 *
 * Events per second:
 *  - `applyEventsPerSecond`: events applied / time inside `applyEvents` (a user's events after
 *    their last request are not replayed, nor counted). The update alone.
 *  - `replayEventsPerSecond`: events in the log / the `replay` call's wall time less its time
 *    answering requests: grouping the events by user, sorting them and applying them. What
 *    "events replayed per second" means here, and what the target is read on.
 *  - `replayWallEventsPerSecond`: events in the log / wall time of the whole `replay` call:
 *    grouping, sorting, applying and answering every request (so it falls as requests rise).
 *  - `withParsingEventsPerSecond`: events in the log / (reading them from a JSONL file with
 *    `readOfflineEvents`, as `affinity backfill` does, + the replay's wall time).
 * Requests per second = rows / time answering. Everything runs in this one Node thread (one
 * core; V8's GC helpers aside). Each configuration is run `--repeat` times (default 3) and the
 * run with the shortest replay wall time kept, to damp a shared host.
 * Target: at least 100,000 events per second replayed for method 1 (`replayEventsPerSecond`);
 * `targetMet` also says it for the other measures.
 *
 * Usage: npm run bench:backfill -- [--json] [--users=U] [--events-per-user=E]
 *        [--requests-per-user=R] [--dim=D] [--repeat=N]
 * Prints figures; asserts nothing.
 */
import { mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { loadConfig } from '../src/config/config.js';
import type { InteractionEvent } from '../src/events/types.js';
import { OfflineCatalogue } from '../src/offline/catalogue.js';
import { readOfflineEvents } from '../src/offline/inputs.js';
import { seededRandom } from '../src/offline/metrics.js';
import type { ReplayStats, RequestGroup } from '../src/offline/replay.js';
import { replay } from '../src/offline/replay.js';
import type { MethodSettings } from '../src/offline/settings.js';
import { methodSettings, withOverrides } from '../src/offline/settings.js';

interface Options {
  json: boolean;
  users: number;
  eventsPerUser: number;
  requestsPerUser: number;
  dim: number;
  repeat: number;
}

interface RunFigures {
  applyEventsPerSecond: number;
  replayEventsPerSecond: number;
  replayWallEventsPerSecond: number;
  withParsingEventsPerSecond: number;
  requestsPerSecond: number;
  /** Events in the log, the numerator of the wall-time rates. */
  events: number;
  /** Events before their user's last request, the numerator of `applyEventsPerSecond`. */
  eventsApplied: number;
  requests: number;
  dualSolves: number;
  meanDualIterations: number | null;
  parseSeconds: number;
  replayWallSeconds: number;
}

/** The synthetic log, in memory and as the JSONL file `affinity backfill` would read. */
interface SyntheticLog {
  readonly events: InteractionEvent[];
  readonly path: string;
}

const ITEMS = 10_000;
const SPAN_MS = 30 * 86_400_000;
const START_MS = Date.UTC(2024, 0, 1);
const TYPES = ['click', 'like', 'purchase', 'dislike', 'skip'];
const TARGET_EVENTS_PER_SECOND = 100_000;

async function main(): Promise<void> {
  const options = parseOptions(process.argv.slice(2));
  log(options, `building ${ITEMS} items at d = ${options.dim} and the log`);
  const catalogue = syntheticCatalogue(options.dim, 1);
  const requests = syntheticRequests(options, 3);
  const base = methodSettings(loadConfig({}));
  const dir = await mkdtemp(join(tmpdir(), 'affinity-bench-backfill-'));
  try {
    const events = await writeLog(syntheticEvents(options, 2), dir);
    const method1Settings = withOverrides(base, { dual: { enabled: false } });
    const method1 = await measure(options, events, requests, catalogue, method1Settings);
    log(options, `method 1: ${method1.applyEventsPerSecond.toFixed(0)} events/s in applyEvents`);
    const methods12 = await measure(options, events, requests, catalogue, base);
    report(options, method1, methods12);
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

async function writeLog(events: InteractionEvent[], dir: string): Promise<SyntheticLog> {
  const path = join(dir, 'events.jsonl');
  await writeFile(path, `${events.map((event) => JSON.stringify(event)).join('\n')}\n`);
  return { events, path };
}

async function measure(
  options: Options,
  synthetic: SyntheticLog,
  requests: RequestGroup[],
  catalogue: OfflineCatalogue,
  settings: MethodSettings,
): Promise<RunFigures> {
  let best: RunFigures | null = null;
  for (let run = 0; run < options.repeat; run++) {
    const parseSeconds = await timeParsing(synthetic.path, settings);
    const model = { settings, catalogue, neural: null };
    const stats = replay(synthetic.events, requests, model, () => {});
    const figures = figuresOf(stats, synthetic.events.length, parseSeconds);
    if (!best || figures.replayWallSeconds < best.replayWallSeconds) best = figures;
  }
  return best!;
}

/** Seconds to read the log file as `affinity backfill` does; the events read are dropped. */
async function timeParsing(path: string, settings: MethodSettings): Promise<number> {
  const started = performance.now();
  const { events } = await readOfflineEvents({ path, timestampUnit: 'ms' }, settings);
  const seconds = (performance.now() - started) / 1000;
  if (events.length === 0) throw new Error(`${path}: no event read back`);
  return seconds;
}

function figuresOf(stats: ReplayStats, events: number, parseSeconds: number): RunFigures {
  const replayWallSeconds = stats.wallMs / 1000;
  return {
    applyEventsPerSecond: stats.eventsApplied / (stats.applyMs / 1000),
    replayEventsPerSecond: events / ((stats.wallMs - stats.answerMs) / 1000),
    replayWallEventsPerSecond: events / replayWallSeconds,
    withParsingEventsPerSecond: events / (parseSeconds + replayWallSeconds),
    requestsPerSecond: stats.candidates / (stats.answerMs / 1000),
    events,
    eventsApplied: stats.eventsApplied,
    requests: stats.candidates,
    dualSolves: stats.dualSolves,
    meanDualIterations: stats.dualSolves === 0 ? null : stats.dualIterations / stats.dualSolves,
    parseSeconds,
    replayWallSeconds,
  };
}

/** Random unit vectors (Gaussian directions); G is computed by the first method-2 replay. */
function syntheticCatalogue(dim: number, seed: number): OfflineCatalogue {
  const random = seededRandom(seed);
  const vectors = new Float32Array(ITEMS * dim);
  for (let row = 0; row < ITEMS; row++) {
    let squares = 0;
    for (let k = 0; k < dim; k++) {
      const value = Math.sqrt(-2 * Math.log(1 - random())) * Math.cos(2 * Math.PI * random());
      vectors[row * dim + k] = value;
      squares += value * value;
    }
    const norm = Math.sqrt(squares);
    for (let k = 0; k < dim; k++) vectors[row * dim + k]! /= norm;
  }
  const ids = Array.from({ length: ITEMS }, (_, i) => `i${i}`);
  return new OfflineCatalogue(dim, ids, vectors, { center: false, normalize: true });
}

function syntheticEvents(options: Options, seed: number): InteractionEvent[] {
  const random = seededRandom(seed);
  const events: InteractionEvent[] = [];
  for (let u = 0; u < options.users; u++) {
    for (let e = 0; e < options.eventsPerUser; e++) {
      events.push({
        user: `u${u}`,
        item: `i${Math.floor(random() * ITEMS)}`,
        ts: START_MS + Math.floor(random() * SPAN_MS),
        type: TYPES[Math.floor(random() * TYPES.length)]!,
      });
    }
  }
  return events.sort((a, b) => a.ts - b.ts);
}

function syntheticRequests(options: Options, seed: number): RequestGroup[] {
  const random = seededRandom(seed);
  const requests: RequestGroup[] = [];
  for (let u = 0; u < options.users; u++) {
    for (let r = 0; r < options.requestsPerUser; r++) {
      const atMs = START_MS + Math.floor(random() * SPAN_MS) + 1;
      requests.push({ user: `u${u}`, atMs, items: [`i${Math.floor(random() * ITEMS)}`] });
    }
  }
  return requests;
}

function report(options: Options, method1: RunFigures, methods12: RunFigures): void {
  const meets = (rate: number) => rate >= TARGET_EVENTS_PER_SECOND;
  const result = {
    dim: options.dim,
    items: ITEMS,
    users: options.users,
    events: options.users * options.eventsPerUser,
    requests: options.users * options.requestsPerUser,
    method1,
    methods12,
    target: `method 1 replays at least ${TARGET_EVENTS_PER_SECOND} events/s`,
    targetMet: {
      replay: meets(method1.replayEventsPerSecond),
      applyEvents: meets(method1.applyEventsPerSecond),
      replayWall: meets(method1.replayWallEventsPerSecond),
      withParsing: meets(method1.withParsingEventsPerSecond),
    },
  };
  if (options.json) {
    console.log(JSON.stringify(result, null, 2));
    return;
  }
  printTable(result, method1, methods12);
}

function printTable(
  result: { dim: number; events: number; requests: number; targetMet: Record<string, boolean> },
  method1: RunFigures,
  methods12: RunFigures,
): void {
  const { dim, events, requests } = result;
  console.log(`\nd = ${dim}, ${events} events, ${requests} requests, ${ITEMS} items, one thread`);
  console.log(
    'methods   events/s: replayed   in apply   replay wall   with parsing   requests/s   CG iter.   wall s',
  );
  for (const [name, run] of [
    ['1', method1],
    ['1+2', methods12],
  ] as const) {
    const iterations = run.meanDualIterations === null ? '-' : run.meanDualIterations.toFixed(1);
    const cells = [
      name.padEnd(8),
      run.replayEventsPerSecond.toFixed(0).padStart(19),
      run.applyEventsPerSecond.toFixed(0).padStart(10),
      run.replayWallEventsPerSecond.toFixed(0).padStart(13),
      run.withParsingEventsPerSecond.toFixed(0).padStart(14),
      run.requestsPerSecond.toFixed(0).padStart(12),
      iterations.padStart(10),
      run.replayWallSeconds.toFixed(2).padStart(8),
    ];
    console.log(cells.join(' '));
  }
  const verdicts = Object.entries(result.targetMet).map(
    ([measure, met]) => `${measure} ${met ? 'met' : 'NOT met'}`,
  );
  console.log(`target ≥ ${TARGET_EVENTS_PER_SECOND} events/s for method 1: ${verdicts.join(', ')}`);
}

function parseOptions(args: readonly string[]): Options {
  const options: Options = {
    json: false,
    users: 1_000,
    eventsPerUser: 100,
    requestsPerUser: 5,
    dim: 384,
    repeat: 3,
  };
  for (const arg of args) {
    const [name, value] = arg.split('=');
    const number = Number(value);
    if (name === '--json') options.json = true;
    else if (name === '--users') options.users = number;
    else if (name === '--events-per-user') options.eventsPerUser = number;
    else if (name === '--requests-per-user') options.requestsPerUser = number;
    else if (name === '--dim') options.dim = number;
    else if (name === '--repeat') options.repeat = number;
    else
      throw new Error(
        `unknown argument ${arg}; expected --json, --users=U, --events-per-user=E, --requests-per-user=R, --dim=D, --repeat=N`,
      );
  }
  return options;
}

function log(options: Options, message: string): void {
  if (!options.json) console.error(message);
}

await main();
