import assert from 'node:assert/strict';
import { describe, it } from 'node:test';
import { LinkvaultError } from '../../src/errors.js';
import type { TemplateVariable } from '../../src/providers/catalogue-entry.js';
import { checkVariableValue, expandTemplate } from '../../src/providers/expand-template.js';

const host: TemplateVariable = {
  name: 'instanceDomain',
  description: 'instance host',
  pattern: '[a-z0-9-]+\\.my\\.example\\.com',
  values: null,
  default: null,
  format: 'host',
  sessionParameter: 'instance_domain',
  callbackParameter: null,
};
const region: TemplateVariable = {
  name: 'region',
  description: 'data region',
  pattern: null,
  values: { us: '', eu: 'eu.' },
  default: 'us',
  format: 'text',
  sessionParameter: null,
  callbackParameter: 'location',
};
const declared = [host, region];
const noClientId = (): string =>
  assert.fail('client id looked up for a template without {client_id}');

describe('when an endpoint template is expanded, then every value is re-checked and never echoed', () => {
  it('substitutes a pattern value as given and a values-map value by its mapped text', () => {
    const url = expandTemplate(
      'https://{instanceDomain}/token?r={region}',
      declared,
      { instanceDomain: 'acme.my.example.com', region: 'eu' },
      noClientId,
    );
    assert.equal(url, 'https://acme.my.example.com/token?r=eu.');
  });

  it('uses the default of a variable without a value', () => {
    assert.equal(
      expandTemplate('https://api.{region}example.com', declared, {}, noClientId),
      'https://api.example.com',
    );
  });

  it('refuses a missing required value, naming the session parameter', () => {
    assert.throws(
      () => expandTemplate('https://{instanceDomain}/token', declared, {}, noClientId),
      (err: unknown) =>
        err instanceof LinkvaultError &&
        err.code === 'invalid_request' &&
        err.extra?.parameter === 'instance_domain' &&
        err.message.includes('instance_domain is required'),
    );
  });

  it('refuses a value outside the pattern, naming the callback parameter without echoing the value', () => {
    for (const [variables, parameter] of [
      [{ instanceDomain: 'evil.test/x' }, 'instance_domain'],
      [{ region: 'apac' }, 'location'],
    ] as const) {
      assert.throws(
        () =>
          expandTemplate(
            'https://{instanceDomain}/{region}',
            declared,
            { instanceDomain: 'acme.my.example.com', ...variables },
            noClientId,
          ),
        (err: unknown) =>
          err instanceof LinkvaultError &&
          err.code === 'invalid_request' &&
          err.extra?.parameter === parameter &&
          !err.message.includes('evil') &&
          !err.message.includes('apac'),
      );
    }
  });

  it('replaces {client_id} with the URL-encoded client id', () => {
    assert.equal(
      expandTemplate(
        'https://api.example.com/applications/{client_id}/grant',
        declared,
        {},
        () => 'a b/c',
      ),
      'https://api.example.com/applications/a%20b%2Fc/grant',
    );
  });

  it('normalises host values: trimmed, lower-cased, an https:// form reduced to the host', () => {
    assert.equal(
      checkVariableValue(host, '  https://ACME.my.example.com/ '),
      'acme.my.example.com',
    );
    assert.equal(checkVariableValue(host, 'https://acme.my.example.com/path'), null);
    assert.equal(checkVariableValue(host, 'acme.my.example.com:8443'), null);
  });
});
