#!/usr/bin/env node
/**
 * The `affinity` command. Each subcommand parses its arguments, reads the configuration once,
 * and calls into the library; nothing here holds logic of its own.
 */
import { parseArgs } from 'node:util';
import { Redis } from 'ioredis';
import { loadConfig } from '../config/config.js';
import type { Config } from '../config/config.js';
import { AffinityError } from '../errors.js';
import { loadCatalogue } from '../items/loaders.js';
import { ItemStore } from '../items/store.js';
import { transformCatalogue } from '../items/transform.js';
import { createLogger } from '../ops/logger.js';
import { WorkerMetrics, createRegistry } from '../ops/metrics.js';
import { FeatureReader } from '../reader/feature-reader.js';
import type { FeatureResponse } from '../reader/feature-reader.js';
import { AffinityWorker } from '../workers/events-worker.js';
import { extraCommands } from './extra-commands.js';
import './neural-commands.js';
import './offline-commands.js';
import { commandLogger, printResult, printUsageError } from './output.js';
import { serve } from './serve.js';

const USAGE = `usage: affinity <command> [options]

commands:
  worker                          run the events and item-embeddings consumer
  items load PATH [--center] [--no-normalize] [--ids FILE] [--format folder|npy|jsonl]
                                  bulk-load an item catalogue into Redis
  features --user U --items A,B,C [--at TS_MS] [--json]
                                  print the features of candidates for a user
${extraCommands.map((command) => command.usage).join('\n')}
Configuration comes from AFFINITY_* environment variables (docs/configuration.md).`;

export async function main(argv: readonly string[]): Promise<number> {
  const [command, ...rest] = argv;
  switch (command) {
    case 'worker':
      if (rest.length > 0) throw usage('worker takes no arguments');
      return runWorker();
    case 'items':
      return runItems(rest);
    case 'features':
      return runFeatures(rest);
    case undefined:
    case 'help':
    case '--help':
      printResult(USAGE);
      return command === undefined ? 2 : 0;
    default: {
      const extra = extraCommands.find((candidate) => candidate.name === command);
      if (extra) return extra.run(rest);
      printUsageError(`unknown command "${command}"\n\n${USAGE}`);
      return 2;
    }
  }
}

async function runWorker(): Promise<number> {
  const config = loadConfig();
  const logger = createLogger(config.logLevel, { role: 'worker' });
  const metrics = new WorkerMetrics(createRegistry(true));
  const worker = new AffinityWorker(config, logger, metrics);
  const ops = { host: config.httpHost, port: config.httpPort, registry: metrics.registry };
  return serve(worker, ops, logger);
}

async function runItems(args: readonly string[]): Promise<number> {
  const [subcommand, ...rest] = args;
  if (subcommand !== 'load') throw usage('items: the only subcommand is "load"');
  const { values, positionals } = parseArgs({
    args: [...rest],
    allowPositionals: true,
    options: {
      center: { type: 'boolean', default: false },
      'no-normalize': { type: 'boolean', default: false },
      ids: { type: 'string' },
      format: { type: 'string' },
    },
  });
  const path = positionals[0];
  if (!path) throw usage('items load needs a PATH');

  const config = loadConfig();
  const format = values.format as 'folder' | 'npy' | 'jsonl' | undefined;
  const raw = await loadCatalogue(path, {
    ...(values.ids ? { ids: values.ids } : {}),
    ...(format ? { format } : {}),
  });
  const normalize = !values['no-normalize'];
  const { catalogue, mean } = transformCatalogue(raw, { center: values.center, normalize });

  const redis = new Redis(config.redisUrl, { maxRetriesPerRequest: 3 });
  const logger = createLogger(config.logLevel, { role: 'items-load' });
  // The write fails with the cause; each reconnect attempt is debug detail, not stderr noise.
  redis.on('error', (err: unknown) => logger.debug({ err }, 'redis connection error'));
  try {
    const store = new ItemStore(redis, { prefix: config.keyPrefix });
    const meta = await store.replaceAll(catalogue.ids, catalogue.vectors, {
      dim: catalogue.dim,
      centered: values.center,
      normalized: normalize,
      mean,
    });
    printResult(
      JSON.stringify({
        items: meta.count,
        dim: meta.dim,
        centered: meta.centered,
        normalized: meta.normalized,
        version: meta.version,
      }),
    );
  } finally {
    await redis.quit();
  }
  return 0;
}

async function runFeatures(args: readonly string[]): Promise<number> {
  const { values } = parseArgs({
    args: [...args],
    options: {
      user: { type: 'string' },
      items: { type: 'string' },
      at: { type: 'string' },
      json: { type: 'boolean', default: false },
    },
  });
  if (!values.user || !values.items) throw usage('features needs --user and --items');
  const atMs = values.at === undefined ? Date.now() : Number(values.at);
  if (!Number.isFinite(atMs)) throw usage('--at must be epoch milliseconds');

  const config: Config = loadConfig();
  const reader = FeatureReader.fromConfig(
    config,
    createLogger(config.logLevel, { role: 'reader' }),
  );
  try {
    const items = values.items
      .split(',')
      .map((item) => item.trim())
      .filter((item) => item !== '');
    const response = await reader.features(values.user, items, atMs);
    printResult(values.json ? JSON.stringify(response) : formatTable(response));
  } finally {
    await reader.close();
  }
  return 0;
}

function formatTable(response: FeatureResponse): string {
  const names = Object.keys(response.items[0]?.features ?? {});
  const header = ['feature', ...response.items.map((entry) => entry.item)];
  const rows = names.map((name) => [
    name,
    ...response.items.map((entry) => {
      const value = entry.features[name];
      return value === null || value === undefined ? 'null' : value.toFixed(4);
    }),
  ]);
  const widths = header.map((_, column) =>
    Math.max(...[header, ...rows].map((row) => row[column]!.length)),
  );
  const lines = [header, ...rows].map((row) =>
    row.map((cell, column) => cell.padEnd(widths[column]!)).join('  '),
  );
  return [`user ${response.user} at ${new Date(response.at).toISOString()}`, ...lines].join('\n');
}

function usage(message: string): AffinityError {
  return new AffinityError('USAGE', `${message}\n\n${USAGE}`);
}

function reportFailure(command: string | undefined, err: unknown): number {
  if (isUsageError(err)) {
    const message =
      err instanceof AffinityError ? err.message : `${(err as Error).message}\n\n${USAGE}`;
    printUsageError(`affinity: ${message}`);
    return 2;
  }
  if (command !== undefined && isLongRunning(command)) {
    createLogger('info', { role: command }).error({ err }, 'start-up failed');
    return 1;
  }
  commandLogger(command ?? 'affinity').error({ err }, 'command failed');
  return 1;
}

function isLongRunning(command: string): boolean {
  if (command === 'worker') return true;
  return extraCommands.some((extra) => extra.name === command && extra.longRunning === true);
}

/** Our own USAGE errors, and node:util parseArgs' (unknown option, missing value, ...). */
function isUsageError(err: unknown): boolean {
  if (err instanceof AffinityError) return err.code === 'USAGE';
  const code = err instanceof TypeError ? (err as { code?: unknown }).code : undefined;
  return typeof code === 'string' && code.startsWith('ERR_PARSE_ARGS_');
}

const argv = process.argv.slice(2);
main(argv).then(
  (code) => {
    process.exitCode = code;
  },
  (err: unknown) => {
    process.exitCode = reportFailure(argv[0], err);
  },
);
