import assert from 'node:assert/strict';
import { test } from 'node:test';
import { escapeHtml, html, SafeHtml } from '../../src/web/safe-html.js';

test('when text with markup characters is escaped, then each one becomes an entity', () => {
  assert.equal(
    escapeHtml(`<a href="x" title='y'>&\`</a>`),
    '&lt;a href=&quot;x&quot; title=&#39;y&#39;&gt;&amp;&#96;&lt;/a&gt;',
  );
});

test('when values are interpolated into html``, then strings are escaped and SafeHtml, arrays and empties compose', () => {
  const inner = html`<b>${'<i>'}</b>`;
  const out = html`<p title="${'"x"'}">${inner}${['<', html`<br>`]}${null}${undefined}${false}${0}</p>`;
  assert.ok(out instanceof SafeHtml);
  assert.equal(out.toString(), '<p title="&quot;x&quot;"><b>&lt;i&gt;</b>&lt;<br>0</p>');
});
