import { strict as assert } from 'node:assert';
import { describe, it } from 'node:test';
import { LinkvaultError } from '../../src/errors.js';
import { problemBody } from '../../src/http/problem.js';
import {
  echoableName,
  jsonObject,
  onlyMembers,
  optionalBoolean,
  optionalInteger,
  optionalStringList,
  safeName,
} from '../../src/http/request-shape.js';

/** The problem body `fn` is refused with (request id fixed). */
function refusal(fn: () => unknown): Record<string, unknown> {
  try {
    fn();
  } catch (err) {
    assert.ok(err instanceof LinkvaultError);
    return problemBody(err, 'rid');
  }
  assert.fail('expected a refusal');
}

describe('request shape', () => {
  it('when a member name carries markup or is long, then safeName masks it and echoableName withholds it', () => {
    assert.equal(safeName('ok_name.1-x'), 'ok_name.1-x');
    assert.equal(safeName('<b>"x"'), '?b??x?');
    assert.equal(safeName('a'.repeat(100)).length, 64);
    assert.equal(echoableName('ok_name'), 'ok_name');
    assert.equal(echoableName('<b>'), null);
    assert.equal(echoableName('a'.repeat(65)), null);
  });

  it('when the body is not an object, then 400 naming the given parameter or none', () => {
    for (const body of [null, [], 'x', 1]) {
      const withBody = refusal(() => jsonObject(body, 'body'));
      assert.equal(withBody.parameter, 'body');
      assert.equal(withBody.detail, 'The body must be a JSON object');
      assert.ok(!('parameter' in refusal(() => jsonObject(body, null))));
    }
    assert.deepEqual(jsonObject({ a: 1 }, 'body'), { a: 1 });
  });

  it('when a member is unknown or out of shape, then 400 names it', () => {
    const allowed = new Set(['n', 'b', 'l']);
    const body = refusal(() => onlyMembers({ n: 1, '<x>': 2 }, allowed));
    assert.equal(body.parameter, '?x?');
    assert.equal(body.detail, 'Unknown member in the request body');
    assert.equal(
      refusal(() => optionalInteger({ n: 1.5 }, 'n', 0, 10)).detail,
      'n must be an integer from 0 to 10',
    );
    assert.equal(refusal(() => optionalInteger({ n: 11 }, 'n', 0, 10)).parameter, 'n');
    assert.equal(optionalInteger({}, 'n', 0, 10), undefined);
    assert.equal(optionalInteger({ n: 10 }, 'n', 0, 10), 10);
    assert.equal(refusal(() => optionalBoolean({ b: 'true' }, 'b')).detail, 'b must be a boolean');
    assert.equal(optionalBoolean({ b: false }, 'b'), false);
    const list = (v: unknown) =>
      optionalStringList({ l: v }, 'l', 2, (s) => s !== '', 'bad list', 'bad item');
    assert.equal(refusal(() => list([])).detail, 'bad list');
    assert.equal(refusal(() => list(['a', 'b', 'c'])).detail, 'bad list');
    assert.equal(refusal(() => list(['a', ''])).detail, 'bad item');
    assert.equal(refusal(() => list(['a', 1])).detail, 'bad item');
    assert.deepEqual(list(['a', 'b']), ['a', 'b']);
    assert.equal(list(undefined), undefined);
  });
});
