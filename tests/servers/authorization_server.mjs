// An OAuth 2.1 authorization server for the end-to-end OAuth test: oidc-provider (panva),
// as scripts/node-tools.sh installs it into .tools/oidc-provider, run by Node 22.
//
//   node authorization_server.mjs --client-id ID --client-secret SECRET --scope "mcp:call"
//
// It listens on a free loopback port and, once it answers, prints one JSON line on
// standard output, {"issuer": ...}; its metadata is at the issuer's
// /.well-known/openid-configuration. Its log goes to standard error, one line per token
// issued or refused.
//
// One confidential client, allowed the client_credentials grant (RFC 6749 4.4). Access
// tokens are JWTs (RFC 9068) for the resource the client names (RFC 8707 resource
// indicators: `aud` is that resource), signed with an ES256 key made at start and
// published in the JWKS. A resource indicator must be an http URL on a loopback host:
// the resource servers of this test are the gateways it starts on this machine. State is
// in memory (oidc-provider warns that its in-memory adapter is for development: so is
// this server).

import { generateKeyPairSync, randomUUID } from 'node:crypto';
import { createServer } from 'node:http';
import { createRequire } from 'node:module';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';

const ROOT = fileURLToPath(new URL('../../', import.meta.url));
const LOOPBACK = new Set(['127.0.0.1', '[::1]', 'localhost']);
const TOKEN_LIFETIME = 300;

const { values: args } = parseArgs({
  options: {
    'client-id': { type: 'string' },
    'client-secret': { type: 'string' },
    scope: { type: 'string', default: '' },
  },
});
if (!args['client-id'] || !args['client-secret']) {
  process.stderr.write('usage: authorization_server.mjs --client-id ID --client-secret SECRET'
    + ' [--scope "A B"]\n');
  process.exit(2);
}

// A module of .tools, not of this tree: ESM resolves bare names only from node_modules
// beside or above the importing file.
const require = createRequire(`${ROOT}.tools/oidc-provider/`);
const { default: Provider, errors } = await import(
  pathToFileURL(require.resolve('oidc-provider')).href);

function log(message) {
  process.stderr.write(`authorization server: ${message}\n`);
}

const signingKey = {
  ...generateKeyPairSync('ec', { namedCurve: 'P-256' }).privateKey.export({ format: 'jwk' }),
  kid: randomUUID(),
  alg: 'ES256',
  use: 'sig',
};
const scopes = args.scope.split(' ').filter(Boolean);

const server = createServer();
await new Promise((listening) => server.listen(0, '127.0.0.1', listening));
const issuer = `http://127.0.0.1:${server.address().port}`;

const provider = new Provider(issuer, {
  clients: [{
    client_id: args['client-id'],
    client_secret: args['client-secret'],
    grant_types: ['client_credentials'],
    redirect_uris: [],
    response_types: [],
    scope: scopes.join(' '),
  }],
  jwks: { keys: [signingKey] },
  scopes,
  clientDefaults: { id_token_signed_response_alg: 'ES256' },
  features: {
    clientCredentials: { enabled: true },
    devInteractions: { enabled: false },
    resourceIndicators: {
      enabled: true,
      // No default: a token request that names no resource gets no JWT for anyone.
      defaultResource: () => undefined,
      getResourceServerInfo(ctx, resource) {
        const url = URL.parse(resource);
        if (url === null || url.protocol !== 'http:' || !LOOPBACK.has(url.hostname)) {
          throw new errors.InvalidTarget(`${resource} is not a resource server here`);
        }
        return {
          scope: scopes.join(' '),
          audience: resource,
          accessTokenTTL: TOKEN_LIFETIME,
          accessTokenFormat: 'jwt',
          jwt: { sign: { alg: 'ES256' } },
        };
      },
    },
  },
});

provider.on('client_credentials.issued', (token) => {
  log(`issued a JWT access token to ${token.clientId} for ${token.resourceServer?.audience}`
    + ` scope=${token.scope ?? ''}`);
});
provider.on('grant.error', (ctx, err) => {
  log(`refused a token request: ${err.error} (${err.error_description})`);
});
provider.on('server_error', (ctx, err) => log(`server error: ${err.stack}`));

server.on('request', provider.callback());
process.stdout.write(`${JSON.stringify({ issuer })}\n`);
