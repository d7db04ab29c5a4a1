// A real OpenID Connect provider for the OIDC login tests and for trying
// `coderd server --oidc-*` by hand: the certified `oidc-provider` package with
// its development login form (any listed login; the password is not checked).
//
//   REDIRECT_URI=http://127.0.0.1:3000/api/v2/users/oidc/callback node server.mjs
//
// Environment:
//   REDIRECT_URI   the redirect URI(s) of the `coder` client, comma-separated (required)
//   PORT           port on 127.0.0.1 (default 0: any free port)
//   CLIENT_ID      default "coder"
//   CLIENT_SECRET  default "coder-test-secret"
//
// It prints one line, `oidc-provider listening on ISSUER`, once it serves.
// Consent is granted without asking (a first-party client), so a login is one
// form: `login` and `password`.
import http from 'node:http';
import crypto from 'node:crypto';
import Provider from 'oidc-provider';

// The test users: alice is an admin, bob a plain member (both in the allowed
// example.com domain), eve is outside it, and mallory's email is unverified.
const ACCOUNTS = {
  alice: { email: 'alice@example.com', email_verified: true, preferred_username: 'alice', name: 'Alice Admin', groups: ['admins', 'staff'] },
  bob: { email: 'bob@example.com', email_verified: true, preferred_username: 'Bob.Smith', name: 'Bob Smith', groups: ['staff'] },
  eve: { email: 'eve@outside.test', email_verified: true, preferred_username: 'eve', name: 'Eve Outside', groups: [] },
  mallory: { email: 'mallory@example.com', email_verified: false, preferred_username: 'mallory', name: 'Mallory', groups: ['admins'] },
};

const redirectUris = (process.env.REDIRECT_URI || '').split(',').map((s) => s.trim()).filter(Boolean);
if (redirectUris.length === 0) {
  console.error('set REDIRECT_URI to coderd\'s callback, e.g. http://127.0.0.1:3000/api/v2/users/oidc/callback');
  process.exit(2);
}

const server = http.createServer();
server.listen(Number(process.env.PORT || 0), '127.0.0.1', () => {
  const issuer = `http://127.0.0.1:${server.address().port}`;
  const { privateKey } = crypto.generateKeyPairSync('rsa', { modulusLength: 2048 });
  const signingKey = { ...privateKey.export({ format: 'jwk' }), kid: crypto.randomUUID(), use: 'sig', alg: 'RS256' };
  const provider = new Provider(issuer, {
    clients: [{
      client_id: process.env.CLIENT_ID || 'coder',
      client_secret: process.env.CLIENT_SECRET || 'coder-test-secret',
      redirect_uris: redirectUris,
      grant_types: ['authorization_code'],
      response_types: ['code'],
    }],
    jwks: { keys: [signingKey] },
    cookies: { keys: [crypto.randomBytes(32).toString('hex')] },
    pkce: { required: () => true },
    scopes: ['openid', 'email', 'profile', 'groups'],
    claims: {
      openid: ['sub'],
      email: ['email', 'email_verified'],
      profile: ['preferred_username', 'name'],
      groups: ['groups'],
    },
    features: { devInteractions: { enabled: true } },
    async findAccount(_ctx, id) {
      const account = ACCOUNTS[id];
      if (!account) return undefined;
      return { accountId: id, claims: async () => ({ sub: id, ...account }) };
    },
    // First-party client: grant what it asks for without a consent screen.
    async loadExistingGrant(ctx) {
      const grantId = ctx.oidc.result?.consent?.grantId
        || ctx.oidc.session.grantIdFor(ctx.oidc.client.clientId);
      if (grantId) return ctx.oidc.provider.Grant.find(grantId);
      const grant = new ctx.oidc.provider.Grant({
        clientId: ctx.oidc.client.clientId,
        accountId: ctx.oidc.session.accountId,
      });
      grant.addOIDCScope('openid email profile groups');
      await grant.save();
      return grant;
    },
  });
  server.on('request', provider.callback());
  console.log(`oidc-provider listening on ${issuer}`);
});

for (const signal of ['SIGINT', 'SIGTERM']) process.on(signal, () => process.exit(0));
