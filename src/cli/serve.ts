import type { CliCommand } from './command.js';

/** Resolves with the first SIGTERM or SIGINT. */
function waitForStopSignal(): Promise<NodeJS.Signals> {
  return new Promise((resolve) => {
    const onSignal = (signal: NodeJS.Signals): void => {
      process.off('SIGTERM', onSignal);
      process.off('SIGINT', onSignal);
      // A second signal while draining means "now": exit without waiting for requests in flight.
      process.once('SIGTERM', () => process.exit(1));
      process.once('SIGINT', () => process.exit(1));
      resolve(signal);
    };
    process.on('SIGTERM', onSignal);
    process.on('SIGINT', onSignal);
  });
}

export const serveCommands: readonly CliCommand[] = [
  {
    name: 'serve',
    summary: 'start the HTTP service (default); SIGTERM/SIGINT shut it down gracefully',
    details: [
      'Configuration comes from the environment (docs/configuration.md). A second signal while draining exits at once.',
    ],
    async run(_input, ctx) {
      const [{ loadConfig }, { startService }] = await Promise.all([
        import('../config.js'),
        import('../main.js'),
      ]);
      const config = loadConfig(ctx.env, ctx.cwd);
      const service = await startService(config);
      const signal = await waitForStopSignal();
      service.log.info({ signal }, 'stop signal received');
      await service.close();
      return 0;
    },
  },
];
