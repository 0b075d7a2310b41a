// Removes the Kafka topics, consumer groups and Redis keys that earlier test runs left behind
// (a run that was interrupted, or one from before the tests cleaned up last-in first-out).
// scripts/run-tests.mjs calls it before the suite; only names the test helpers' own naming
// scheme produces are touched, and only once it is certain no running test still uses them:
//
//   t-run-<start ms, base 36>-<4 hex>-...   test/helpers/services.ts today. Left over once the
//                                           run started more than an hour ago (a test file
//                                           takes a minute).
//   t-<8 hex>-<events|dead-letter|items|worker|worker-items|neural>, keys t-<8 hex>:...
//                                           the earlier scheme, which carries no time. Left
//                                           over once its dead-letter topic is gone: the test
//                                           created its three topics together and deleted
//                                           them together at its end, and a dead-letter topic
//                                           is never re-created (the worker's producer does
//                                           not create topics), unlike the events and items
//                                           topics a consumer still running re-created.
//   dlq-reader-<8 hex>                      the earlier scheme's dead-letter readers.
//
// A group is deleted only when it has no members.

import { Kafka, logLevel } from 'kafkajs';
import { Redis } from 'ioredis';

const ABANDONED_AFTER_MS = 3_600_000;
const CURRENT = /^t-run-([0-9a-z]+)-[0-9a-f]{4}-/;
const EARLIER = /^(t-[0-9a-f]{8})(?:-(?:events|dead-letter|items|worker|worker-items|neural)|:)/;
const EARLIER_READER = /^dlq-reader-[0-9a-f]{8}$/;

/** Resolves with how many topics, groups and keys it deleted. */
export async function removeTestLeftovers({ brokers, redisUrl, nowMs = Date.now() }) {
  const kafka = new Kafka({ clientId: 'test-leftovers', brokers, logLevel: logLevel.NOTHING });
  const admin = kafka.admin();
  await admin.connect();
  try {
    const topics = await admin.listTopics();
    const isLeftover = leftoverRule(topics, nowMs);
    const staleTopics = topics.filter(isLeftover);
    const staleGroups = await emptyGroups(admin, (id) => isLeftover(id) || EARLIER_READER.test(id));
    if (staleGroups.length > 0) await admin.deleteGroups(staleGroups);
    if (staleTopics.length > 0) await admin.deleteTopics({ topics: staleTopics });
    const keys = await deleteKeys(redisUrl, isLeftover);
    return { topics: staleTopics.length, groups: staleGroups.length, keys };
  } finally {
    await admin.disconnect();
  }
}

/** A predicate on a topic, group or key name, given the topics that exist now. */
function leftoverRule(topics, nowMs) {
  const withDeadLetter = new Set();
  for (const topic of topics) {
    const earlier = EARLIER.exec(topic);
    if (earlier && topic.endsWith('-dead-letter')) withDeadLetter.add(earlier[1]);
  }
  return (name) => {
    const current = CURRENT.exec(name);
    if (current) return nowMs - parseInt(current[1], 36) > ABANDONED_AFTER_MS;
    const earlier = EARLIER.exec(name);
    return earlier !== null && !withDeadLetter.has(earlier[1]);
  };
}

async function emptyGroups(admin, matches) {
  const { groups } = await admin.listGroups();
  const candidates = groups.map((group) => group.groupId).filter(matches);
  if (candidates.length === 0) return [];
  const described = await admin.describeGroups(candidates);
  return described.groups.filter((group) => group.members.length === 0).map((g) => g.groupId);
}

async function deleteKeys(redisUrl, isLeftover) {
  const redis = new Redis(redisUrl, { maxRetriesPerRequest: 3 });
  let deleted = 0;
  try {
    let cursor = '0';
    do {
      const [next, keys] = await redis.scan(cursor, 'MATCH', 't-*', 'COUNT', 1_000);
      const stale = keys.filter(isLeftover);
      if (stale.length > 0) deleted += await redis.del(...stale);
      cursor = next;
    } while (cursor !== '0');
  } finally {
    await redis.quit();
  }
  return deleted;
}
