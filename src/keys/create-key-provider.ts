import type { Logger } from 'pino';
import type { KeysConfig } from '../config.js';
import { isLinkvaultError } from '../errors.js';
import type { Metrics } from '../metrics.js';
import { AwsKmsKeyProvider } from './aws-kms-key-provider.js';
import type { KeyProvider } from './key-provider.js';
import { LocalKeyProvider } from './local-key-provider.js';

/**
 * Builds the configured KeyProvider. Local: loads the master key file, generating it only where
 * the configuration allows (never in production) and then warning loudly, because a generated
 * key on a developer's disk is not a production secret. KMS: pings once to learn the key ARN;
 * an unreachable KMS at start is logged, not fatal (readiness reports it until KMS answers).
 * A bad key file throws ConfigError (one line naming the variable).
 */
export async function createKeyProvider(
  config: KeysConfig,
  deps: { metrics: Metrics; log?: Logger },
): Promise<KeyProvider> {
  if (config.kind === 'local') {
    const provider = await LocalKeyProvider.load({
      keyFile: config.localKeyFile,
      previousKeyFiles: config.previousKeyFiles,
      mayGenerate: config.mayGenerate,
      metrics: deps.metrics,
    });
    if (provider.generated) {
      deps.log?.warn(
        { key_file: config.localKeyFile, kid: provider.currentKeyId() },
        'GENERATED A DEVELOPMENT MASTER KEY. Everything sealed under it is lost with this file. Do not use a generated key in production: provision LINKVAULT_LOCAL_KEY_FILE yourself or use LINKVAULT_KEYS=aws-kms.',
      );
    }
    return provider;
  }
  const provider = new AwsKmsKeyProvider({
    keyId: config.kmsKeyId,
    region: config.region,
    endpoint: config.endpoint,
    metrics: deps.metrics,
  });
  try {
    await provider.ping();
  } catch (err) {
    if (!isLinkvaultError(err)) throw err;
    deps.log?.warn(
      { err, code: err.code },
      'KMS did not answer at start; the service stays unready until it does',
    );
  }
  return provider;
}
