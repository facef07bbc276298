import type { Config } from '../config.js';
import { JSON_OPTION, type CliCommand } from './command.js';
import { printJson } from './output.js';

/** The one-line summary `check-config` has always printed (scripts grep it). */
function describe(config: Config): string {
  const store =
    config.store.kind === 'sqlite'
      ? `sqlite (${config.store.sqlitePath})`
      : config.store.clusterNodes
        ? `redis cluster (${config.store.clusterNodes.length} seeds)`
        : 'redis';
  const keys =
    config.keys.kind === 'local'
      ? `local (${config.keys.localKeyFile})`
      : `aws-kms (${config.keys.kmsKeyId})`;
  return [
    `env=${config.production ? 'production' : config.nodeEnv}`,
    `port=${config.port}`,
    `public_url=${config.publicUrl}`,
    `store=${store}`,
    `keys=${keys}`,
    `services=${config.services.length}`,
    `provider_credentials=${config.providerCredentials.size}`,
    `sandbox=${config.sandbox}`,
  ].join(' ');
}

export const checkConfigCommands: readonly CliCommand[] = [
  {
    name: 'check-config',
    summary: 'validate the configuration, warn about likely mistakes, print what it enables',
    options: { ...JSON_OPTION },
    details: [
      'Exit 0 when the configuration is usable (warnings go to stderr), 1 when it is invalid or, in',
      'production, dangerous: the development master key, or a key file group/others can read.',
      'Warnings: unknown LINKVAULT_* names (with the nearest real name), credentials for a provider',
      'not in the catalogue, production with no services or no enabled provider. Opens no store.',
    ],
    async run(input, ctx) {
      const [{ loadConfig }, { checkConfiguration }] = await Promise.all([
        import('../config.js'),
        import('../config-check.js'),
      ]);
      const config = loadConfig(ctx.env, ctx.cwd);
      const report = checkConfiguration(config, ctx.env);
      const refusals = report.findings.filter((f) => f.level === 'refusal');
      if (input.options.json === true) {
        printJson(ctx, {
          ok: refusals.length === 0,
          environment: config.production ? 'production' : config.nodeEnv,
          summary: Object.fromEntries(report.summary),
          findings: report.findings,
        });
        return refusals.length === 0 ? 0 : 1;
      }
      for (const f of report.findings)
        ctx.err(
          `linkvault: ${f.level === 'refusal' ? 'refused' : 'warning'}: ${f.variable}: ${f.message}`,
        );
      if (refusals.length > 0) {
        ctx.err(
          `linkvault: configuration refused: ${refusals.length} problem(s) that production must not run with`,
        );
        return 1;
      }
      ctx.out(`linkvault: configuration ok: ${describe(config)}`);
      const width = Math.max(...report.summary.map(([name]) => name.length));
      for (const [name, value] of report.summary) ctx.out(`  ${name.padEnd(width)}  ${value}`);
      return 0;
    },
  },
];
