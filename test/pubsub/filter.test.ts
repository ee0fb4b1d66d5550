// REST `filter`: the OData syntax Azure Web PubSub documents ("OData filter
// syntax in Azure Web PubSub service": identifiers, boolean expressions,
// supported operations, operator precedence, examples, formal grammar),
// parsed by filter-parser.ts and evaluated by connection-filter.ts, on sends
// and on :addToGroups / :removeFromGroups, through the published
// @azure/web-pubsub server SDK.
import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { WebPubSubServiceClient } from '@azure/web-pubsub';
import { signJwt } from '../../src/auth/jwt.ts';
import { ConnectionFilter, FilterSyntaxError, type FilterSubject } from '../../src/pubsub/connection-filter.ts';
import { httpRequest } from '../helpers/http.ts';
import { HUB, HUB_KEY, PLAIN, RawPubSubClient, accessUrl, startPubSubRelay } from '../helpers/pubsub.ts';
import { until } from '../helpers/wait.ts';

const alice = { id: 'c1', userId: 'alice', groups: new Set(['g1', "it's"]) };
const anonymous = { id: 'c2', userId: null, groups: new Set<string>() };

function selects(text: string, subject: FilterSubject = alice): boolean {
  return ConnectionFilter.parse(text).matches(subject);
}

function syntaxError(text: string): FilterSyntaxError {
  try {
    ConnectionFilter.parse(text);
  } catch (err) {
    if (err instanceof FilterSyntaxError) return err;
    throw err;
  }
  throw new Error(`${text} parsed`);
}

describe('OData filter: what it selects', () => {
  it('compares userId and connectionId with eq and ne, literal on either side, null for no user', () => {
    assert.equal(selects("userId eq 'alice'"), true);
    assert.equal(selects("'alice' eq userId"), true);
    assert.equal(selects("userId ne 'alice'"), false);
    assert.equal(selects("connectionId eq 'c1'"), true);
    assert.equal(selects('userId eq null', anonymous), true);
    assert.equal(selects('userId ne null'), true);
  });

  it('tests membership with in: a list of values, or a literal in groups', () => {
    assert.equal(selects("userId in ('bob', 'alice')"), true);
    assert.equal(selects("connectionId in ('x')"), false);
    assert.equal(selects("'g1' in groups"), true);
    assert.equal(selects("'g2' in groups"), false);
    assert.equal(selects("'it''s' in groups"), true, 'a quote written twice');
  });

  it('ranges over groups with any(), with or without a lambda', () => {
    assert.equal(selects("groups/any(g: g eq 'g1')"), true);
    assert.equal(selects("groups/any(g: g ne 'g1' and g ne 'it''s')"), false);
    assert.equal(selects('groups/any()'), true);
    assert.equal(selects('groups/any()', anonymous), false);
    assert.equal(selects("groups/any(x: x in ('a', 'g1'))"), true);
  });

  it('combines with not, and, or and parentheses; and binds tighter than or', () => {
    assert.equal(selects("not('g1' in groups)"), false);
    assert.equal(selects("not ('g2' in groups)"), true);
    assert.equal(selects("userId eq 'bob' or userId eq 'alice' and 'g1' in groups"), true);
    assert.equal(selects("(userId eq 'bob' or userId eq 'alice') and 'g2' in groups"), false);
    assert.equal(selects("userId ne 'user1' and userId ne 'user2'"), true);
  });
});

// The connections of Azure's examples: `user-ab-de` in two groups, and users
// whose ids its string-function rows name.
const userAbDe = { id: 'conn-1', userId: 'user-ab-de', groups: new Set(['group1', 'group2']) };
const withUser = (userId: string | null, groups: string[] = []): FilterSubject => ({ id: `c-${userId}`, userId, groups: new Set(groups) });

/** Which of `subjects` (by user id) a filter selects. */
function selected(text: string, subjects: FilterSubject[]): (string | null)[] {
  const filter = ConnectionFilter.parse(text);
  return subjects.filter((s) => filter.matches(s)).map((s) => s.userId);
}

describe('OData filter: identifiers', () => {
  it('userId, connectionId and groups are case-insensitive', () => {
    assert.equal(selects("UserId eq 'user-ab-de'", userAbDe), true);
    assert.equal(selects("USERID eq 'user-ab-de'", userAbDe), true);
    assert.equal(selects("ConnectionID eq 'conn-1'", userAbDe), true);
    assert.equal(selects("'group1' in Groups", userAbDe), true);
    assert.equal(selects("GROUPS/any(g: g eq 'group2')", userAbDe), true);
    assert.equal(selects('length(groupS) eq 2', userAbDe), true);
  });

  it('values compare case-sensitively: tolower and toupper are how to ignore case', () => {
    assert.equal(selects("userId eq 'USER-AB-DE'", userAbDe), false);
    assert.equal(selects("'GROUP1' in groups", userAbDe), false);
  });
});

describe('OData filter: boolean literals', () => {
  it('true selects every connection, false none, and they combine like conditions', () => {
    assert.equal(selects('true', userAbDe), true);
    assert.equal(selects('true', anonymous), true);
    assert.equal(selects('false', userAbDe), false);
    assert.equal(selects("false or userId eq 'user-ab-de'", userAbDe), true);
    assert.equal(selects('not false and (true)', userAbDe), true);
    assert.equal(selects("startswith(userId, 'user') eq true", userAbDe), true);
  });
});

describe('OData filter: supported operations', () => {
  const lengths = ['ab', 'abcd', 'abcdefghij', 'abcdefghijk'].map((u) => withUser(u));

  it('logical operators: and, or, not', () => {
    assert.deepEqual(selected('length(userId) le 10 and length(userId) gt 3', lengths), ['abcd', 'abcdefghij']);
    assert.deepEqual(selected('length(userId) gt 10 or length(userId) le 3', lengths), ['ab', 'abcdefghijk']);
    assert.deepEqual(selected("not endswith(userId, 'milk')", [withUser('oatmilk'), withUser('water')]), ['water']);
  });

  it('comparison operators: eq, ne, gt, ge, lt, le', () => {
    assert.deepEqual(selected('length(userId) gt 10', lengths), ['abcdefghijk']);
    assert.deepEqual(selected('length(userId) ge 10', lengths), ['abcdefghij', 'abcdefghijk']);
    assert.deepEqual(selected('length(userId) lt 3', lengths), ['ab']);
    assert.deepEqual(selected('length(userId) le 4', lengths), ['ab', 'abcd']);
    assert.deepEqual(selected("userId ne 'ab'", lengths), ['abcd', 'abcdefghij', 'abcdefghijk']);
    assert.equal(selects("userId eq 'user1'", withUser('user1')), true);
    assert.equal(selects('userId eq null', withUser(null)), true);
    assert.equal(selects('userId ne null', withUser(null)), false);
  });

  it('orders strings by code unit and integers by value, literal on either side, with signs', () => {
    assert.deepEqual(selected("userId gt 'b'", [withUser('a'), withUser('b'), withUser('ba'), withUser('B')]), ['ba']);
    assert.deepEqual(selected("userId le 'B'", [withUser('a'), withUser('B'), withUser('A')]), ['B', 'A']);
    assert.equal(selects("indexof(userId, 'x') eq -1", userAbDe), true);
    assert.equal(selects('10 gt length(userId)', userAbDe), false);
    assert.equal(selects('-1 lt +1', userAbDe), true);
    assert.equal(selects('007 eq 7', userAbDe), true);
  });

  it("in: a parenthesized list of values, or an expression that is the connection's groups", () => {
    assert.equal(selects("'group1' in groups", userAbDe), true);
    assert.equal(selects("userId in ('user1', 'user2')", withUser('user2')), true);
    assert.equal(selects("userId in ('user1', 'user2')", withUser('user3')), false);
    assert.equal(selects("'group2' in (groups)", userAbDe), true);
    assert.equal(selects("userId in (connectionId, 'x')", { id: 'same', userId: 'same', groups: new Set() }), true);
    assert.equal(selects("tolower(userId) in ('user-ab-de')", { ...userAbDe, userId: 'User-AB-de' }), true);
    assert.equal(selects('userId in groups', withUser('g', ['g'])), true);
    assert.equal(selects('length(userId) in (1, 2, 10)', userAbDe), true);
    assert.equal(selects("userId in ('a', null)", anonymous), true);
  });

  it('grouping: parentheses around conditions and around values', () => {
    assert.equal(selects("userId eq 'user1' or (not (startswith(userId,'user2')))", withUser('user1')), true);
    assert.equal(selects("userId eq 'user1' or (not (startswith(userId,'user2')))", withUser('user2x')), false);
    assert.equal(selects("userId eq 'user1' or (not (startswith(userId,'user2')))", withUser('other')), true);
    assert.equal(selects("(userId) eq ('user-ab-de')", userAbDe), true);
    assert.equal(selects('((length(userId))) eq 10', userAbDe), true);
  });
});

describe('OData filter: string functions', () => {
  it("each row of Azure's table selects the user it names", () => {
    assert.equal(selects("tolower(userId) eq 'user1'", withUser('USER1')), true);
    assert.equal(selects("toupper(userId) eq 'USER1'", withUser('user1')), true);
    assert.equal(selects("trim(userId) eq 'user1'", withUser(' user1 ')), true);
    assert.equal(selects("substring(userId,5,2) eq 'ab'", userAbDe), true);
    assert.equal(selects("endswith(userId,'de')", userAbDe), true);
    assert.equal(selects("startswith(userId,'user')", userAbDe), true);
    assert.equal(selects("indexof(userId,'-ab-') ge 0", userAbDe), true);
    assert.equal(selects('length(userId) gt 1', userAbDe), true);
  });

  it('and the opposite answers', () => {
    assert.equal(selects("tolower(userId) eq 'user1'", withUser('USER2')), false);
    assert.equal(selects("trim(userId) eq 'user1'", withUser(' user1x ')), false);
    assert.equal(selects("substring(userId,5,2) eq 'ab'", withUser('user-cd-ab')), false);
    assert.equal(selects("endswith(userId,'ab')", userAbDe), false);
    assert.equal(selects("startswith(userId,'ab')", userAbDe), false);
    assert.equal(selects("indexof(userId,'-cd-') ge 0", userAbDe), false);
    assert.equal(selects("indexof(userId,'-ab-') eq 4", userAbDe), true);
    assert.equal(selects('length(userId) gt 10', userAbDe), false);
  });

  it("the grammar's others: substring from an index, contains, concat; on connectionId too", () => {
    assert.equal(selects("substring(userId, 5) eq 'ab-de'", userAbDe), true);
    assert.equal(selects("substring(userId, 8, 10) eq 'de'", userAbDe), true, 'a length past the end stops at the end');
    assert.equal(selects("substring(userId, 99) eq ''", userAbDe), true, 'a start past the end is empty');
    assert.equal(selects("contains(userId, '-ab-')", userAbDe), true);
    assert.equal(selects("contains(userId, 'xyz')", userAbDe), false);
    assert.equal(selects("concat(userId, '!') eq 'user-ab-de!'", userAbDe), true);
    assert.equal(selects("concat('conn', '-1') eq connectionId", userAbDe), true);
    assert.equal(selects("startswith(connectionId, 'conn-')", userAbDe), true);
    assert.equal(selects("tolower(toupper(trim(substring(userId, 0, 4)))) eq 'user'", userAbDe), true);
    assert.equal(selects("startswith(userId, '')", userAbDe), true);
  });

  it('a connection without a user: string and integer functions give null, boolean ones false', () => {
    assert.equal(selects("startswith(userId,'user')", anonymous), false);
    assert.equal(selects("not endswith(userId, 'milk')", anonymous), true);
    assert.equal(selects("contains(userId, '')", anonymous), false);
    assert.equal(selects('length(userId) gt 1', anonymous), false);
    assert.equal(selects('length(userId) lt 1', anonymous), false);
    assert.equal(selects('length(userId) eq null', anonymous), true);
    assert.equal(selects('length(userId) ge null', anonymous), true);
    assert.equal(selects('length(userId) ne null', anonymous), false);
    assert.equal(selects('tolower(userId) eq null', anonymous), true);
    assert.equal(selects("concat(userId, 'x') eq null", anonymous), true);
    assert.equal(selects("indexof(userId, 'a') eq null", anonymous), true);
    assert.equal(selects('not (length(userId) gt 5)', anonymous), true);
    assert.equal(selects("userId in ('a', 'b')", anonymous), false);
    assert.equal(selects('userId in groups', anonymous), false);
  });
});

describe('OData filter: collection functions and lambdas', () => {
  it('length(groups) counts the groups the connection is in', () => {
    assert.equal(selects('length(groups) gt 1', userAbDe), true);
    assert.equal(selects('length(groups) gt 1', withUser('x', ['only'])), false);
    assert.equal(selects('length(groups) eq 0', anonymous), true);
    assert.equal(selects('length((groups)) eq 2', userAbDe), true);
  });

  it('groups/any takes string functions on its variable', () => {
    assert.equal(selects("groups/any(g: startswith(g, 'group'))", userAbDe), true);
    assert.equal(selects("groups/any(g: endswith(g, '3'))", userAbDe), false);
    assert.equal(selects("groups/any(g: length(g) gt 5 and g ne 'group1')", userAbDe), true);
    assert.equal(selects("groups/any(G: G eq 'group1') and length(groups) eq 2", userAbDe), true);
  });
});

describe('OData filter: operator precedence', () => {
  it('comparisons bind tighter than and, and tighter than or', () => {
    const users = ['', 'a', 'ab', 'abcd', 'abcdefgh', 'abcdefghij'].map((u) => withUser(u)).concat(withUser(null));
    const bare = 'length(userId) gt 0 and length(userId) lt 3 or length(userId) gt 7 and length(userId) lt 10';
    const grouped = '((length(userId) gt 0) and (length(userId) lt 3)) or ((length(userId) gt 7) and (length(userId) lt 10))';
    assert.deepEqual(selected(bare, users), ['a', 'ab', 'abcdefgh']);
    assert.deepEqual(selected(grouped, users), selected(bare, users));
    assert.deepEqual(selected("userId eq 'a' or userId eq 'ab' and false", users), ['a']);
  });

  it('not binds tighter than comparisons: not length(userId) gt 5 is refused, not (…) is the fix', () => {
    assert.equal(syntaxError('not length(userId) gt 5').position, 0);
    assert.deepEqual(selected('not (length(userId) gt 5)', [withUser('abc'), withUser('abcdefg')]), ['abc']);
    assert.equal(selects("not startswith(userId, 'user') or true", userAbDe), true);
  });
});

describe('OData filter: in binds tighter than not, comparisons chain (OData, ODataLib)', () => {
  it("reads not 'g1' in groups as not ('g1' in groups), as releases before the type checks did", () => {
    assert.equal(selects("not 'g1' in groups"), false);
    assert.equal(selects("not 'g2' in groups"), true);
    assert.equal(selects("not userId in ('alice', 'bob')"), false);
    assert.equal(selects("not userId in ('bob')"), true);
    assert.equal(selects("userId eq 'alice' and not 'g2' in groups"), true);
  });

  it('chains comparisons left to right, a boolean compared with a boolean', () => {
    assert.equal(selects("'g1' in groups eq true"), true);
    assert.equal(selects("'g2' in groups eq true"), false);
    assert.equal(selects("userId eq 'alice' eq true"), true);
    assert.equal(selects("userId eq 'bob' eq false"), true);
    assert.equal(selects("userId eq 'alice' ne 'g1' in groups"), false);
    assert.match(syntaxError("userId eq 'alice' eq 'alice'").message, /cannot compare a boolean with a string/);
    assert.match(syntaxError("userId eq 'alice' gt true").message, /does not order booleans/);
  });

  it('bounds a chain as it bounds nesting', () => {
    assert.equal(selects('true' + ' eq true'.repeat(30)), true);
    assert.match(syntaxError('true' + ' eq true'.repeat(40)).message, /nested deeper/);
    assert.match(syntaxError("'a' in groups" + ' in (true)'.repeat(40)).message, /nested deeper/);
  });
});

describe("OData filter: Azure's examples", () => {
  const members = [
    withUser('user1', ['group1']),
    withUser('user2', ['group2']),
    withUser('user3', ['group3', 'group1']),
    withUser('user4', ['group4']),
    withUser("user'1", []),
  ];

  it('send to multiple groups', () => {
    assert.deepEqual(selected("'group1' in groups or 'group2' in groups or 'group3' in groups", members), ['user1', 'user2', 'user3']);
  });

  it('send to multiple users in some specific group', () => {
    assert.deepEqual(selected("userId in ('user1', 'user2', 'user3') and 'group1' in groups", members), ['user1', 'user3']);
  });

  it('send to some user but not some specific connectionId', () => {
    const twice = [{ id: '123', userId: 'user1', groups: new Set<string>() }, { id: '456', userId: 'user1', groups: new Set<string>() }];
    assert.deepEqual(
      twice.filter((c) => ConnectionFilter.parse("userId eq 'user1' and connectionId ne '123'").matches(c)).map((c) => c.id),
      ['456'],
    );
  });

  it('send to some user not in some specific group', () => {
    assert.deepEqual(selected("userId eq 'user1' and (not ('group1' in groups))", members), []);
    assert.deepEqual(selected("userId eq 'user2' and (not ('group1' in groups))", members), ['user2']);
  });

  it("escape ' when userId contains '", () => {
    assert.deepEqual(selected("userId eq 'user''1'", members), ["user'1"]);
  });
});

describe('OData filter: malformed filters name the position', () => {
  it('reports where the parser stopped', () => {
    assert.equal(syntaxError("userId eq 'a").position, 10);
    assert.equal(syntaxError("userId eq 'a' oops").position, 14);
    assert.equal(syntaxError('userId gt 1').position, 7);
    assert.equal(syntaxError("name eq 'a'").position, 0);
    assert.equal(syntaxError("(userId eq 'a'").position, 14);
    assert.equal(syntaxError("groups eq 'a'").position, 7);
    assert.equal(syntaxError('').position, 0);
    assert.match(syntaxError("userId eq 'a' and").message, /at position 17$/);
  });

  it('refuses types the grammar does not put together, at the operator or the operand', () => {
    assert.equal(syntaxError("length(userId) eq 'a'").position, 15);
    assert.equal(syntaxError('userId').position, 0);
    assert.equal(syntaxError('groups').position, 0);
    assert.equal(syntaxError("userId eq 'a' and connectionId").position, 18);
    assert.equal(syntaxError('length(userId)').position, 0);
    assert.equal(syntaxError('true gt false').position, 5);
    assert.equal(syntaxError('1 in groups').position, 2);
    assert.equal(syntaxError("startswith(length(userId), 'a')").position, 11);
    assert.equal(syntaxError("tolower(groups) eq 'a'").position, 8);
    assert.equal(syntaxError("groups/any(g: g)").position, 14);
    assert.equal(syntaxError("userId in ('a', 1)").position, 16);
    assert.equal(syntaxError("userId eq 'a' eq 'b'").position, 14);
  });

  it('refuses unknown functions, wrong arity, non-literal or negative substring counts, and huge integers', () => {
    assert.equal(syntaxError("lower(userId) eq 'a'").position, 0);
    assert.equal(syntaxError("startsWith(userId, 'a')").position, 0, 'function names are the lowercase ones of the grammar');
    assert.equal(syntaxError("startswith(userId)").position, 0);
    assert.equal(syntaxError("substring(userId, 1, 2, 3) eq 'a'").position, 0);
    assert.equal(syntaxError("substring(userId, -1) eq 'a'").position, 18);
    assert.equal(syntaxError("substring(userId, length(userId)) eq 'a'").position, 18);
    assert.equal(syntaxError("substring(userId, 'a') eq 'a'").position, 18);
    assert.equal(syntaxError('length(userId) gt 99999999999999999999').position, 18);
    assert.equal(syntaxError('length(userId) gt 1.5').position, 19);
    assert.equal(syntaxError('length(userId) gt - 1').position, 18);
    assert.equal(syntaxError('userId eq and').position, 10);
    assert.equal(syntaxError("userId in 'a'").position, 10);
    assert.equal(syntaxError("groups/any(g: groups/any(h: h eq g))").position, 14);
    assert.equal(syntaxError("groups/any(userid: true)").position, 11);
    assert.equal(syntaxError("groups/any(startswith: true)").position, 11);
  });

  it('bounds length and nesting', () => {
    assert.match(syntaxError("userId eq '" + 'x'.repeat(5000) + "'").message, /longer than/);
    assert.match(syntaxError('not '.repeat(40) + "userId eq 'a'").message, /nested deeper/);
    assert.match(syntaxError('('.repeat(40) + "userId eq 'a'" + ')'.repeat(40)).message, /nested deeper/);
    assert.match(syntaxError('tolower('.repeat(40) + 'userId' + ')'.repeat(40) + " eq 'a'").message, /nested deeper/);
    assert.match(syntaxError("userId in (" + '('.repeat(40) + "'a'" + ')'.repeat(41)).message, /nested deeper/);
    // (Of a literal: 30 case mappings of userId are refused for their string work, MAX_FILTER_WORK.)
    assert.equal(selects('tolower('.repeat(30) + "'ALICE'" + ')'.repeat(30) + ' eq userId'), true, 'under the bound');
    assert.equal(selects('true' + ' or true'.repeat(500)), true, 'a long chain is not deep');
  });

  it('bounds the strings it may build: a concat tree over 1,024-character names is refused at the parse (before: seconds of work per connection)', () => {
    // Each level doubles: 2^8 names of up to 1,024 characters (a group's longest) would be 262,144 characters at each step.
    let tree = 'g';
    for (let level = 0; level < 8; level++) tree = `concat(${tree}, ${tree})`;
    const err = syntaxError(`groups/any(g: contains(tolower(${tree}), 'zz'))`);
    assert.match(err.message, /concat\(\) could build a string of 8192 characters; at most 4096/, "refused at the first concat past the bound");
    assert.match(syntaxError(`contains(toupper(concat(userId, '${'x'.repeat(400)}')), 'zz')`).message, /toupper\(\) could build a string of 4272 characters/);
    // A case mapping can triple a string (before: tolower was counted as never growing; U+0130 lower-cased is two characters).
    assert.equal('\u0130'.repeat(1024).toLowerCase().length, 2048);
    assert.match(syntaxError(`tolower(concat(concat(userId, userId), 'x')) eq 'a'`).message, /tolower\(\) could build a string of 6147 characters/);
    assert.equal(selects(`tolower(toupper(concat(userId, 'X'))) eq 'alicex'`), true, 'case calls around case calls count once: 3,075');
    assert.equal(selects(`toupper(substring(concat(userId, userId), 0, 5)) eq 'ALICE'`), true, 'a substring of a literal length is no longer than it');
    // Within the bound: names and literals of their own lengths.
    assert.equal(selects(`contains(concat(concat(userId, userId), concat(connectionId, userId)), 'alicealice')`), true);
    assert.equal(selects(`groups/any(g: concat(g, '${'y'.repeat(1500)}') eq 'g1${'y'.repeat(1500)}')`), true);
  });

  it('bounds the string work of groups/any per group: case mappings of names a client chose, repeated, are refused at the parse (before: seconds per connection)', () => {
    // A client in 1,000 groups named with 1,024 x U+0390 (which upper-cases to three characters each).
    const hostile = { id: 'c', userId: 'u', groups: new Set(Array.from({ length: 1000 }, (_, i) => ('\u0390'.repeat(1024) + i).slice(-1024))) };
    const clause = (i: number) => `contains(toupper(tolower(toupper(g))),'x${i}')`;
    const err = syntaxError(`groups/any(g: ${Array.from({ length: 40 }, (_, i) => clause(i)).join(' or ')})`);
    assert.match(err.message, /'any' could read \d+ characters of strings per group; at most 16384/);
    assert.equal(err.position, 0);
    // tolower(g) once (2,048), each contains reading what it made (3,072 and the literal).
    const six = Array.from({ length: 6 }, (_, i) => `contains(tolower(g),'${'abcdef'[i]}')`).join(' or ');
    assert.match(syntaxError(`groups/any(g: ${six})`).message, /could read 20486 characters/);
    // What filters do stays: a case mapping of the group named again and again (computed once per group), a few of
    // them, comparisons and substrings of the group, any number of plain comparisons.
    for (const text of [
      "groups/any(g: startswith(toupper(g),'A') or startswith(toupper(g),'B') or startswith(toupper(g),'C') or startswith(toupper(g),'D'))",
      `groups/any(g: ${Array.from({ length: 30 }, (_, i) => `tolower(g) eq 'room-${i}'`).join(' or ')})`,
      "groups/any(g: contains(tolower(g),'a') or contains(tolower(g),'b') or contains(toupper(g),'C') or startswith(trim(g), 'x'))",
      "groups/any(g: contains(tolower(g), 'chat'))",
      "groups/any(g: tolower(g) eq 'lobby' and length(g) gt 3 and substring(g, 0, 5) eq 'room-')",
      `groups/any(g: ${Array.from({ length: 150 }, (_, i) => `g eq 'x${i}'`).join(' or ')})`,
    ]) {
      const filter = ConnectionFilter.parse(text);
      assert.equal(filter.matches(hostile), false, text);
    }
  });

  it('bounds the string work of the whole filter per connection: case mappings of user ids, repeated, are refused at the parse (before: 3.4 s over 1,000 connections)', () => {
    // 1,000 connections whose user ids are 1,024 x U+0390 (upper-cased, three characters each): whoever holds the hub's
    // key signs such ids into tokens, and an app may take them from its users.
    const hostile = Array.from({ length: 1000 }, (_, i) => ({ id: `c${i}`, userId: ('\u0390'.repeat(1024) + i).slice(-1024), groups: new Set<string>() }));
    const clause = 'toupper(userId) eq toupper(userId)';
    const largest = Array.from({ length: 104 }, () => clause).join(' and ');
    assert.ok(largest.length <= 4096, String(largest.length));
    const err = syntaxError(largest);
    assert.match(err.message, /the filter could read \d+ characters of strings per connection; at most 32768/);
    assert.equal(err.position, 0);
    // As many as the bound takes stay cheap over them all.
    const most = ConnectionFilter.parse(Array.from({ length: 4 }, () => clause).join(' and '));
    const started = performance.now();
    assert.equal(hostile.filter((c) => most.matches(c)).length, 1000);
    assert.ok(performance.now() - started < 2000, `${performance.now() - started} ms over 1,000 connections`);
    // What filters do stays: string functions of the fields, a few, any number of comparisons and prefixes.
    for (const text of [
      `contains(concat(concat(userId, userId), concat(connectionId, userId)), 'alicealice')`,
      Array.from({ length: 12 }, (_, i) => `contains(userId, 'x${i}')`).join(' or '),
      Array.from({ length: 6 }, (_, i) => `contains(tolower(userId), 'x${i}')`).join(' or '),
      Array.from({ length: 120 }, (_, i) => `startswith(userId, 'x${i}')`).join(' or '),
      Array.from({ length: 120 }, (_, i) => `tolower(userId) eq 'x${i}'`).join(' or '),
    ]) {
      assert.ok(text.length <= 4096, text.slice(0, 40));
      assert.equal(ConnectionFilter.parse(text).matches(hostile[0]), false, text.slice(0, 40));
    }
  });

  it('bounds the steps of groups/any per group, a list of names being one step (before: seconds over 10,000 connections)', () => {
    // 10,000 connections in the same 100 groups: the body runs a million times per call.
    const groups = new Set(Array.from({ length: 100 }, (_, i) => `group-${i}`));
    const many = Array.from({ length: 10000 }, (_, i) => ({ id: `c${i}`, userId: `u${i}`, groups }));
    const clauses = (n: number, clause: (i: number) => string) => Array.from({ length: n }, (_, i) => clause(i)).join(' or ');
    const refused = syntaxError(`groups/any(g: ${clauses(100, (i) => `startswith(g,'x${i}')`)})`);
    assert.match(refused.message, /'any' takes 301 steps per group; at most 32/);
    assert.equal(refused.position, 0);
    assert.match(syntaxError(`groups/any(g: g in (${clauses(40, () => 'userId').replaceAll(' or ', ',')}))`).message, /steps per group/);
    // Equalities with literals, written either way round or as `in`, are one set lookup: any number is taken.
    const names = `groups/any(g: ${clauses(250, (i) => (i % 2 ? `g eq 'x${i}'` : `'x${i}' eq g`))} or g in ('group-7', 'y'))`;
    for (const text of [names, `groups/any(g: ${clauses(140, (i) => `tolower(g) eq 'x${i}'`)} or startswith(g, 'nope'))`]) {
      const filter = ConnectionFilter.parse(text);
      const started = performance.now();
      const selected = many.filter((c) => filter.matches(c)).length;
      assert.ok(performance.now() - started < 1500, `${text.slice(0, 40)}: ${performance.now() - started} ms over 10,000 connections`);
      assert.equal(selected, text === names ? 10000 : 0);
    }
    assert.equal(selects(`userId eq 'bob' or userId eq 'alice' or 'g1' in groups`), true);
    assert.equal(selects(`groups/any(g: g eq 'nope' or 'it''s' eq g)`), true);
    assert.equal(selects(`userId eq 'x' or userId in ('y', 'alice')`), true);
    assert.equal(selects(`userId eq 'x' or userId in ('y', 'z')`), false);
    assert.equal(selects(`userId eq 'x' or userId eq 'y'`, anonymous), false);
  });

  it('costs at most its length times the groups: the largest filter over many groups stays cheap', () => {
    const many = { id: 'c', userId: 'u', groups: new Set(Array.from({ length: 2000 }, (_, i) => `group-${i}`)) };
    const clauses = Array.from({ length: 150 }, (_, i) => `g eq 'x${i}'`).join(' or ');
    const text = `groups/any(g: ${clauses}) or ${'not '.repeat(30)}startswith(userId, 'v')`;
    assert.ok(text.length <= 4096, String(text.length));
    const filter = ConnectionFilter.parse(text);
    const started = performance.now();
    for (let i = 0; i < 10; i++) assert.equal(filter.matches(many), false);
    assert.ok(performance.now() - started < 5000, 'ten evaluations of 150 clauses over 2000 groups');
  });
});

describe('REST filter', () => {
  it('filters sends to all, to a group and to a user, and :addToGroups / :removeFromGroups', async (t) => {
    const relay = await startPubSubRelay(t);
    const svc = new WebPubSubServiceClient(`Endpoint=${relay.url};AccessKey=${HUB_KEY};Version=1.0;`, HUB, { allowInsecureConnection: true });
    const a = await RawPubSubClient.connect(accessUrl(relay.url, { userId: 'alice' }), PLAIN, t);
    const b = await RawPubSubClient.connect(accessUrl(relay.url, { userId: 'bob' }), PLAIN, t);
    const b2 = await RawPubSubClient.connect(accessUrl(relay.url, { userId: 'bob' }), PLAIN, t);
    const b2Id = (await b2.waitFor((m) => m.event === 'connected')).connectionId;
    await a.request({ type: 'joinGroup', group: 'vip' });
    await b.request({ type: 'joinGroup', group: 'vip' });
    await svc.sendToAll('not alice', { contentType: 'text/plain', filter: "userId ne 'alice'" });
    await svc.sendToAll('not vip', { contentType: 'text/plain', filter: "not('vip' in groups)" });
    await svc.group('vip').sendToAll('vip bob', { contentType: 'text/plain', filter: "userId eq 'bob'" });
    await svc.sendToUser('bob', 'bob not b2', { contentType: 'text/plain', filter: `connectionId ne '${b2Id.replace(/'/g, "''")}'` });
    await svc.addConnectionsToGroups(['late'], "userId eq 'bob' and groups/any()");
    await svc.group('late').sendToAll('late', { contentType: 'text/plain' });
    await svc.removeConnectionsFromGroups(['vip'], "userId in ('alice')");
    await svc.group('vip').sendToAll('vip after', { contentType: 'text/plain' });
    await until(() => b.dataMessages().length === 5, 5000, 'bob');
    await new Promise((r) => setTimeout(r, 100));
    assert.deepEqual(a.dataMessages().map((m) => m.data), []);
    assert.deepEqual(b.dataMessages().map((m) => m.data), ['not alice', 'vip bob', 'bob not b2', 'late', 'vip after']);
    assert.deepEqual(b2.dataMessages().map((m) => m.data), ['not alice', 'not vip']);
  });

  it(':removeFromGroups and :addToGroups without a filter (absent, null or empty) take every connection of the hub, as a send with an empty one reaches all', async (t) => {
    const relay = await startPubSubRelay(t);
    const svc = new WebPubSubServiceClient(`Endpoint=${relay.url};AccessKey=${HUB_KEY};Version=1.0;`, HUB, { allowInsecureConnection: true });
    const a = await RawPubSubClient.connect(accessUrl(relay.url, { userId: 'alice', groups: ['g1', 'g2'] }), PLAIN, t);
    const b = await RawPubSubClient.connect(accessUrl(relay.url, { userId: 'bob', groups: ['g1'] }), PLAIN, t);
    const call = async (op: string, body: object) => {
      const url = `${relay.url}/api/hubs/${HUB}/${op}`;
      return httpRequest(url, {
        method: 'POST',
        headers: { 'content-type': 'application/json', authorization: `Bearer ${signJwt({ aud: url }, HUB_KEY, 60)}` },
        body: Buffer.from(JSON.stringify(body)),
      });
    };
    // As the .NET SDK's RemoveConnectionsFromGroups(groups) sends it: no filter (before: 400 BadRequest).
    assert.equal((await call(':removeFromGroups', { groups: ['g1'] })).status, 200);
    assert.equal((await call(':addToGroups', { groups: ['g3'], filter: null })).status, 200);
    await svc.group('g1').sendToAll('g1', { contentType: 'text/plain' });
    await svc.group('g2').sendToAll('g2', { contentType: 'text/plain' });
    await svc.group('g3').sendToAll('g3', { contentType: 'text/plain' });
    await until(() => a.dataMessages().length === 2 && b.dataMessages().length === 1, 5000, 'the sends');
    await new Promise((r) => setTimeout(r, 100));
    assert.deepEqual(a.dataMessages().map((m) => m.data), ['g2', 'g3']);
    assert.deepEqual(b.dataMessages().map((m) => m.data), ['g3']);
    // A filter of another type is refused.
    assert.equal((await call(':removeFromGroups', { groups: ['g2'], filter: 5 })).status, 400);
    // An empty filter is none, as in Microsoft's emulator (@azure/web-pubsub's addConnectionsToGroups(groups, filter)
    // takes one, and '' is how a caller passes none; before: 400 FilterInvalid). White space only is still refused.
    assert.equal((await call(':addToGroups', { groups: ['g4'], filter: '' })).status, 200);
    assert.equal((await call(':addToGroups', { groups: ['g5'], filter: ' ' })).status, 400);
    const url = `${relay.url}/api/hubs/${HUB}/:send?filter=`;
    const sent = await httpRequest(url, {
      method: 'POST',
      headers: { 'content-type': 'text/plain', authorization: `Bearer ${signJwt({ aud: url.split('?')[0] }, HUB_KEY, 60)}` },
      body: Buffer.from('to all'),
    });
    assert.equal(sent.status, 202);
    await svc.group('g4').sendToAll('g4', { contentType: 'text/plain' });
    await until(() => a.dataMessages().length === 4 && b.dataMessages().length === 3, 5000, 'the sends with an empty filter');
    assert.deepEqual(a.dataMessages().map((m) => m.data).slice(2), ['to all', 'g4']);
    assert.deepEqual(b.dataMessages().map((m) => m.data).slice(1), ['to all', 'g4']);
  });

  it("takes Azure's string and collection functions: startswith(userId,'a') reaches only the users it names", async (t) => {
    const relay = await startPubSubRelay(t);
    const svc = new WebPubSubServiceClient(`Endpoint=${relay.url};AccessKey=${HUB_KEY};Version=1.0;`, HUB, { allowInsecureConnection: true });
    const clients = {
      alice: await RawPubSubClient.connect(accessUrl(relay.url, { userId: 'alice', groups: ['g1', 'g2'] }), PLAIN, t),
      anna: await RawPubSubClient.connect(accessUrl(relay.url, { userId: 'anna' }), PLAIN, t),
      bob: await RawPubSubClient.connect(accessUrl(relay.url, { userId: 'bob', groups: ['g1'] }), PLAIN, t),
      nobody: await RawPubSubClient.connect(accessUrl(relay.url), PLAIN, t),
    };
    await svc.sendToAll('starts with a', { contentType: 'text/plain', filter: "startswith(userId,'a')" });
    await svc.sendToAll('two groups', { contentType: 'text/plain', filter: 'length(groups) gt 1' });
    await svc.sendToAll('no user', { contentType: 'text/plain', filter: "UserId eq null or endswith(userId, 'ob') and indexof(userId, 'x') ge 0" });
    await svc.sendToAll('substring', { contentType: 'text/plain', filter: "substring(userId, 1, 2) eq 'nn' or toupper(userId) eq 'BOB'" });
    await svc.group('g1').sendToAll('g1, not five letters', { contentType: 'text/plain', filter: 'not (length(userId) eq 5) and true' });
    await assert.rejects(svc.sendToAll('refused', { contentType: 'text/plain', filter: 'not length(userId) gt 5' }), (err: { statusCode?: number; code?: string }) => err.statusCode === 400 && err.code === 'FilterInvalid');
    await until(() => clients.nobody.dataMessages().length === 1 && clients.bob.dataMessages().length === 2, 5000, 'nobody and bob');
    await new Promise((r) => setTimeout(r, 100));
    const got = Object.fromEntries(Object.entries(clients).map(([name, c]) => [name, c.dataMessages().map((m) => m.data)]));
    assert.deepEqual(got, {
      alice: ['starts with a', 'two groups'],
      anna: ['starts with a', 'substring'],
      bob: ['substring', 'g1, not five letters'],
      nobody: ['no user'],
    });
  });

  it('answers a malformed filter 400 FilterInvalid with the position, and sends nothing', async (t) => {
    const relay = await startPubSubRelay(t);
    const c = await RawPubSubClient.connect(accessUrl(relay.url), PLAIN, t);
    const url = `${relay.url}/api/hubs/${HUB}/:send?filter=${encodeURIComponent("userId eq 'a' and")}`;
    const res = await httpRequest(url, {
      method: 'POST',
      headers: { 'content-type': 'text/plain', authorization: `Bearer ${signJwt({ aud: url.split('?')[0] }, HUB_KEY, 60)}` },
      body: Buffer.from('x'),
    });
    assert.equal(res.status, 400);
    const body = JSON.parse(String(res.body));
    assert.equal(body.code, 'FilterInvalid');
    assert.match(body.message, /at position 17/);
    const groups = `${relay.url}/api/hubs/${HUB}/:addToGroups`;
    const bad = await httpRequest(groups, {
      method: 'POST',
      headers: { 'content-type': 'application/json', authorization: `Bearer ${signJwt({ aud: groups }, HUB_KEY, 60)}` },
      body: Buffer.from(JSON.stringify({ groups: ['g'], filter: 'userId eq' })),
    });
    assert.equal(bad.status, 400);
    assert.equal(JSON.parse(String(bad.body)).code, 'FilterInvalid');
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(c.dataMessages().length, 0);
  });
});
