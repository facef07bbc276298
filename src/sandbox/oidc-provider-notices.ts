/**
 * node-oidc-provider prints its notices as plain text with console.info and console.warn
 * ("oidc-provider WARNING: …", "oidc-provider NOTICE: …"), which breaks a JSON log stream. This
 * runs `work` with those two console methods wrapped so that lines starting with `oidc-provider `
 * go to `onNotice` instead (ANSI colours removed); any other console output passes through. It is
 * used around the two moments the library prints unprompted: its import (the Node.js version
 * check) and the constructor (the in-memory adapter notice). Notices printed while serving come
 * from defaults that the sandbox replaces with explicit configuration instead.
 */

export type OidcProviderNotice = (level: 'info' | 'warn', text: string) => void;

const PREFIX = 'oidc-provider ';
// The library colours its notices when stdout is a TTY: ESC [ … m sequences, removed before matching.
const ANSI = new RegExp(`${String.fromCharCode(27)}\\[[0-9;]*m`, 'g');

export async function withOidcProviderNotices<T>(
  onNotice: OidcProviderNotice,
  work: () => T | Promise<T>,
): Promise<T> {
  const original = { info: console.info, warn: console.warn };
  const divert =
    (level: 'info' | 'warn') =>
    (...args: unknown[]): void => {
      const first = args[0];
      const text = typeof first === 'string' ? first.replace(ANSI, '') : null;
      if (text !== null && text.startsWith(PREFIX) && args.length === 1) onNotice(level, text);
      else original[level].apply(console, args);
    };
  console.info = divert('info');
  console.warn = divert('warn');
  try {
    return await work();
  } finally {
    console.info = original.info;
    console.warn = original.warn;
  }
}

/**
 * Why each notice the sandbox meets is expected, so that it can be logged at debug with the reason
 * instead of as a warning: the sandbox is a development-only provider by design.
 */
export function noticeReason(text: string): string {
  if (/Unsupported runtime/.test(text))
    return 'node-oidc-provider asks for Node.js 22 LTS or later; linkvault supports Node.js 20 (package.json engines) and its tests run the sandbox on it';
  if (/in-memory adapter/.test(text))
    return 'the sandbox keeps its grants and tokens in memory on purpose: they end when linkvault restarts';
  return 'a development-only provider: its notices are not operational problems';
}
