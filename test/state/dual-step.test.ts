/**
 * Method 2's step of the user update: the terms it builds from a user's history, checked
 * against confidences written out by hand, c = |type weight| x value x 2^(-(anchor - ts) / h),
 * and the vector it stores, checked against the float64 reference over those hand-made terms.
 */
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { parseSignals } from '../../src/events/types.js';
import { DualSolver } from '../../src/features/dual-solver.js';
import type { DualParams, DualTerm } from '../../src/features/dual.js';
import { computeGramian } from '../../src/features/gramian.js';
import { dualTerms, exactDual, refreshDual } from '../../src/state/dual-step.js';
import type { SequencedEvent } from '../../src/state/user-state.js';
import { applyEvents, emptyUserState } from '../../src/state/user-state.js';
import { errorSlack, referenceSolve, relativeError } from '../helpers/dual-reference.js';

const DIM = 4;
const DAY_MS = 86_400_000;
/** The newest event's time: the anchor every age is measured from. */
const ANCHOR_MS = 1_700_000_000_000;
const CATALOGUE = new Map<string, Float32Array>([
  ['a', Float32Array.of(0.5, -0.5, 0.5, 0.5)],
  ['b', Float32Array.of(0, 0.6, 0.8, 0)],
  ['c', Float32Array.of(0.8, 0, 0, -0.6)],
  ['d', Float32Array.of(0, 0, 0.6, 0.8)],
  ['e', Float32Array.of(0.6, 0.8, 0, 0)],
]);
const SIGNALS = parseSignals('click:+1,like:+3,purchase:+5,dislike:-3');

function event(item: string, type: string, ageDays: number, value?: number): SequencedEvent {
  const ts = ANCHOR_MS - ageDays * DAY_MS;
  return { event: { user: 'u', item, type, ts, ...(value === undefined ? {} : { value }) } };
}

test('dual terms carry |weight| x value x 2^(-age / half-life) and the type target', () => {
  const state = userWithHistory();
  const expected = handMadeTerms();

  const terms = dualTerms(state, {
    params: params(),
    halfLifeMs: DAY_MS,
    signals: SIGNALS,
    embedding: (item) => CATALOGUE.get(item),
  });

  // Ages are whole half-lives, so every confidence is exact in float64: compared exactly.
  assert.deepEqual(sortTerms(terms), sortTerms(expected));
});

test('the stored dual vector solves the system of the hand-made terms', () => {
  const gramian = computeGramian(CATALOGUE.values(), DIM);
  const p = params();
  const reference = referenceSolve(gramian, CATALOGUE.size, handMadeTerms(), p);
  const base = {
    params: p,
    halfLifeMs: DAY_MS,
    signals: SIGNALS,
    embedding: (item: string) => CATALOGUE.get(item),
  };

  const viaSolver = userWithHistory();
  const solution = refreshDual(viaSolver, { ...base, solver: DualSolver.create(gramian) });
  const viaCg = userWithHistory();
  const cgSolution = refreshDual(viaCg, { ...base, gramian });
  const exact = exactDual(userWithHistory(), { ...base, gramian });

  assert.equal(viaSolver.dual?.vector, solution.vector);
  // Five events entered the solve (the one without an embedding did not), a repeated item twice.
  assert.equal(viaSolver.dual?.terms, 5);
  // Tolerance 1e-9 + errorSlack: the configured tolerance, the float32 rounding of the stored
  // vector (2^-24), float64 rounding; Cholesky's error is of the same order as the latter.
  const iterations = Math.max(solution.iterations, cgSolution.iterations);
  const slack = errorSlack(p.tolerance, DIM, reference.kappa, iterations);
  for (const [name, vector] of [
    ['DualSolver', viaSolver.dual!.vector],
    ['CG', viaCg.dual!.vector],
    ['Cholesky', exact],
  ] as const) {
    const error = relativeError(vector, reference.solution);
    assert.ok(error <= p.tolerance + slack, `${name}: error ${error}`);
  }
});

function params(): DualParams {
  return { a0: 0.5, lambda: 0.1, nu: 0.5, tolerance: 1e-9, maxIterations: 100 };
}

/**
 * Through the update path, so the anchor is the state's own: a repeated item (a, three times,
 * once with a value), a negative type (dislike, target 0), an event with a value (purchase),
 * and an event whose item has no embedding, which the dual solve leaves out.
 */
function userWithHistory() {
  const state = emptyUserState({ dim: DIM, halfLivesMs: [DAY_MS] });
  const events = [
    event('a', 'click', 3, 0.5),
    event('a', 'like', 2),
    event('b', 'dislike', 1),
    event('a', 'like', 1),
    event('missing', 'click', 1),
    event('c', 'purchase', 0, 2.5),
  ];
  applyEvents(state, events, {
    signals: SIGNALS,
    layout: { dim: DIM, halfLivesMs: [DAY_MS] },
    historyMaxEvents: 10,
    pendingMaxEvents: 10,
    embedding: (item) => CATALOGUE.get(item),
  });
  return state;
}

/** The same history by the definition, half-life one day: 2^-age is 1, 1/2, 1/4, 1/8. */
function handMadeTerms(): DualTerm[] {
  const term = (itemId: string, confidence: number, target: number): DualTerm => ({
    itemId,
    embedding: CATALOGUE.get(itemId)!,
    confidence,
    target,
  });
  return [
    term('a', 1 * 0.5 * 2 ** -3, 1),
    term('a', 3 * 2 ** -2, 1),
    term('b', 3 * 2 ** -1, 0),
    term('a', 3 * 2 ** -1, 1),
    term('c', 5 * 2.5 * 2 ** 0, 1),
  ];
}

function sortTerms(terms: readonly DualTerm[]): DualTerm[] {
  const key = (t: DualTerm) => `${t.itemId}:${t.confidence}:${t.target}`;
  return [...terms].sort((x, y) => (key(x) < key(y) ? -1 : key(x) > key(y) ? 1 : 0));
}
