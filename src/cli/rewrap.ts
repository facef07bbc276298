import type { CliCommand } from './command.js';

export const rewrapCommands: readonly CliCommand[] = [
  {
    name: 'rewrap',
    summary:
      "re-wrap every link's data keys under the current master/KMS key (after a key rotation)",
    details: [
      'Rewrites key material in the live store (compare-and-set; safe to run again). Run it until it reports',
      'jobs_on_old_key=0 and no failures before destroying an old key (docs/operations.md, "Key rotation").',
    ],
    confirm: () =>
      "re-wrap every link's and queued job's data keys in the configured store under the current key",
    async run(_input, ctx) {
      const { loadConfig } = await import('../config.js');
      const config = loadConfig(ctx.env, ctx.cwd);
      const [{ createLogger }, { buildAdapters }, { rewrapAll }] = await Promise.all([
        import('../log.js'),
        import('../features.js'),
        import('../links/sealing/rewrap.js'),
      ]);
      // Logs go to stderr so that stdout carries only the result line.
      const log = createLogger({ level: config.logLevel, destination: process.stderr });
      const { store, vault, keys, close } = await buildAdapters(config, { log });
      try {
        const r = await rewrapAll({ store, vault, keys, log });
        ctx.out(
          `linkvault: rewrap done: scanned=${r.scanned} rewrapped=${r.rewrapped} skipped=${r.skipped} conflicts=${r.conflicts} failed=${r.failed}` +
            ` jobs_scanned=${r.jobsScanned} jobs_rewrapped=${r.jobsRewrapped} jobs_skipped=${r.jobsSkipped} job_conflicts=${r.jobConflicts} jobs_failed=${r.jobsFailed}` +
            ` jobs_on_old_key=${r.jobsOnOldKey} current_key=${keys.currentKeyId()}`,
        );
        // Queued work (pending provider revocations) that still carries a sealed copy under an old key
        // (leased by a worker at the time, or of a kind rewrap cannot re-wrap): the old key must outlive
        // it, or that revocation could no longer reach the provider.
        if (r.jobsOnOldKey > 0)
          ctx.err(
            `linkvault: ${r.jobsOnOldKey} queued job(s) still hold data keys under an old key: keep the old key and run rewrap again until it reports jobs_on_old_key=0`,
          );
        // Links or jobs left as they were still open under their old key; say so through the exit code.
        return r.failed > 0 || r.jobsFailed > 0 ? 1 : 0;
      } finally {
        await close();
      }
    },
  },
];
