import type { CliCommand } from './command.js';

export const devTokenCommands: readonly CliCommand[] = [
  {
    name: 'dev-token',
    summary:
      'print a 300-second service JWT for the development service "dev" (sandbox on, outside production)',
    details: [
      'The key is data/dev-service.key, created by the development service on its first start.',
      'The HTTP commands take --dev to sign with the same key.',
    ],
    async run(_input, ctx) {
      const [{ loadConfig }, { signDevToken }] = await Promise.all([
        import('../config.js'),
        import('../auth/dev-service.js'),
      ]);
      ctx.out(signDevToken(loadConfig(ctx.env, ctx.cwd)));
      return 0;
    },
  },
];
