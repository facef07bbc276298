import { accessSync, constants, statSync } from 'node:fs';
import { delimiter, isAbsolute, join } from 'node:path';

/**
 * Where the browser tests find Chromium: `CHROMIUM_PATH` when set (an executable file, or an error
 * naming it), otherwise the first of `chromium`, `chromium-browser`, `google-chrome`,
 * `google-chrome-stable` on PATH. No fixed paths: Debian, Ubuntu, Fedora, macOS with Homebrew and CI
 * images put it in different places, and PATH is what the README tells people to set.
 */

export const CHROMIUM_NAMES = [
  'chromium',
  'chromium-browser',
  'google-chrome',
  'google-chrome-stable',
] as const;

export class ChromiumPathError extends Error {}

function isExecutableFile(path: string): boolean {
  try {
    if (!statSync(path).isFile()) return false;
    accessSync(path, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/**
 * The Chromium executable to launch, or null when there is none. Throws ChromiumPathError when
 * CHROMIUM_PATH is set but is not an executable file (a typo must not silently skip the tests).
 */
export function findChromium(
  env: Readonly<Record<string, string | undefined>> = process.env,
): string | null {
  const override = env.CHROMIUM_PATH?.trim();
  if (override) {
    if (!isAbsolute(override) || !isExecutableFile(override))
      throw new ChromiumPathError(
        `CHROMIUM_PATH=${override} is not an absolute path to an executable file`,
      );
    return override;
  }
  const dirs = (env.PATH ?? '').split(delimiter).filter(Boolean);
  for (const name of CHROMIUM_NAMES)
    for (const dir of dirs) {
      const candidate = join(dir, name);
      if (isExecutableFile(candidate)) return candidate;
    }
  return null;
}
