/**
 * The evaluation's outputs: report.json (everything, machine-readable), report.md (the tables a
 * team reads to choose a method) and report.svg (a hand-drawn bar chart: each ranker's test
 * metrics and the best single features, with 95% bootstrap whiskers).
 */
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { formatDuration } from '../config/duration.js';
import type { ValidationMetrics } from '../neural/model.js';
import type { MetricIntervals, MetricMeans } from './assess.js';
import type { EventsReport } from './inputs.js';
import type { Interval } from './metrics.js';
import type { MethodSettings } from './settings.js';
import type { SweepPoint } from './sweep.js';

export interface VariantResult {
  readonly name: 'raw' | 'centred';
  /** Cross-validated ranker (baseline + agg + dual) on validation. */
  readonly validation: MetricMeans;
}

export interface FeatureResult {
  readonly name: string;
  readonly variant: 'raw' | 'centred';
  /** 1 when higher ranks first, -1 when validation showed the reverse. */
  readonly sign: number;
  readonly validation: MetricMeans;
  readonly test: MetricIntervals;
}

export interface RankerResult {
  readonly set: string;
  readonly features: number;
  readonly iterations: number;
  readonly test: MetricIntervals;
  /** Paired difference to the previous set; null for the first. */
  readonly delta: MetricIntervals | null;
}

export interface SettingsSummary {
  readonly center: boolean;
  readonly halfLives: string[];
  readonly historyHalfLife: string;
  readonly historyMaxEvents: number;
  readonly cosineThresholds: number[];
  readonly dual: { enabled: boolean; a0: number; lambda: number; nu: number; halfLife: string };
}

export interface EvaluationReport {
  readonly command: string | null;
  readonly data: {
    readonly events: EventsReport;
    readonly users: number;
    readonly items: number;
    readonly dim: number;
    readonly split: { validationStart: string; testStart: string; end: string };
    readonly periods: readonly {
      name: string;
      queries: number;
      users: number;
      candidatesPerQuery: number;
      counts: Record<string, number>;
    }[];
  };
  readonly protocol: {
    readonly negatives: string;
    readonly exclusion: { readonly rule: string; readonly windowMs: number };
    readonly negativesPerPositive: number;
    readonly k: number;
    readonly seed: number;
    readonly maxQueriesPerPeriod: number;
    readonly bootstrap: { resamples: number; unit: 'user'; level: number };
    readonly rankerTrainNegativesPerQuery: number;
  };
  readonly variants: readonly VariantResult[];
  readonly chosenVariant: 'raw' | 'centred';
  readonly sweep: {
    readonly halfLives: readonly SweepPoint[];
    readonly halfLifeSteps: readonly SweepPoint[];
    readonly thresholds: readonly SweepPoint[];
    readonly thresholdSteps: readonly SweepPoint[];
    readonly dual: readonly SweepPoint[];
  } | null;
  readonly settings: SettingsSummary;
  readonly neural: {
    readonly version: string;
    readonly trainedHere: boolean;
    readonly testCutoff: number | null;
    readonly validation: ValidationMetrics | null;
  } | null;
  readonly features: readonly FeatureResult[];
  readonly rankers: readonly RankerResult[];
  readonly wallSeconds: number;
}

export function describeSettings(settings: MethodSettings, center: boolean): SettingsSummary {
  const { dual } = settings;
  return {
    center,
    halfLives: settings.halfLivesMs.map(formatDuration),
    historyHalfLife: formatDuration(settings.historyHalfLifeMs),
    historyMaxEvents: settings.historyMaxEvents,
    cosineThresholds: [...settings.cosineThresholds],
    dual: {
      enabled: dual.enabled,
      a0: dual.a0,
      lambda: dual.lambda,
      nu: dual.nu,
      halfLife: formatDuration(dual.halfLifeMs),
    },
  };
}

export async function writeReport(dir: string, report: EvaluationReport): Promise<void> {
  await writeFile(join(dir, 'report.json'), `${JSON.stringify(report, null, 2)}\n`);
  await writeFile(join(dir, 'report.md'), markdown(report));
  await writeFile(join(dir, 'report.svg'), chart(report));
}

// ---- report.md ----

function markdown(report: EvaluationReport): string {
  return [
    '# Evaluation report',
    '',
    ...dataSection(report),
    ...rankerSection(report),
    ...settingsSection(report),
    ...variantSection(report),
    ...sweepSection(report),
    ...featureSection(report),
    `Wall time: ${report.wallSeconds.toFixed(0)} s.`,
    '',
  ].join('\n');
}

function dataSection(report: EvaluationReport): string[] {
  const { data, protocol } = report;
  const events = data.events;
  const lines = [
    report.command ? `Command: \`${report.command}\`` : '',
    '',
    `Events: ${events.events} used (${events.badRowCount} bad rows, ${events.ignored} ignored by the signal map, ` +
      `${Object.values(events.unknownTypes).reduce((a, b) => a + b, 0)} of unconfigured types); ` +
      `${data.users} users, ${data.items} items, d = ${data.dim}.`,
    `Split: validation from ${data.split.validationStart}, test from ${data.split.testStart} to ${data.split.end}.`,
    `Queries: each positive event against ${protocol.negativesPerPositive} ${protocol.negatives} negatives` +
      `${exclusionText(protocol)}; ` +
      `k = ${protocol.k}; seed ${protocol.seed}; at most ${protocol.maxQueriesPerPeriod} queries per period.`,
    `Intervals: 95% percentile bootstrap over users, ${protocol.bootstrap.resamples} resamples.`,
    '',
    '| period | queries | users | positives | no earlier event | no embedding | no negatives | subsampled away |',
    '| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |',
  ];
  for (const period of data.periods) {
    const c = period.counts;
    lines.push(
      `| ${period.name} | ${period.queries} | ${period.users} | ${c['positives']} | ${c['noEarlierEvent']} | ` +
        `${c['noEmbedding']} | ${c['noNegatives']} | ${c['subsampledAway']} |`,
    );
  }
  return [...lines, ''];
}

/** Which of the user's items the sampled negatives skip; `log` negatives have their own rule. */
function exclusionText(protocol: EvaluationReport['protocol']): string {
  if (protocol.negatives === 'log') return '';
  const { rule, windowMs } = protocol.exclusion;
  return rule === 'whole-log'
    ? ", none of them an item the user has an event with anywhere in the log (rule 'whole-log')"
    : `, none of them an item the user had an event with before the query or up to ` +
        `${formatDuration(windowMs)} after it (rule 'point-in-time')`;
}

function rankerSection(report: EvaluationReport): string[] {
  const lines = [
    '## Rankers on test (logistic regression fitted on validation)',
    '',
    '| features | n | AUC | NDCG@10 | Recall@10 | Δ AUC | Δ NDCG@10 | Δ Recall@10 |',
    '| --- | ---: | --- | --- | --- | --- | --- | --- |',
  ];
  for (const ranker of report.rankers) {
    const delta = ranker.delta;
    const deltas = delta
      ? [delta.auc, delta.ndcg, delta.recall].map((x) => signedInterval(x))
      : ['', '', ''];
    lines.push(
      `| ${ranker.set} | ${ranker.features} | ${interval(ranker.test.auc)} | ${interval(ranker.test.ndcg)} | ` +
        `${interval(ranker.test.recall)} | ${deltas.join(' | ')} |`,
    );
  }
  lines.push(
    '',
    'Δ: paired difference to the row above, same test queries; an interval that holds 0 is no evidence of help.',
    '',
  );
  return lines;
}

function settingsSection(report: EvaluationReport): string[] {
  const s = report.settings;
  const lines = [
    '## Settings used for the test figures',
    '',
    `- embeddings: ${s.center ? 'mean-centred (--center)' : 'raw'}`,
    `- AFFINITY_HALF_LIVES=${s.halfLives.join(',')}`,
    `- AFFINITY_COSINE_THRESHOLDS=${s.cosineThresholds.join(',')}`,
    `- AFFINITY_HISTORY_HALF_LIFE=${s.historyHalfLife}, AFFINITY_HISTORY_MAX_EVENTS=${s.historyMaxEvents}`,
    `- AFFINITY_DUAL_A0=${s.dual.a0}, AFFINITY_DUAL_LAMBDA=${s.dual.lambda}, AFFINITY_DUAL_NU=${s.dual.nu}, ` +
      `AFFINITY_DUAL_HALF_LIFE=${s.dual.halfLife}`,
  ];
  if (report.neural) {
    const cutoff =
      report.neural.testCutoff === null ? 'none' : new Date(report.neural.testCutoff).toISOString();
    lines.push(
      `- neural model ${report.neural.version} (training cutoff ${cutoff}${report.neural.trainedHere ? ', trained by this run' : ''})`,
    );
  }
  return [...lines, ''];
}

function variantSection(report: EvaluationReport): string[] {
  const lines = [
    '## Raw or centred embeddings (validation, two-fold cross-validated ranker on baseline + agg + dual)',
    '',
    '| embeddings | AUC | NDCG@10 | Recall@10 |',
    '| --- | --- | --- | --- |',
  ];
  for (const variant of report.variants) {
    const mark = variant.name === report.chosenVariant ? ' (chosen)' : '';
    lines.push(`| ${variant.name}${mark} | ${means(variant.validation)} |`);
  }
  return [...lines, ''];
}

function sweepSection(report: EvaluationReport): string[] {
  const sweep = report.sweep;
  if (!sweep) return ['Sweeps: not run (--no-sweep).', ''];
  return [
    '## Sweeps (validation only)',
    '',
    ...pointTable('Half-life of `agg.pos.<h>.cos` alone', 'half-life', sweep.halfLives),
    ...pointTable(
      'Greedy half-life set (cross-validated ranker, baseline + sums)',
      'step',
      sweep.halfLifeSteps,
    ),
    ...pointTable(
      'Threshold of `agg.hist.pos.share_above_<t>` alone',
      'threshold',
      sweep.thresholds,
    ),
    ...pointTable(
      'Greedy threshold pair (cross-validated ranker, baseline + shares of both polarities)',
      'step',
      sweep.thresholdSteps,
    ),
    ...pointTable('Dual vector: `dual.score` alone', 'parameters', sweep.dual),
  ];
}

function pointTable(title: string, column: string, points: readonly SweepPoint[]): string[] {
  const withIterations = points.some((point) => point.iterations !== undefined);
  const lines = [
    `### ${title}`,
    '',
    `| ${column} | AUC | NDCG@10 | Recall@10 |${withIterations ? ' CG iterations per solve |' : ''}`,
    `| --- | --- | --- | --- |${withIterations ? ' ---: |' : ''}`,
  ];
  for (const point of points) {
    const iterations = withIterations ? ` ${point.iterations ?? ''} |` : '';
    lines.push(`| ${point.label} | ${means(point.validation)} |${iterations}`);
  }
  return [...lines, ''];
}

function featureSection(report: EvaluationReport): string[] {
  const lines = [
    '## Single features on test (each alone as the ranking score)',
    '',
    'Direction from validation: (−) marks a feature ranked lowest-first. Features constant within every query',
    '(weights, counts, norms, user counters) cannot order candidates alone and are left out.',
    '',
    '| feature | embeddings | AUC | NDCG@10 | Recall@10 |',
    '| --- | --- | --- | --- | --- |',
  ];
  const sorted = [...report.features].sort((a, b) =>
    a.variant === b.variant
      ? b.test.auc.value - a.test.auc.value
      : a.variant === report.chosenVariant
        ? -1
        : 1,
  );
  for (const feature of sorted) {
    const sign = feature.sign < 0 ? ' (−)' : '';
    const variant = feature.name.startsWith('base.') ? '—' : feature.variant;
    lines.push(
      `| ${feature.name}${sign} | ${variant} | ${interval(feature.test.auc)} | ${interval(feature.test.ndcg)} | ` +
        `${interval(feature.test.recall)} |`,
    );
  }
  return [...lines, ''];
}

function means(m: MetricMeans): string {
  return `${m.auc.toFixed(4)} | ${m.ndcg.toFixed(4)} | ${m.recall.toFixed(4)}`;
}

function interval(i: Interval): string {
  return `${i.value.toFixed(4)} [${i.low.toFixed(4)}, ${i.high.toFixed(4)}]`;
}

function signedInterval(i: Interval): string {
  const signed = (x: number) => `${x >= 0 ? '+' : ''}${x.toFixed(4)}`;
  return `${signed(i.value)} [${signed(i.low)}, ${signed(i.high)}]`;
}

// ---- report.svg ----

interface Bar {
  readonly label: string;
  readonly value: Interval;
}

const PANEL_WIDTH = 300;
const BAR_HEIGHT = 18;
const BAR_GAP = 6;
const LABEL_WIDTH = 190;

function chart(report: EvaluationReport): string {
  const rankerBars = (metric: 'auc' | 'ndcg' | 'recall'): Bar[] =>
    report.rankers.map((ranker) => ({ label: ranker.set, value: ranker.test[metric] }));
  const topFeatures = [...report.features]
    .filter((feature) => feature.variant === report.chosenVariant)
    .sort((a, b) => b.test.auc.value - a.test.auc.value)
    .slice(0, 10);
  const featureBars: Bar[] = topFeatures.map((f) => ({ label: f.name, value: f.test.auc }));

  const rankerHeight = panelHeight(report.rankers.length);
  const featureHeight = panelHeight(featureBars.length);
  const width = 3 * (LABEL_WIDTH + PANEL_WIDTH) + 40;
  const height = rankerHeight + featureHeight + 60;
  const parts = [
    `<svg xmlns="http://www.w3.org/2000/svg" width="${width}" height="${height}" font-family="sans-serif" font-size="12">`,
    `<rect width="${width}" height="${height}" fill="white"/>`,
    panel(10, 10, 'Ranker on test: AUC', rankerBars('auc')),
    panel(10 + LABEL_WIDTH + PANEL_WIDTH + 10, 10, 'Ranker on test: NDCG@10', rankerBars('ndcg')),
    panel(
      10 + 2 * (LABEL_WIDTH + PANEL_WIDTH + 10),
      10,
      'Ranker on test: Recall@10',
      rankerBars('recall'),
    ),
    panel(
      10,
      rankerHeight + 40,
      `Best single features on test (${report.chosenVariant}): AUC`,
      featureBars,
    ),
    `<text x="10" y="${height - 8}" fill="#555">Whiskers: 95% bootstrap intervals over users.</text>`,
    '</svg>',
  ];
  return `${parts.join('\n')}\n`;
}

function panelHeight(bars: number): number {
  return 40 + bars * (BAR_HEIGHT + BAR_GAP);
}

/** One horizontal bar chart; the axis spans the bars' intervals with a little margin. */
function panel(x: number, y: number, title: string, bars: readonly Bar[]): string {
  const lows = bars.map((bar) => Math.min(bar.value.low, bar.value.value));
  const highs = bars.map((bar) => Math.max(bar.value.high, bar.value.value));
  const span = Math.max(...highs) - Math.min(...lows) || 1;
  const min = Math.max(0, Math.min(...lows) - 0.1 * span);
  const max = Math.max(...highs) + 0.05 * span;
  const scale = (v: number) => x + LABEL_WIDTH + ((v - min) / (max - min)) * PANEL_WIDTH;
  const items = bars.map((bar, index) =>
    barShapes(bar, y + 30 + index * (BAR_HEIGHT + BAR_GAP), x, scale, min),
  );
  return [
    `<text x="${x}" y="${y + 14}" font-weight="bold">${escapeXml(title)}</text>`,
    `<text x="${x + LABEL_WIDTH}" y="${y + 26}" fill="#555" font-size="10">${min.toFixed(3)}</text>`,
    `<text x="${x + LABEL_WIDTH + PANEL_WIDTH}" y="${y + 26}" fill="#555" font-size="10" text-anchor="end">${max.toFixed(3)}</text>`,
    ...items,
  ].join('\n');
}

function barShapes(
  bar: Bar,
  top: number,
  x: number,
  scale: (v: number) => number,
  min: number,
): string {
  const middle = top + BAR_HEIGHT / 2;
  const left = scale(min);
  const { value, low, high } = bar.value;
  return [
    `<text x="${x + LABEL_WIDTH - 6}" y="${middle + 4}" text-anchor="end">${escapeXml(bar.label)}</text>`,
    `<rect x="${left.toFixed(1)}" y="${top}" width="${(scale(value) - left).toFixed(1)}" height="${BAR_HEIGHT}" fill="#4a7ab5"/>`,
    `<line x1="${scale(low).toFixed(1)}" y1="${middle}" x2="${scale(high).toFixed(1)}" y2="${middle}" stroke="black"/>`,
    `<line x1="${scale(low).toFixed(1)}" y1="${top + 4}" x2="${scale(low).toFixed(1)}" y2="${top + BAR_HEIGHT - 4}" stroke="black"/>`,
    `<line x1="${scale(high).toFixed(1)}" y1="${top + 4}" x2="${scale(high).toFixed(1)}" y2="${top + BAR_HEIGHT - 4}" stroke="black"/>`,
    `<text x="${(scale(high) + 4).toFixed(1)}" y="${middle + 4}" font-size="10">${value.toFixed(3)}</text>`,
  ].join('\n');
}

function escapeXml(text: string): string {
  return text.replaceAll('&', '&amp;').replaceAll('<', '&lt;').replaceAll('>', '&gt;');
}
