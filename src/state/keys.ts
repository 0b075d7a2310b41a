/**
 * Redis key names. Every key of one user shares the hash tag `{<user id>}` and every catalogue
 * key the tag `{catalog}`, so each group lives in one slot and the layout works on Redis
 * Cluster, where a script or transaction may only touch keys of one slot.
 */
export interface KeySpace {
  readonly prefix: string;
}

export function userStateKey(keys: KeySpace, user: string): string {
  return `${keys.prefix}u:{${user}}`;
}

/** Where one writer stages a user's next state before swapping it in (state/store.ts). */
export function userStagingKey(keys: KeySpace, user: string, writerId: string): string {
  return `${keys.prefix}u:{${user}}:next:${writerId}`;
}

export function userNeuralKey(keys: KeySpace, user: string): string {
  return `${keys.prefix}u:{${user}}:neural`;
}

export function catalogMetaKey(keys: KeySpace): string {
  return `${keys.prefix}{catalog}:meta`;
}

export function catalogItemsKey(keys: KeySpace): string {
  return `${keys.prefix}{catalog}:items`;
}

export function catalogChangesKey(keys: KeySpace): string {
  return `${keys.prefix}{catalog}:changes`;
}

export function catalogGramianKey(keys: KeySpace): string {
  return `${keys.prefix}{catalog}:gramian`;
}
