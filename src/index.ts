/**
 * The library entry point of `affinity`: what an online ranker written in TypeScript imports to
 * read features, and the building blocks of the workers and the offline tools.
 */
export { FeatureReader } from './reader/feature-reader.js';
export type {
  FeatureReaderOptions,
  FeatureResponse,
  NeuralSource,
} from './reader/feature-reader.js';
export { computeFeatures, featureNames, resolveHistory } from './reader/features.js';
export type { FeatureSettings, FeatureValues } from './reader/features.js';
export { loadConfig } from './config/config.js';
export type { Config } from './config/config.js';
export { AffinityError } from './errors.js';
export type { InteractionEvent, SignalSpec, Signals } from './events/types.js';
export { parseSignals, DEFAULT_SIGNALS_SPEC } from './events/types.js';
export { applyEvents, emptyUserState } from './state/user-state.js';
export type { UserState } from './state/user-state.js';
export { AffinityWorker } from './workers/events-worker.js';
