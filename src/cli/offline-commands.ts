/**
 * The offline subcommands: `backfill` (point-in-time features for request rows) and
 * `evaluate` (which method helps, on a chronological split). Both read the same AFFINITY_*
 * configuration as the workers; flags override the method parameters for one run. Each takes
 * `--help`; a malformed command line is a USAGE error (main.ts prints it and exits 2).
 */
import { parseArgs } from 'node:util';
import { loadConfig } from '../config/config.js';
import { formatDuration, parseDurationMs } from '../config/duration.js';
import { AffinityError } from '../errors.js';
import type { CatalogueFormat } from '../items/loaders.js';
import { parseSignalMap } from '../neural/events.js';
import type { BadRow } from '../neural/events.js';
import { runBackfill } from '../offline/backfill.js';
import { runEvaluation } from '../offline/evaluate.js';
import type { EvaluationProgress } from '../offline/evaluate.js';
import type { NegativeExclusion } from '../offline/queries.js';
import { DEFAULT_EXCLUSION } from '../offline/queries.js';
import type { MethodOverrides } from '../offline/settings.js';
import { methodSettings } from '../offline/settings.js';
import type { Logger } from '../ops/logger.js';
import { extraCommands } from './extra-commands.js';
import { commandLogger, printResult } from './output.js';

const COMMON_USAGE = `        [--signal-map SPEC|FILE.json] [--center] [--no-normalize] [--ids FILE]
        [--format folder|npy|jsonl] [--strict] [--half-lives 1h,6h,365d] [--history-max-events N]
        [--history-half-life 30d] [--thresholds 0,0.4] [--dual-a0 X] [--dual-lambda X]
        [--dual-nu X] [--dual-half-life 365d] [--no-dual]`;

/** What `--help` and a usage error print for one subcommand. */
interface CommandText {
  readonly name: string;
  /** The synopsis, as the command list in main.ts shows it. */
  readonly usage: string;
  /** What `--help` adds: defaults and where the details are. */
  readonly details: string;
}

const BACKFILL: CommandText = {
  name: 'backfill',
  usage: `  backfill --events FILE --items PATH --requests FILE --out FILE.jsonl|FILE.csv
        --timestamps s|ms [--request-timestamps s|ms] [--model DIR]
${COMMON_USAGE}
                                  point-in-time features for request rows user_id,item_id,timestamp[,label]`,
  details: `--request-timestamps defaults to --timestamps. The method parameters default to the
AFFINITY_* configuration (docs/configuration.md); docs/evaluation.md, "Backfill", has the rest.`,
};

const EVALUATE_DEFAULTS = {
  negatives: 'popularity',
  negativesPerPositive: '100',
  seed: '1',
  maxQueries: '3000',
  bootstrap: '1000',
} as const;

const EVALUATE: CommandText = {
  name: 'evaluate',
  usage: `  evaluate --events FILE --items PATH --out DIR --timestamps s|ms [--model DIR]
        [--negatives popularity|uniform|log] [--exclude point-in-time|whole-log]
        [--exclude-window 1d] [--negatives-per-positive N] [--seed N] [--max-queries N]
        [--bootstrap N] [--no-sweep] [--train-model DIR [--model-epochs N]]
${COMMON_USAGE}
                                  chronological evaluation of every method (raw and centred
                                  embeddings both, so --center is not needed); writes
                                  report.md, report.svg and report.json to DIR`,
  details: [
    `Defaults: --negatives ${EVALUATE_DEFAULTS.negatives} --exclude ${DEFAULT_EXCLUSION.rule}` +
      ` --exclude-window ${formatDuration(DEFAULT_EXCLUSION.windowMs)}`,
    `  --negatives-per-positive ${EVALUATE_DEFAULTS.negativesPerPositive}` +
      ` --seed ${EVALUATE_DEFAULTS.seed} --max-queries ${EVALUATE_DEFAULTS.maxQueries}` +
      ` --bootstrap ${EVALUATE_DEFAULTS.bootstrap}`,
    'The sweeps run unless --no-sweep.',
    '--exclude point-in-time keeps out of the sampled negatives the items the user rated',
    'before the query or up to --exclude-window after it; whole-log, every item the user rated',
    'anywhere in the log (it reads the future). The method parameters default to the',
    'AFFINITY_* configuration (docs/configuration.md); docs/evaluation.md has the protocol.',
  ].join('\n'),
};

extraCommands.push(
  { name: BACKFILL.name, usage: BACKFILL.usage, run: runBackfillCommand },
  { name: EVALUATE.name, usage: EVALUATE.usage, run: runEvaluateCommand },
);

const COMMON_OPTIONS = {
  help: { type: 'boolean', short: 'h', default: false },
  events: { type: 'string' },
  items: { type: 'string' },
  out: { type: 'string' },
  model: { type: 'string' },
  timestamps: { type: 'string' },
  'signal-map': { type: 'string' },
  center: { type: 'boolean', default: false },
  'no-normalize': { type: 'boolean', default: false },
  ids: { type: 'string' },
  format: { type: 'string' },
  strict: { type: 'boolean', default: false },
  'half-lives': { type: 'string' },
  'history-max-events': { type: 'string' },
  'history-half-life': { type: 'string' },
  thresholds: { type: 'string' },
  'dual-a0': { type: 'string' },
  'dual-lambda': { type: 'string' },
  'dual-nu': { type: 'string' },
  'dual-half-life': { type: 'string' },
  'no-dual': { type: 'boolean', default: false },
} as const;

type CommonValues = {
  [K in keyof typeof COMMON_OPTIONS]?: (typeof COMMON_OPTIONS)[K]['type'] extends 'boolean'
    ? boolean
    : string;
};

async function runBackfillCommand(args: readonly string[]): Promise<number> {
  const { values } = parsedOrUsage(BACKFILL, () =>
    parseArgs({
      args: [...args],
      options: {
        ...COMMON_OPTIONS,
        requests: { type: 'string' },
        'request-timestamps': { type: 'string' },
      },
    }),
  );
  if (values.help) return printHelp(BACKFILL);
  if (!values.events || !values.items || !values.requests || !values.out)
    throw commandUsage(BACKFILL, 'needs --events, --items, --requests and --out');

  const config = loadConfig();
  const logger = commandLogger('backfill', config.logLevel);
  const summary = await runBackfill({
    events: eventsInput(values),
    itemsPath: values.items,
    catalogue: catalogueOptions(values),
    requestsPath: values.requests,
    ...optional('requestTimestampUnit', values['request-timestamps'], timestampUnit),
    outPath: values.out,
    ...(values.model === undefined ? {} : { modelDir: values.model }),
    settings: methodSettings(config, overrides(values)),
    strict: values.strict,
    onProgress: backfillProgress(logger),
  });
  reportBadRows(logger, 'events', summary.events.badRowCount, summary.events.badRows);
  reportBadRows(logger, 'requests', summary.requests.badRowCount, summary.requests.badRows);
  // The bad rows went to stderr above; the summary keeps their counts.
  const events = { ...summary.events, badRows: undefined };
  const requests = { ...summary.requests, badRows: undefined };
  printResult(JSON.stringify({ ...summary, events, requests }));
  return 0;
}

async function runEvaluateCommand(args: readonly string[]): Promise<number> {
  const { values } = parsedOrUsage(EVALUATE, () =>
    parseArgs({
      args: [...args],
      options: {
        ...COMMON_OPTIONS,
        negatives: { type: 'string', default: EVALUATE_DEFAULTS.negatives },
        exclude: { type: 'string', default: DEFAULT_EXCLUSION.rule },
        'exclude-window': { type: 'string' },
        'negatives-per-positive': {
          type: 'string',
          default: EVALUATE_DEFAULTS.negativesPerPositive,
        },
        seed: { type: 'string', default: EVALUATE_DEFAULTS.seed },
        'max-queries': { type: 'string', default: EVALUATE_DEFAULTS.maxQueries },
        bootstrap: { type: 'string', default: EVALUATE_DEFAULTS.bootstrap },
        'no-sweep': { type: 'boolean', default: false },
        'train-model': { type: 'string' },
        'model-epochs': { type: 'string' },
      },
    }),
  );
  if (values.help) return printHelp(EVALUATE);
  if (!values.events || !values.items || !values.out)
    throw commandUsage(EVALUATE, 'needs --events, --items and --out');
  if (values.model !== undefined && values['train-model'] !== undefined)
    throw commandUsage(EVALUATE, 'takes --model or --train-model, not both');

  const negatives = values.negatives;
  if (negatives !== 'popularity' && negatives !== 'uniform' && negatives !== 'log')
    throw usage('--negatives must be popularity, uniform or log');
  const config = loadConfig();
  const result = await runEvaluation({
    events: eventsInput(values),
    itemsPath: values.items,
    catalogue: catalogueOptions(values),
    outDir: values.out,
    ...(values.model === undefined ? {} : { modelDir: values.model }),
    ...(values['train-model'] === undefined ? {} : { trainModelDir: values['train-model'] }),
    ...optional('modelEpochs', values['model-epochs'], (text) =>
      integer('--model-epochs', text, 1),
    ),
    settings: methodSettings(config, overrides(values)),
    negatives,
    exclusion: exclusionOf(values.exclude, values['exclude-window']),
    negativesPerPositive: integer('--negatives-per-positive', values['negatives-per-positive'], 1),
    seed: integer('--seed', values.seed, 0),
    maxQueriesPerPeriod: integer('--max-queries', values['max-queries'], 1),
    bootstrapResamples: integer('--bootstrap', values.bootstrap, 10),
    sweep: !values['no-sweep'],
    command: ['affinity', 'evaluate', ...args].map(shellWord).join(' '),
    onProgress: evaluationProgress(commandLogger('evaluate', config.logLevel)),
  });
  printResult(JSON.stringify(result));
  return 0;
}

/**
 * The result of `parse` (a `parseArgs` call). Node reports a bad command line (an unknown
 * option, a missing value) as a TypeError with an ERR_PARSE_ARGS_* code; it becomes a USAGE
 * error with the command's usage, which main.ts prints without a stack trace, exiting 2.
 */
function parsedOrUsage<T>(command: CommandText, parse: () => T): T {
  try {
    return parse();
  } catch (err) {
    if (isParseArgsError(err)) throw commandUsage(command, err.message);
    throw err;
  }
}

function isParseArgsError(err: unknown): err is Error & { code: string } {
  const code = (err as { code?: unknown } | null)?.code;
  return err instanceof TypeError && typeof code === 'string' && code.startsWith('ERR_PARSE_ARGS_');
}

function printHelp(command: CommandText): number {
  printResult(`usage: affinity ${command.usage.trimStart()}\n\n${command.details}`);
  return 0;
}

function commandUsage(command: CommandText, message: string): AffinityError {
  return new AffinityError(
    'USAGE',
    `${command.name}: ${message}\n\nusage: affinity ${command.usage.trimStart()}\n` +
      `(affinity ${command.name} --help for the defaults)`,
  );
}

/** `--exclude` and `--exclude-window` as the query builder's rule. */
function exclusionOf(rule: string | undefined, window: string | undefined): NegativeExclusion {
  if (rule !== 'point-in-time' && rule !== 'whole-log')
    throw usage('--exclude must be point-in-time or whole-log');
  if (rule === 'whole-log' && window !== undefined)
    throw usage('--exclude-window applies to --exclude point-in-time only');
  const windowMs =
    window === undefined ? DEFAULT_EXCLUSION.windowMs : duration('--exclude-window', window);
  return { rule, windowMs };
}

function eventsInput(values: CommonValues & { events?: string }) {
  const unit = values.timestamps;
  if (unit !== 's' && unit !== 'ms') throw usage('--timestamps s|ms is required (the log unit)');
  return {
    path: values.events!,
    timestampUnit: unit,
    ...(values['signal-map'] === undefined
      ? {}
      : { signalMap: parseSignalMap(values['signal-map']) }),
    strict: values.strict ?? false,
  } as const;
}

function timestampUnit(text: string): 's' | 'ms' {
  if (text !== 's' && text !== 'ms') throw usage(`timestamp unit must be s or ms, got "${text}"`);
  return text;
}

function catalogueOptions(values: CommonValues) {
  const format = values.format;
  if (format !== undefined && !['folder', 'npy', 'jsonl'].includes(format))
    throw usage('--format must be folder, npy or jsonl');
  return {
    center: values.center ?? false,
    normalize: !values['no-normalize'],
    ...(values.ids === undefined ? {} : { ids: values.ids }),
    ...(format === undefined ? {} : { format: format as CatalogueFormat }),
  };
}

/** The method flags as overrides of the configuration. */
function overrides(values: CommonValues): MethodOverrides {
  const dual = {
    ...(values['no-dual'] ? { enabled: false } : {}),
    ...optional('a0', values['dual-a0'], (text) => number('--dual-a0', text)),
    ...optional('lambda', values['dual-lambda'], (text) => number('--dual-lambda', text)),
    ...optional('nu', values['dual-nu'], (text) => number('--dual-nu', text)),
    ...optional('halfLifeMs', values['dual-half-life'], (text) =>
      duration('--dual-half-life', text),
    ),
  };
  return {
    ...optional('halfLivesMs', values['half-lives'], (text) =>
      text.split(',').map((part) => duration('--half-lives', part)),
    ),
    ...optional('historyMaxEvents', values['history-max-events'], (text) =>
      integer('--history-max-events', text, 1),
    ),
    ...optional('historyHalfLifeMs', values['history-half-life'], (text) =>
      duration('--history-half-life', text),
    ),
    ...optional('cosineThresholds', values.thresholds, (text) =>
      text.split(',').map((part) => number('--thresholds', part)),
    ),
    dual,
  };
}

function optional<K extends string, T>(
  key: K,
  text: string | undefined,
  parse: (text: string) => T,
): Partial<Record<K, T>> {
  return text === undefined ? {} : ({ [key]: parse(text) } as Record<K, T>);
}

function number(flag: string, text: string): number {
  const value = Number(text.trim());
  if (text.trim() === '' || !Number.isFinite(value))
    throw usage(`${flag}: "${text}" is not a number`);
  return value;
}

function integer(flag: string, text: string | undefined, min: number): number {
  const value = number(flag, text ?? '');
  if (!Number.isInteger(value) || value < min) throw usage(`${flag} must be an integer >= ${min}`);
  return value;
}

function duration(flag: string, text: string): number {
  try {
    return parseDurationMs(text.trim());
  } catch (err) {
    throw usage(`${flag}: ${(err as Error).message}`);
  }
}

/** The count and the first BAD_ROWS_SHOWN of them, with their line numbers. */
function reportBadRows(logger: Logger, what: string, count: number, rows: readonly BadRow[]) {
  if (count === 0) return;
  const first = rows.slice(0, BAD_ROWS_SHOWN);
  logger.warn({ input: what, badRowCount: count, first }, 'bad rows skipped');
}

const BAD_ROWS_SHOWN = 10;
const PROGRESS_INTERVAL_MS = 2_000;

/** Logs the request groups answered, at most every two seconds, and at the end. */
function backfillProgress(logger: Logger) {
  let lastMs = 0;
  return (done: number, total: number) => {
    const nowMs = Date.now();
    if (done < total && nowMs - lastMs < PROGRESS_INTERVAL_MS) return;
    lastMs = nowMs;
    logger.info({ requestGroups: done, total }, 'backfill progress');
  };
}

/** Logs each stage as it starts and ends, and its count at most every two seconds. */
function evaluationProgress(logger: Logger): (progress: EvaluationProgress) => void {
  let lastMs = 0;
  let lastStage = '';
  const startedMs = Date.now();
  return ({ stage, done, total }) => {
    const nowMs = Date.now();
    const finished = total !== undefined && done === total;
    if (stage === lastStage && !finished && nowMs - lastMs < PROGRESS_INTERVAL_MS) return;
    lastMs = nowMs;
    lastStage = stage;
    const elapsedS = Math.round((nowMs - startedMs) / 1000);
    logger.info({ stage, done, total, elapsedS }, 'evaluate progress');
  };
}

/** The argument as a POSIX shell would need it typed: single-quoted when it has specials. */
function shellWord(text: string): string {
  return /^[\w@%+=:,./-]+$/.test(text) ? text : `'${text.replaceAll("'", "'\\''")}'`;
}

function usage(message: string): AffinityError {
  return new AffinityError('USAGE', message);
}
