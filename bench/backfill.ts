/**
 * Replay speed of the backfill (src/offline/replay.ts): events per second replayed through
 * `applyEvents`, and requests per second answered (the reader's fold, the dual solve when the
 * user changed, and `computeFeatures`), for method 1 alone and for methods 1 and 2.
 *
 * Synthetic data, no I/O: a catalogue of 10,000 random unit vectors at d = 384, U users (default
 * 1,000) with E events each (default 100, so 100,000 events) of the default signal types spread
 * over 30 days, and R request rows per user (default 5) at random times in that span, one
 * candidate each (a typical training-set backfill: every row its own time, so with method 2
 * every request finds a changed user and costs a solve). Default settings otherwise
 * (AFFINITY_* unset: half-lives 1h,6h,365d, history 200 events).
 *
 * Events per second = events applied / time inside `applyEvents` (a user's events after their
 * last request are not replayed, nor counted); requests per second = rows / time answering.
 * Both run in this one Node thread (one core; V8's GC helpers aside). Each configuration is
 * run `--repeat` times (default 3) and the fastest kept, to damp a shared host.
 * Target: at least 100,000 events per second for method 1.
 *
 * Usage: npm run bench:backfill -- [--json] [--users=U] [--events-per-user=E]
 *        [--requests-per-user=R] [--dim=D] [--repeat=N]
 * Prints figures; asserts nothing.
 */
import { loadConfig } from '../src/config/config.js';
import type { InteractionEvent } from '../src/events/types.js';
import { OfflineCatalogue } from '../src/offline/catalogue.js';
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
  eventsPerSecond: number;
  requestsPerSecond: number;
  eventsApplied: number;
  requests: number;
  dualSolves: number;
  meanDualIterations: number | null;
  wallSeconds: number;
}

const ITEMS = 10_000;
const SPAN_MS = 30 * 86_400_000;
const START_MS = Date.UTC(2024, 0, 1);
const TYPES = ['click', 'like', 'purchase', 'dislike', 'skip'];
const TARGET_EVENTS_PER_SECOND = 100_000;

function main(): void {
  const options = parseOptions(process.argv.slice(2));
  log(options, `building ${ITEMS} items at d = ${options.dim} and the log`);
  const catalogue = syntheticCatalogue(options.dim, 1);
  const events = syntheticEvents(options, 2);
  const requests = syntheticRequests(options, 3);
  const base = methodSettings(loadConfig({}));

  const method1 = measure(
    options,
    events,
    requests,
    catalogue,
    withOverrides(base, { dual: { enabled: false } }),
  );
  log(options, `method 1: ${method1.eventsPerSecond.toFixed(0)} events/s`);
  const methods12 = measure(options, events, requests, catalogue, base);
  report(options, method1, methods12);
}

function measure(
  options: Options,
  events: InteractionEvent[],
  requests: RequestGroup[],
  catalogue: OfflineCatalogue,
  settings: MethodSettings,
): RunFigures {
  let best: RunFigures | null = null;
  for (let run = 0; run < options.repeat; run++) {
    const started = performance.now();
    const stats = replay(events, requests, { settings, catalogue, neural: null }, () => {});
    const figures = figuresOf(stats, (performance.now() - started) / 1000);
    if (!best || figures.eventsPerSecond > best.eventsPerSecond) best = figures;
  }
  return best!;
}

function figuresOf(stats: ReplayStats, wallSeconds: number): RunFigures {
  return {
    eventsPerSecond: stats.eventsApplied / (stats.applyMs / 1000),
    requestsPerSecond: stats.candidates / (stats.answerMs / 1000),
    eventsApplied: stats.eventsApplied,
    requests: stats.candidates,
    dualSolves: stats.dualSolves,
    meanDualIterations: stats.dualSolves === 0 ? null : stats.dualIterations / stats.dualSolves,
    wallSeconds,
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
  const result = {
    dim: options.dim,
    items: ITEMS,
    users: options.users,
    events: options.users * options.eventsPerUser,
    requests: options.users * options.requestsPerUser,
    method1,
    methods12,
    target: `method 1 replays at least ${TARGET_EVENTS_PER_SECOND} events/s`,
    targetMet: method1.eventsPerSecond >= TARGET_EVENTS_PER_SECOND,
  };
  if (options.json) {
    console.log(JSON.stringify(result, null, 2));
    return;
  }
  console.log(
    `\nd = ${options.dim}, ${result.events} events, ${result.requests} requests, ${ITEMS} items, one thread`,
  );
  console.log('methods       events/s   requests/s   dual solves   CG iterations   wall s');
  for (const [name, run] of [
    ['1', method1],
    ['1+2', methods12],
  ] as const) {
    const iterations = run.meanDualIterations === null ? '-' : run.meanDualIterations.toFixed(1);
    console.log(
      `${name.padEnd(8)} ${run.eventsPerSecond.toFixed(0).padStart(11)} ${run.requestsPerSecond.toFixed(0).padStart(12)} ` +
        `${String(run.dualSolves).padStart(13)} ${iterations.padStart(15)} ${run.wallSeconds.toFixed(2).padStart(8)}`,
    );
  }
  console.log(
    `target ≥ ${TARGET_EVENTS_PER_SECOND} events/s for method 1: ${result.targetMet ? 'met' : 'NOT met'}`,
  );
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

main();
