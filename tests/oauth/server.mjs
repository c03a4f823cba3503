// A real OAuth2 setup for secref's Coze tests, built on oidc-provider
// (an OpenID-certified OAuth2/OIDC server), in one process on 127.0.0.1:
//
// * IdP (`/token` on its own port): client_credentials. Clients authenticate
//   with their secret in the form body (`client_secret_post`, what the
//   coze-workload-identity SDK sends) or with HTTP Basic. It issues RS256 JWT
//   access tokens for the audience `urn:coze:sts`: the "ID token" of the Coze
//   flow.
// * STS (`/token` on a second port): the RFC 8693 token-exchange grant,
//   registered with `registerGrantType`. The same client ids are registered
//   here as public clients (`token_endpoint_auth_method: 'none'`) because the
//   SDK's exchange request carries only `client_id`. The subject token must be
//   an IdP JWT (signature against the IdP's keys, issuer, audience, expiry)
//   issued to the requesting client; the STS then issues its own JWT access
//   token for `urn:coze:outbound`, signed with a different key (served at
//   the STS's `/jwks`).
//
// Two issuers, because oidc-provider binds one authentication method per
// client and the SDK authenticates the same client id differently in the
// two steps; Coze's endpoints are configured separately anyway.
//
// Test hooks (never part of an OAuth API):
// * every POST /token is counted per `x-tt-env` lane header (and the
//   `x-use-ppe` header and the use of HTTP Basic are recorded): GET <idp>/_test/stats?lane=<lane>;
// * a request whose lane starts with `fail-sts-503` gets 503 from the STS.
//
// Env: IDP_TOKEN_TTL (default 600 s), STS_TOKEN_TTL (default 300 s).
// Prints one line when ready: `oauth-ready idp=<url> sts=<url>`.
import http from 'node:http';
import { generateKeyPair, exportJWK, createLocalJWKSet, jwtVerify } from 'jose';
import Provider, { errors } from 'oidc-provider';

const TE = 'urn:ietf:params:oauth:grant-type:token-exchange';
const ID_TOKEN_TYPE = 'urn:ietf:params:oauth:token-type:id_token';
const AT_TYPE = 'urn:ietf:params:oauth:token-type:access_token';
const STS_AUDIENCE = 'urn:coze:sts';
const OUTBOUND_AUDIENCE = 'urn:coze:outbound';
const IDP_TTL = Number(process.env.IDP_TOKEN_TTL || 600);
const STS_TTL = Number(process.env.STS_TOKEN_TTL || 300);

// Workload clients: [client_id, secret, auth method at the IdP, registered at the STS?]
const WORKLOADS = [
  ['coze-app', 'coze-app-secret', 'client_secret_post', true],
  ['coze-app-2', 'coze-app-2-secret', 'client_secret_post', true],
  ['coze-app-basic', 'coze-app-basic-secret', 'client_secret_basic', true],
  ['coze-idp-only', 'coze-idp-only-secret', 'client_secret_post', false],
];

async function signingKey(kid) {
  const { privateKey } = await generateKeyPair('RS256', { extractable: true });
  const priv = { ...(await exportJWK(privateKey)), kid, use: 'sig', alg: 'RS256' };
  const { d, p, q, dp, dq, qi, ...pub } = priv;
  return { priv, pub };
}

// Listens on an ephemeral port first: the issuer URL must name the port.
async function listen() {
  const holder = { handler: null };
  const server = http.createServer((req, res) => holder.handler(req, res));
  await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { server, holder, url: `http://127.0.0.1:${server.address().port}` };
}

const stats = new Map(); // lane -> { idp, sts, ppe: [] }
function record(which, req) {
  const lane = req.headers['x-tt-env'] ?? '';
  const s = stats.get(lane) ?? { idp: 0, sts: 0, basic: 0, ppe: [] };
  s[which] += 1;
  if ((req.headers.authorization ?? '').startsWith('Basic ')) s.basic += 1;
  s.ppe.push(req.headers['x-use-ppe'] ?? null);
  stats.set(lane, s);
}

const idpKey = await signingKey('idp-1');
const stsKey = await signingKey('sts-1');
const idpNet = await listen();
const stsNet = await listen();

const common = {
  features: { devInteractions: { enabled: false }, clientCredentials: { enabled: true } },
  scopes: ['workload'],
};

const idp = new Provider(idpNet.url, {
  ...common,
  jwks: { keys: [idpKey.priv] },
  clients: WORKLOADS.map(([client_id, client_secret, token_endpoint_auth_method]) => ({
    client_id, client_secret, token_endpoint_auth_method,
    grant_types: ['client_credentials'], redirect_uris: [], response_types: [], scope: 'workload',
  })),
  features: {
    ...common.features,
    resourceIndicators: {
      enabled: true,
      defaultResource: () => STS_AUDIENCE,
      useGrantedResource: () => true,
      getResourceServerInfo: (ctx, resource) => {
        if (resource !== STS_AUDIENCE) throw new errors.InvalidTarget();
        return { scope: 'workload', audience: STS_AUDIENCE, accessTokenTTL: IDP_TTL, accessTokenFormat: 'jwt' };
      },
    },
  },
});

const sts = new Provider(stsNet.url, {
  ...common,
  jwks: { keys: [stsKey.priv] },
  clients: WORKLOADS.filter((w) => w[3]).map(([client_id]) => ({
    client_id, token_endpoint_auth_method: 'none',
    grant_types: [TE], redirect_uris: [], response_types: [], scope: 'workload',
  })),
});

const idpJwks = createLocalJWKSet({ keys: [idpKey.pub] });
sts.registerGrantType(TE, async (ctx) => {
  const { params, client } = ctx.oidc;
  // The SDK labels the IdP's access token as an id_token; accept both labels.
  if (![ID_TOKEN_TYPE, AT_TYPE].includes(params.subject_token_type)) {
    throw new errors.InvalidRequest('unsupported subject_token_type');
  }
  let subject;
  try {
    ({ payload: subject } = await jwtVerify(params.subject_token, idpJwks, {
      issuer: idpNet.url, audience: STS_AUDIENCE, typ: 'at+jwt',
    }));
  } catch (e) {
    throw new errors.InvalidGrant(`subject_token invalid: ${e.code || 'verification failed'}`);
  }
  if (subject.client_id !== client.clientId) {
    throw new errors.InvalidGrant('subject_token was issued to another client');
  }
  const at = new sts.AccessToken({
    client, accountId: subject.sub, grantId: `te-${subject.jti}`, gty: 'token-exchange', scope: subject.scope || undefined,
  });
  at.resourceServer = { scope: 'workload', audience: OUTBOUND_AUDIENCE, accessTokenTTL: STS_TTL, accessTokenFormat: 'jwt' };
  const value = await at.save();
  ctx.body = { access_token: value, issued_token_type: AT_TYPE, token_type: 'Bearer', expires_in: at.expiration };
}, ['subject_token', 'subject_token_type', 'actor_token', 'actor_token_type', 'audience', 'resource', 'scope', 'requested_token_type']);

const idpCallback = idp.callback();
const stsCallback = sts.callback();
idpNet.holder.handler = (req, res) => {
  if (req.method === 'GET' && req.url.startsWith('/_test/stats')) {
    const lane = new URL(req.url, idpNet.url).searchParams.get('lane') ?? '';
    res.setHeader('content-type', 'application/json');
    res.end(JSON.stringify(stats.get(lane) ?? { idp: 0, sts: 0, basic: 0, ppe: [] }));
    return;
  }
  if (req.method === 'POST' && req.url === '/token') record('idp', req);
  idpCallback(req, res);
};
stsNet.holder.handler = (req, res) => {
  if (req.method === 'POST' && req.url === '/token') {
    record('sts', req);
    if ((req.headers['x-tt-env'] ?? '').startsWith('fail-sts-503')) {
      res.statusCode = 503;
      res.setHeader('content-type', 'application/json');
      res.end(JSON.stringify({ error: 'temporarily_unavailable' }));
      return;
    }
  }
  stsCallback(req, res);
};

console.log(`oauth-ready idp=${idpNet.url} sts=${stsNet.url}`);
const stop = () => { idpNet.server.close(); stsNet.server.close(); process.exit(0); };
process.on('SIGTERM', stop);
process.on('SIGINT', stop);
