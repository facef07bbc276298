// Subresource Integrity for the connect script a linkvault deployment serves. The server writes
// its public URL and origin into the script (src/http/web-routes.ts, buildSdk), so the hash
// depends on the deployment: compute it for yours, or read it from
// `curl -s <public url>/sdk/connect.v1.js | openssl dgst -sha384 -binary | openssl base64 -A`.
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

/** The script as a deployment at `publicUrl` serves it (the same substitution as the server's). */
export function servedConnectScript(publicUrl, template) {
  const source =
    template ??
    readFileSync(fileURLToPath(new URL('./dist/connect.v1.js', import.meta.url)), 'utf8');
  const origin = new URL(publicUrl).origin;
  let out = source;
  for (const [placeholder, value] of [
    ["'__LINKVAULT_BASE_URL__'", publicUrl],
    ["'__LINKVAULT_ORIGIN__'", origin],
  ]) {
    if (!out.includes(placeholder))
      throw new Error(`connect.js: placeholder ${placeholder} is missing`);
    out = out.replace(placeholder, JSON.stringify(value));
  }
  return out;
}

/** `sha384-<base64>` of the script served at `publicUrl` (LINKVAULT_PUBLIC_URL, no trailing slash). */
export function connectScriptIntegrity(publicUrl, template) {
  const digest = createHash('sha384')
    .update(servedConnectScript(publicUrl, template))
    .digest('base64');
  return `sha384-${digest}`;
}
