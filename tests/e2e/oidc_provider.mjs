// A real OpenID provider on loopback for the single-sign-on browser test: npm `oidc-provider`
// (a certified implementation) with its development login and consent pages (plain HTML forms:
// any login name is accepted and becomes the subject).
// Usage: node oidc_provider.mjs <port> <redirect_uri> ; prints "ready" once it listens.
import Provider from "oidc-provider";

const [port, redirectUri] = [Number(process.argv[2]), process.argv[3]];
const issuer = `http://127.0.0.1:${port}`;
const names = new Map(); // subject -> preferred_username, changed by GET /rename?sub=&to=

const provider = new Provider(issuer, {
  clients: [{
    client_id: "matrix",
    client_secret: "s3cret",
    redirect_uris: [redirectUri],
    token_endpoint_auth_method: "client_secret_post",
  }],
  pkce: { required: () => true },
  claims: { openid: ["sub"], profile: ["name", "preferred_username"] },
  conformIdTokenClaims: false, // put the profile claims in the ID token, which is what we read
  async findAccount(ctx, sub) {
    return {
      accountId: sub,
      async claims() {
        const username = names.get(sub) ?? sub;
        return { sub, preferred_username: username, name: `Upstream ${username}` };
      },
    };
  },
  features: { devInteractions: { enabled: true } },
  cookies: { keys: ["e2e-cookie-key"] },
});
provider.proxy = false;

const server = provider.listen(port, "127.0.0.1", () => console.log("ready"));
provider.use(async (ctx, next) => {
  if (ctx.path === "/rename") {
    names.set(ctx.query.sub, ctx.query.to);
    ctx.body = "ok";
    return;
  }
  await next();
});
process.on("SIGTERM", () => server.close(() => process.exit(0)));
