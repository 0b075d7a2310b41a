/**
 * A synthetic log where item embeddings carry the users' taste by construction, for the
 * evaluation tests: 60 users, each with a taste vector; 150 items, random Gaussian vectors in
 * d = 8; a user likes (rating 5) items among the 40 closest to their taste and dislikes (rating
 * 1) items among the 40 farthest, 40 ratings each over 100 days. Written as events.csv (unix
 * seconds, signal = rating) and items.jsonl; read it with the signal map `like:>=4,dislike:<=2`.
 */
import { writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { loadConfig } from '../../src/config/config.js';
import { parseSignalMap } from '../../src/neural/events.js';
import type { EvaluationOptions, EvaluationProgress } from '../../src/offline/evaluate.js';
import { seededRandom } from '../../src/offline/metrics.js';
import { DEFAULT_EXCLUSION } from '../../src/offline/queries.js';
import { methodSettings } from '../../src/offline/settings.js';

export const TASTE_DIM = 8;
export const TASTE_SIGNAL_MAP = 'like:>=4,dislike:<=2';

export async function writeTasteLog(dir: string): Promise<void> {
  const random = seededRandom(5);
  const gaussian = () => Math.sqrt(-2 * Math.log(1 - random())) * Math.cos(2 * Math.PI * random());
  const items = Array.from({ length: 150 }, (_, i) => ({
    id: `i${i}`,
    embedding: Array.from({ length: TASTE_DIM }, gaussian),
  }));
  const lines = ['user_id,item_id,timestamp,signal'];
  for (let u = 0; u < 60; u++) {
    const taste = Array.from({ length: TASTE_DIM }, gaussian);
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

/**
 * A quick evaluation of the taste log in `dir`: no sweep, few queries and resamples; the
 * stages it reports are pushed to `stages`.
 */
export function tasteOptions(
  dir: string,
  stages: string[],
  overrides: Partial<EvaluationOptions> = {},
): EvaluationOptions {
  return {
    events: {
      path: join(dir, 'events.csv'),
      timestampUnit: 's',
      signalMap: parseSignalMap(TASTE_SIGNAL_MAP),
    },
    itemsPath: join(dir, 'items.jsonl'),
    catalogue: { center: false, normalize: true },
    outDir: join(dir, 'out'),
    settings: methodSettings(loadConfig({})),
    negatives: 'popularity',
    exclusion: DEFAULT_EXCLUSION,
    negativesPerPositive: 20,
    seed: 1,
    maxQueriesPerPeriod: 200,
    bootstrapResamples: 20,
    sweep: false,
    validationFraction: 0.3,
    testFraction: 0.3,
    onProgress: (progress: EvaluationProgress) => stages.push(progress.stage),
    ...overrides,
  };
}
