/**
 * Method 2's step of the user update: the targets and confidences of the user's bounded
 * history, then one dual-vector solve (see features/dual.ts for the system, and
 * features/dual-solver.ts for the eigenbasis solver that serves it), warm-started from the
 * user's previous vector.
 *
 * Confidence of a history event: |type weight| x value x 2^(-age / halfLife), its age measured
 * from the user's newest event, so that a user's vector does not drift while they are idle.
 */
import type { Signals } from '../events/types.js';
import { decayFactor } from '../features/decay.js';
import type { DualSolver } from '../features/dual-solver.js';
import type { DualParams, DualSolution, DualTerm } from '../features/dual.js';
import { solveDualCg, solveDualExact } from '../features/dual.js';
import type { Gramian } from '../features/gramian.js';
import type { UserState } from './user-state.js';

/** What turns a user's history into dual terms. */
export interface DualTermsContext {
  readonly params: DualParams;
  readonly halfLifeMs: number;
  readonly signals: Signals;
  readonly embedding: (item: string) => Float32Array | undefined;
}

/**
 * `refreshDual`'s context. `solver` is the serving path: a DualSolver for the current catalogue
 * Gramian, whose `count` is the catalogue size |I|. The `gramian` form runs the plain CG of
 * dual.ts, 10 to 25 times slower; it remains only until StateBuffer.solveDuals passes a solver.
 */
export type DualContext = DualTermsContext &
  ({ readonly solver: DualSolver } | { readonly gramian: Gramian; readonly solver?: undefined });

/** `exactDual`'s context: the Gramian itself, for the Cholesky reference. */
export interface ExactDualContext extends DualTermsContext {
  readonly gramian: Gramian;
}

/** The history of `state` as dual terms; items without an embedding are left out. */
export function dualTerms(state: UserState, context: DualTermsContext): DualTerm[] {
  const anchorMs = state.aggregates.anchorMs ?? 0;
  const terms: DualTerm[] = [];

  for (const entry of state.history) {
    const spec = context.signals.get(entry.type);
    const embedding = context.embedding(entry.item);
    if (!spec || !embedding) continue;
    const decay = decayFactor(Math.max(0, anchorMs - entry.ts), context.halfLifeMs);
    const confidence = spec.weight * (entry.value ?? 1) * decay;
    terms.push({ itemId: entry.item, embedding, confidence, target: spec.target });
  }
  return terms;
}

/** Re-solves the user's dual vector, warm-started from the previous one, and stores it. */
export function refreshDual(state: UserState, context: DualContext): DualSolution {
  const terms = dualTerms(state, context);
  const previous = state.dual?.vector ?? null;
  const solution =
    context.solver !== undefined
      ? context.solver.solve(context.solver.gramian.count, terms, context.params, previous)
      : solveDualCg(context.gramian, context.gramian.count, terms, context.params, previous);

  state.dual = {
    vector: solution.vector,
    iterations: solution.iterations,
    relativeResidual: solution.relativeResidual,
    terms: terms.length,
  };
  return solution;
}

/** The exact (Cholesky) solution over the same terms: the reference for tests and audits. */
export function exactDual(state: UserState, context: ExactDualContext): Float32Array {
  const terms = dualTerms(state, context);
  if (terms.length === 0) return new Float32Array(context.gramian.dim);
  return solveDualExact(context.gramian, context.gramian.count, terms, context.params);
}
