// Which nats-server versions keep the copies of a replicated stream alike.
// nats-server 2.9.10 (Debian 12's package) was seen, in a chaos soak of
// single failures under load, to hold one message under sequence N on one
// server and N + 1 on another: each copy decides alone whether a publish
// repeating a message id is a duplicate, and the count of those refused
// (which shifts every later sequence) drifted apart around restarts. Fixes
// are in 2.9.21 (the count made alike when a leader takes over) and 2.10.14
// (a repeat refused by the leader before it reaches the copies). Followers
// cope (stream-resume.ts), but positions kept beside the stream (session
// checkpoints) are in one copy's numbering.

/** The first nats-server version whose replicated streams this relay trusts. */
export const REPLICATED_STREAMS_SINCE = '2.10.14';

/** Whether `version` ("2.9.10", "2.11.0-RC.1") is below `least`; an unreadable version is not. */
export function versionBelow(version: string, least: string): boolean {
  const parse = (v: string) => /^v?(\d+)\.(\d+)\.(\d+)/.exec(v)?.slice(1).map(Number);
  const have = parse(version);
  const want = parse(least);
  if (!have || !want) return false;
  for (let i = 0; i < 3; i++) if (have[i] !== want[i]) return have[i] < want[i];
  return false;
}
