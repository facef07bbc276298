import { providerEnvName } from '../config.js';

/**
 * The two variables that enable a catalogue provider, as an operator types them; for the
 * provider pages (docs/providers/) and for the errors that tell an operator a provider is off.
 * Provider ids match the catalogue's id syntax, so naming them in an error detail is safe.
 */
export function credentialVariables(providerId: string): {
  readonly clientId: string;
  readonly clientSecret: string;
} {
  const name = providerEnvName(providerId);
  return {
    clientId: `LINKVAULT_PROVIDER_${name}_CLIENT_ID`,
    clientSecret: `LINKVAULT_PROVIDER_${name}_CLIENT_SECRET`,
  };
}

/** The error detail for a catalogue provider without client credentials. */
export function notEnabledDetail(providerId: string): string {
  const { clientId, clientSecret } = credentialVariables(providerId);
  return `The provider "${providerId}" is not enabled: the operator sets ${clientId} and ${clientSecret} to enable it`;
}
