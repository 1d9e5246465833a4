// RFC 7591 registration by a client library nobody here wrote (oauth4webapi), then the
// registered client's client_credentials grant. Run by tests/api/registration.rs:
//   ISSUER=https://localhost:PORT INITIAL_TOKEN=... node register.mjs
// Prints {"client_id", "access_token", "registration_endpoint"} as JSON on stdout.
import * as oauth from 'oauth4webapi';

const issuer = new URL(process.env.ISSUER);
const as = await oauth.processDiscoveryResponse(
  issuer,
  await oauth.discoveryRequest(issuer, { algorithm: 'oauth2' }),
);
const registered = await oauth.processDynamicClientRegistrationResponse(
  await oauth.dynamicClientRegistrationRequest(
    as,
    {
      client_name: 'oauth4webapi interop',
      grant_types: ['client_credentials'],
      token_endpoint_auth_method: 'client_secret_basic',
      scope: 'read',
    },
    { initialAccessToken: process.env.INITIAL_TOKEN },
  ),
);
const tokens = await oauth.processClientCredentialsResponse(
  as,
  registered,
  await oauth.clientCredentialsGrantRequest(
    as,
    registered,
    oauth.ClientSecretBasic(registered.client_secret),
    new URLSearchParams({ scope: 'read' }),
  ),
);
console.log(JSON.stringify({
  client_id: registered.client_id,
  access_token: tokens.access_token,
  registration_endpoint: as.registration_endpoint,
}));
