import {
  JSON_OPTION,
  listOption,
  requiredOption,
  stringOption,
  type CliCommand,
} from './command.js';
import { API_OPTIONS, connectApi } from './linkvault-api.js';
import { printFields, printJson } from './output.js';

interface CreatedSession {
  readonly session_token: string;
  readonly expires_at: string;
  readonly connect_url: string;
  readonly manage_url: string;
}

export const sessionCommands: readonly CliCommand[] = [
  {
    name: 'sessions create',
    summary: 'mint a connect session for one user (POST /v1/sessions; role sessions)',
    options: {
      tenant: { type: 'string', value: 'ID', description: 'tenant_id (required)' },
      user: { type: 'string', value: 'ID', description: 'user_id (required)' },
      provider: {
        type: 'string',
        value: 'ID',
        multiple: true,
        description: 'a provider the session may connect (repeat; default every enabled provider)',
      },
      'return-to': { type: 'string', value: 'URL', description: 'return_to after the flow' },
      ...JSON_OPTION,
      ...API_OPTIONS,
    },
    details: [
      "Prints the session token and the hosted pages' URLs (the token is in their fragment): hand",
      "connect_url to the user. The session token lets its holder connect and revoke that user's links.",
    ],
    async run(input, ctx) {
      const providers = listOption(input, 'provider');
      const returnTo = stringOption(input, 'return-to');
      const body = {
        tenant_id: requiredOption(input, 'tenant'),
        user_id: requiredOption(input, 'user'),
        ...(providers.length === 0 ? {} : { providers }),
        ...(returnTo === undefined ? {} : { return_to: returnTo }),
      };
      const api = await connectApi(input, ctx);
      const created = (await api.call('POST', '/v1/sessions', body)) as CreatedSession;
      if (input.options.json === true) printJson(ctx, created);
      else
        printFields(ctx, [
          ['session_token', created.session_token],
          ['expires_at', created.expires_at],
          ['connect_url', created.connect_url],
          ['manage_url', created.manage_url],
        ]);
      return 0;
    },
  },
];
