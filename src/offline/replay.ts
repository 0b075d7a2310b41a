/**
 * Point-in-time replay, shared by `affinity backfill` and `affinity evaluate`: it answers
 * "which features would `FeatureReader.features(user, items, atMs)` have returned", from the
 * events strictly before `atMs`, with the code the online path runs and no Kafka or Redis.
 *
 *  - Events go through `applyEvents` (state/user-state.ts), the workers' update, in time order.
 *    Users are independent, so each user's events and requests are walked on their own: for a
 *    request at `atMs` the user's events with `ts < atMs` are applied first. An event at exactly
 *    `atMs` is not in the answer, as it would not be online if it arrived at that instant.
 *  - Before answering, pending events are folded (`foldPending`) as the reader does, and the
 *    dual vector is re-solved with `refreshDual` when events were applied since the last solve,
 *    as the worker does at each flush of a changed user. The warm start differs from the
 *    worker's (the previous request, not the previous flush), so dual features agree with the
 *    online ones to the CG tolerance, not bit for bit.
 *  - Features come from `resolveHistory` and `computeFeatures` (reader/features.ts), the
 *    reader's own functions. Method 3 has its own per-user state, as the neural worker does
 *    (workers/neural-worker.ts): the same events go through `applyNeuralEvents`
 *    (state/neural-state.ts) capped at the model's `historyLength`, not through the method-1
 *    history (capped at AFFINITY_HISTORY_MAX_EVENTS), and the encoding is `LoadedModel.encode`
 *    of that state's history, the worker's call. The reader serves the encoding stored after
 *    the user's latest event, so it is recomputed only when events were applied.
 *
 * Differences from online that remain: the worker stores sums as float32 between flushes, as the
 * replay does in memory; it applies a batch in Kafka order rather than time order, which changes
 * sums by float rounding only (aggregate.ts explains why order does not matter otherwise).
 * The catalogue is fixed for the whole replay, so an event whose item has no embedding stays
 * pending for good, as it would online until the item arrived.
 */
import { performance } from 'node:perf_hooks';
import type { InteractionEvent } from '../events/types.js';
import type { LoadedModel } from '../features/neural-encode.js';
import type { FeatureValues, NeuralInputs, ResolvedHistory } from '../reader/features.js';
import { computeFeatures, featureNames, resolveHistory } from '../reader/features.js';
import type { DualContext } from '../state/dual-step.js';
import { refreshDual } from '../state/dual-step.js';
import type { EncoderWindow, NeuralUserState } from '../state/neural-state.js';
import { applyNeuralEvents, emptyNeuralState, encoderWindow } from '../state/neural-state.js';
import type { SequencedEvent, UpdateContext, UserState } from '../state/user-state.js';
import { applyEvents, emptyUserState, foldPending } from '../state/user-state.js';
import type { OfflineCatalogue } from './catalogue.js';
import type { MethodSettings } from './settings.js';
import { featureSettingsOf, layoutOf } from './settings.js';

/** Candidates of one user at one time: one `FeatureReader.features` call. */
export interface RequestGroup {
  readonly user: string;
  readonly atMs: number;
  readonly items: readonly string[];
}

export interface ReplayModel {
  readonly settings: MethodSettings;
  readonly catalogue: OfflineCatalogue;
  /** Method 3's model; null leaves `neural.*` out, as a reader without a model does. */
  readonly neural: LoadedModel | null;
  /**
   * False skips the history statistics (`agg.hist.*` come out as for an empty history): the
   * evaluation's sweeps of other parameters do not need them, and they are most of the cost.
   * Default true.
   */
  readonly historyFeatures?: boolean;
}

export interface ReplayStats {
  /** Users with at least one request. */
  users: number;
  /** Events applied (those of users with requests, before their last request). */
  eventsApplied: number;
  groups: number;
  candidates: number;
  dualSolves: number;
  dualIterations: number;
  /** Time in `applyEvents`, ms (method 1 and 2's update only; not the neural state's). */
  applyMs: number;
  /** Time answering: folding, dual solves, encodings, history resolution and features, ms. */
  answerMs: number;
  /** The whole `replay` call: grouping and sorting the inputs, applying, answering, ms. */
  wallMs: number;
}

/** Receives the features of candidate `candidate` of group `group`. */
export type FeatureSink = (group: number, candidate: number, features: FeatureValues) => void;

/** Progress in request groups answered. */
export type ReplayProgress = (groupsDone: number, groupsTotal: number) => void;

/** The feature names the replay produces for `model`, in `featureNames` order. */
export function replayFeatureNames(model: ReplayModel): string[] {
  const settings = featureSettingsOf(model.settings, model.catalogue.dim);
  return featureNames(settings, { dual: model.settings.dual.enabled, neural: !!model.neural });
}

/**
 * Replays `events` (any order; sorted per user by time, stably) and answers every group in
 * `groups` (any order), calling `sink` once per candidate. Throws when an event's type is not in
 * the configured signals: filter those out first (see `keepConfiguredTypes`).
 */
export function replay(
  events: readonly InteractionEvent[],
  groups: readonly RequestGroup[],
  model: ReplayModel,
  sink: FeatureSink,
  onProgress?: ReplayProgress,
): ReplayStats {
  const started = performance.now();
  const run = new ReplayRun(model, sink);
  const eventsByUser = groupEventsByUser(events);
  const groupsByUser = groupRequestsByUser(groups);

  let done = 0;
  for (const [user, indices] of groupsByUser) {
    const walk = new UserWalk(eventsByUser.get(user) ?? [], run);
    for (const index of indices) {
      run.answer(walk, groups[index]!, index);
      done++;
      if (onProgress && done % PROGRESS_EVERY_GROUPS === 0) onProgress(done, groups.length);
    }
  }
  run.stats.users = groupsByUser.size;
  onProgress?.(done, groups.length);
  run.stats.wallMs = performance.now() - started;
  return run.stats;
}

const PROGRESS_EVERY_GROUPS = 500;

const EMPTY_HISTORY: ResolvedHistory = { entries: [] };

/** What every user's walk shares: contexts, settings, counters. */
class ReplayRun {
  readonly stats: ReplayStats = {
    users: 0,
    eventsApplied: 0,
    groups: 0,
    candidates: 0,
    dualSolves: 0,
    dualIterations: 0,
    applyMs: 0,
    answerMs: 0,
    wallMs: 0,
  };
  readonly update: UpdateContext;
  /** The neural worker's window on its per-user history (the model's); null without one. */
  readonly neuralWindow: EncoderWindow | null;
  private readonly dual: DualContext | null;
  private readonly features;

  constructor(
    private readonly model: ReplayModel,
    private readonly sink: FeatureSink,
  ) {
    const { settings, catalogue } = model;
    this.update = {
      signals: settings.signals,
      layout: layoutOf(settings, catalogue.dim),
      historyMaxEvents: settings.historyMaxEvents,
      pendingMaxEvents: settings.pendingMaxEvents,
      embedding: catalogue.embedding,
    };
    const hasEmbedding = (item: string) => catalogue.embedding(item) !== undefined;
    this.neuralWindow = model.neural ? encoderWindow(model.neural, hasEmbedding) : null;
    this.dual = settings.dual.enabled ? dualContextOf(settings, catalogue) : null;
    this.features = featureSettingsOf(settings, catalogue.dim);
  }

  answer(walk: UserWalk, group: RequestGroup, index: number): void {
    walk.advanceTo(group.atMs);
    const started = performance.now();
    const state = walk.view();
    if (state) this.prepare(walk, state);

    const lookup = this.model.catalogue.embedding;
    const history =
      this.model.historyFeatures === false
        ? EMPTY_HISTORY
        : resolveHistory(state, group.atMs, this.features, lookup);
    const encoding = this.encoding(walk);
    group.items.forEach((item, candidate) => {
      const embedding = lookup(item);
      const methods = { dual: this.dual !== null, neural: this.neuralInputs(encoding, item) };
      this.sink(
        index,
        candidate,
        computeFeatures(state, history, embedding, group.atMs, this.features, methods),
      );
    });

    this.stats.groups++;
    this.stats.candidates += group.items.length;
    this.stats.answerMs += performance.now() - started;
  }

  /** The reader's fold of waiting events, then the worker's dual solve if the state changed. */
  private prepare(walk: UserWalk, state: UserState): void {
    foldPending(state, this.update);
    if (!this.dual || walk.solvedAt === state.eventCount) return;
    const solution = refreshDual(state, this.dual);
    walk.solvedAt = state.eventCount;
    this.stats.dualSolves++;
    this.stats.dualIterations += solution.iterations;
  }

  /**
   * The encoding the neural worker would have stored by `atMs`: null before the user's first
   * event (no neural state), else the model's encoding of the neural history, the worker's call.
   */
  private encoding(walk: UserWalk): Float32Array | null {
    const model = this.model.neural;
    const neural = walk.neural;
    if (!model || !neural || walk.view() === null) return null;
    if (walk.encodedAt !== walk.applied) {
      neural.encoding = model.encode(neural.history, this.model.catalogue.embedding);
      walk.encodedAt = walk.applied;
    }
    return neural.encoding;
  }

  private neuralInputs(encoding: Float32Array | null, item: string): NeuralInputs | null {
    const model = this.model.neural;
    if (!model) return null;
    const embedding = this.model.catalogue.embedding(item);
    return { encoding, itemVector: embedding ? model.itemVector(item, embedding) : null };
  }
}

/**
 * One user's states, advanced through their events in time order: the main state (methods 1
 * and 2, as the events worker keeps it) and, with a model, the neural state (as the neural
 * worker keeps it, its own consumer of the same events).
 */
class UserWalk {
  private next = 0;
  private readonly state: UserState;
  readonly neural: NeuralUserState | null;
  /** `eventCount` when the dual vector was last solved; -1 before the first solve. */
  solvedAt = -1;
  /** `applied` when the neural encoding was last computed; -1 before the first. */
  encodedAt = -1;

  constructor(
    private readonly events: readonly SequencedEvent[],
    private readonly run: ReplayRun,
  ) {
    this.state = emptyUserState(run.update.layout);
    this.neural = run.neuralWindow === null ? null : emptyNeuralState();
  }

  /** Events applied so far. */
  get applied(): number {
    return this.next;
  }

  /** Applies every event with `ts < atMs` not applied yet. */
  advanceTo(atMs: number): void {
    const start = this.next;
    while (this.next < this.events.length && this.events[this.next]!.event.ts < atMs) this.next++;
    if (this.next === start) return;

    // In time order, as they reach the history; any order gives the same state (aggregate.ts).
    const batch = this.events.slice(start, this.next);
    const started = performance.now();
    applyEvents(this.state, batch, this.run.update);
    this.run.stats.applyMs += performance.now() - started;
    this.run.stats.eventsApplied += this.next - start;
    // Any order gives the same neural history: applyNeuralEvents sorts and keeps the newest.
    if (this.neural) applyNeuralEvents(this.neural, batch, this.run.neuralWindow!);
  }

  /** The state as the reader would see it: null before the user's first event. */
  view(): UserState | null {
    return this.next === 0 ? null : this.state;
  }
}

/**
 * Method 2's context for the catalogue, built once per replay; the one place that knows what
 * `refreshDual` takes.
 */
export function dualContextOf(settings: MethodSettings, catalogue: OfflineCatalogue): DualContext {
  return {
    params: settings.dual,
    halfLifeMs: settings.dual.halfLifeMs,
    solver: catalogue.dualSolver(),
    signals: settings.signals,
    embedding: catalogue.embedding,
  };
}

function groupEventsByUser(events: readonly InteractionEvent[]): Map<string, SequencedEvent[]> {
  const byUser = new Map<string, SequencedEvent[]>();
  for (const event of events) {
    const list = byUser.get(event.user);
    if (list) list.push({ event });
    else byUser.set(event.user, [{ event }]);
  }
  for (const list of byUser.values()) {
    if (!isSortedByTime(list)) list.sort((a, b) => a.event.ts - b.event.ts);
  }
  return byUser;
}

function isSortedByTime(list: readonly SequencedEvent[]): boolean {
  for (let i = 1; i < list.length; i++) if (list[i - 1]!.event.ts > list[i]!.event.ts) return false;
  return true;
}

/** Group indices per user, each list ascending by time (stable for equal times). */
function groupRequestsByUser(groups: readonly RequestGroup[]): Map<string, number[]> {
  const byUser = new Map<string, number[]>();
  groups.forEach((group, index) => {
    const list = byUser.get(group.user);
    if (list) list.push(index);
    else byUser.set(group.user, [index]);
  });
  for (const list of byUser.values())
    list.sort((a, b) => groups[a]!.atMs - groups[b]!.atMs || a - b);
  return byUser;
}

/** The events whose type the signals configure, and how many of each other type were left out. */
export function keepConfiguredTypes(
  events: readonly InteractionEvent[],
  settings: MethodSettings,
): { events: InteractionEvent[]; unknownTypes: Map<string, number> } {
  const kept: InteractionEvent[] = [];
  const unknownTypes = new Map<string, number>();
  for (const event of events) {
    if (settings.signals.has(event.type)) kept.push(event);
    else unknownTypes.set(event.type, (unknownTypes.get(event.type) ?? 0) + 1);
  }
  return { events: kept, unknownTypes };
}
