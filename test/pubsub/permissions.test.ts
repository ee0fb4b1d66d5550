// Group patterns in roles (docs/protocols/web-pubsub.md, "Access tokens"):
// `*` any run within one dot-segment, `**` any run across segments, `?` one
// character other than `.`, `\` before `*`, `?` or `\` that character, everything
// else literal; at most five `*` in a role's pattern. Matching reads the name
// once without backtracking, so a hostile group name against any pattern
// answers in milliseconds (issue 18, defect 4: the RegExp it replaced took
// 1.9 s for a 360-character name and grew as n^4).
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { ConnectionPermissions, GroupPattern } from '../../src/pubsub/permissions.ts';

/** A wide correctness bound, not a benchmark: the machine may be loaded. */
const WORST_CASE_MS = 200;

describe('group patterns', () => {
  for (const [pattern, name, expected] of [
    ['a.*', 'a.b', true],
    ['a.*', 'a.', true],
    ['a.*', 'a.b.c', false],
    ['a.**', 'a.b.c', true],
    ['a.**', 'a.', true],
    ['a.**', 'a', false],
    ['**', '', true],
    ['*', '', true],
    ['*', '.', false],
    ['?', 'x', true],
    ['?', '.', false],
    ['?', '', false],
    ['?', 'é', true],
    ['?', '😀', true],
    ['a?c', 'abc', true],
    ['a?c', 'abbc', false],
    ['x*y*z', 'xAyBz', true],
    ['x*y*z', 'xA.yBz', false],
    ['x**z', 'xA.yB.z', true],
    ['***', 'a.b', true],
    ['a**b', 'a.x.b', true],
    ['a**b', 'a.x.c', false],
    ['*.*', 'a.b', true],
    ['*.*', 'ab', false],
    ['a+', 'aa', false],
    ['a+', 'a+', true],
    ['[a]', 'a', false],
    ['logs.**.err', 'logs.a.b.err', true],
    ['logs.**.err', 'logs.err', false],
    ['logs.**err', 'logs.err', true],
    // Azure's escapes: `\` before `*`, `?` or `\` is that character (concept-wildcard-group-roles: `literal\*star`).
    ['literal\\*star', 'literal*star', true],
    ['literal\\*star', 'literalXstar', false],
    ['literal\\*star', 'literal\\Xstar', false],
    ['project\\*123', 'project*123', true],
    ['room\\?', 'room?', true],
    ['room\\?', 'roomx', false],
    ['a\\\\b', 'a\\b', true],
    ['a\\\\*', 'a\\xyz', true],
    ['a\\b', 'a\\b', true],
    ['a\\', 'a\\', true],
  ] as const) {
    it(`'${pattern}' ${expected ? 'matches' : 'does not match'} '${name}'`, () => {
      assert.equal(new GroupPattern(pattern).matches(name), expected);
    });
  }

  it('answers the worst patterns against 1024-character names in milliseconds', () => {
    const cases: [string, string][] = [
      ['*-*-*-*', '-'.repeat(1023) + '.'],
      ['*-*-*-*-*-*-*-*', '-'.repeat(1023) + '.'],
      ['**-**-**-**x', '-'.repeat(1023) + '.'],
      ['*?*?*?*?*?*?b', 'a'.repeat(1024)],
      ['**a'.repeat(300) + 'b', 'a'.repeat(1024)],
      ['*.'.repeat(500) + 'x', 'a.'.repeat(512)],
    ];
    for (const [pattern, name] of cases) {
      const compiled = new GroupPattern(pattern);
      const started = process.hrtime.bigint();
      assert.equal(compiled.matches(name), false);
      const ms = Number(process.hrtime.bigint() - started) / 1e6;
      assert.ok(ms < WORST_CASE_MS, `'${pattern.slice(0, 20)}…' against a ${name.length}-character name took ${ms.toFixed(1)} ms`);
    }
  });

  it('takes at most five `*` in a pattern role, as Azure: one with more grants nothing (before: it granted)', () => {
    const five = new ConnectionPermissions(['webpubsub.sendToGroups.*.*.*.*.*', 'webpubsub.joinLeaveGroups.a.**.**.*']);
    assert.equal(five.allows('sendToGroup', 'a.b.c.d.e'), true);
    assert.equal(five.allows('joinLeaveGroup', 'a.b.c.d'), true);
    const six = new ConnectionPermissions(['webpubsub.sendToGroups.*.*.*.*.*.*', 'webpubsub.joinLeaveGroups.***.***']);
    assert.equal(six.allows('sendToGroup', 'a.b.c.d.e.f'), false);
    assert.equal(six.allows('joinLeaveGroup', 'a.b'), false);
    // Escaped ones are characters, not wildcards.
    assert.equal(new ConnectionPermissions(['webpubsub.sendToGroups.\\*\\*\\*\\*\\*\\*.*']).allows('sendToGroup', '******.x'), true);
  });

  it('answers a role check with a hostile name in milliseconds', () => {
    const permissions = new ConnectionPermissions(['webpubsub.joinLeaveGroups.*-*-*-*']);
    const started = process.hrtime.bigint();
    assert.equal(permissions.allows('joinLeaveGroup', '-'.repeat(1023) + '.'), false);
    assert.ok(Number(process.hrtime.bigint() - started) / 1e6 < WORST_CASE_MS);
    assert.equal(permissions.allows('joinLeaveGroup', 'a-b-c-d'), true);
  });
});

describe('grants and revokes (REST permissions)', () => {
  it('a revoke with a group holds against a role that allows every group or a pattern, and a grant lifts it', () => {
    const p = new ConnectionPermissions(['webpubsub.joinLeaveGroup', 'webpubsub.sendToGroups.team-*']);
    assert.equal(p.allowsEvery('joinLeaveGroup'), true);
    p.revoke('joinLeaveGroup', 'secret');
    assert.equal(p.allows('joinLeaveGroup', 'secret'), false);
    assert.equal(p.allows('joinLeaveGroup', 'other'), true);
    assert.equal(p.allowsEvery('joinLeaveGroup'), false, 'not every group any more');
    p.revoke('sendToGroup', 'team-a');
    assert.equal(p.allows('sendToGroup', 'team-a'), false);
    assert.equal(p.allows('sendToGroup', 'team-b'), true);
    // The denials travel with the session (hand-over and JetStream checkpoints).
    const moved = ConnectionPermissions.fromSnapshot(JSON.parse(JSON.stringify(p.snapshot())));
    assert.equal(moved.allows('joinLeaveGroup', 'secret'), false);
    assert.equal(moved.allows('sendToGroup', 'team-a'), false);
    p.grant('joinLeaveGroup', 'secret');
    assert.equal(p.allows('joinLeaveGroup', 'secret'), true);
    assert.equal(p.allowsEvery('joinLeaveGroup'), true);
    p.revoke('sendToGroup', undefined);
    assert.equal(p.allows('sendToGroup', 'team-b'), false);
    assert.equal(p.allowsEvery('sendToGroup'), false);
    p.grant('sendToGroup', undefined);
    assert.equal(p.allowsEvery('sendToGroup'), true);
  });
});
