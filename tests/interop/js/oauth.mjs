// matrix-js-sdk's own OAuth 2.0 client (the code Element Web uses: OAuth2.registerClient,
// generateAuthorizationCodeGrantUrl with prompt=create, completeAuthorizationCodeGrant,
// performRefreshTokenGrant, revokeToken, the device authorization grant helpers) against our server,
// with the pages a person sees driven in Chromium by playwright-core.
// Usage: node oauth.mjs <scenario.json> ; prints "@@RESULT@@ <json>".
import "./setup.mjs";
import { readFileSync } from "node:fs";
import path from "node:path";
import { createServer } from "node:http";
import { fileURLToPath } from "node:url";
import * as sdk from "matrix-js-sdk";

const here = path.dirname(fileURLToPath(import.meta.url));
const { chromium } = await import(path.join(here, "../../e2e/node_modules/playwright-core/index.mjs"));
const scenario = JSON.parse(readFileSync(process.argv[2], "utf8"));
const { OAuth2, isValidAuthMetadata } = sdk;
// a native client's loopback redirect (spec: registered without a port, any port accepted): a small
// server of ours stands in for the app (a browser follows a redirect there for real)
const app = createServer((req, res) => res.end("client"));
await new Promise((resolve) => app.listen(0, "127.0.0.1", resolve));
const REDIRECT = `http://127.0.0.1:${app.address().port}/callback`;
const FLAGS = [
  "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync",
];
const result = {};

async function whoami(token) {
  const res = await fetch(`${scenario.base}/_matrix/client/v3/account/whoami`, { headers: { Authorization: `Bearer ${token}` } });
  return { status: res.status, body: await res.json() };
}

async function newContext(browser) {
  return browser.newContext({ viewport: { width: 390, height: 844 }, isMobile: true });
}

async function shot(page, name) {
  await page.screenshot({ path: path.join(scenario.artifacts, `${name}.png`), fullPage: true });
}

async function consent(page, name) {
  await page.waitForSelector("#allow");
  await shot(page, name);

  await Promise.all([page.waitForURL(`${REDIRECT}**`), page.click("#allow")]);
  const url = new URL(page.url());
  return Object.fromEntries(new URLSearchParams(url.hash.slice(1)));
}

const metaRes = await fetch(`${scenario.base}/_matrix/client/v1/auth_metadata`);
const metadata = await metaRes.json();
result.metadataValid = isValidAuthMetadata(metadata);
result.cors = metaRes.headers.get("access-control-allow-origin");

const clientMetadata = {
  client_name: "JS SDK test client",
  client_uri: "https://client.example/",
  redirect_uris: ["http://127.0.0.1/callback"],
  application_type: "native",
};
const clientId = await OAuth2.registerClient(metadata, clientMetadata);
result.clientId = clientId;

const browser = await chromium.launch({ executablePath: scenario.chromium, args: FLAGS, headless: true });
try {
  // 1. sign up with an invite: prompt=create opens the sign-up page
  const signup = new OAuth2(metadata, { clientId, deviceId: "JSDEVICE1" });
  const context = await newContext(browser);
  const page = await context.newPage();
  await page.goto(await signup.generateAuthorizationCodeGrantUrl("state-1", REDIRECT, "fragment", "create"));
  await page.fill("#invite", scenario.invite);
  await page.fill("#username", "jsuser");
  await page.fill("#password", scenario.password);
  await page.fill("#password2", scenario.password);
  await shot(page, "1-signup");
  await Promise.all([page.waitForNavigation(), page.click("#signup button[type=submit]")]);
  const signedUp = await consent(page, "2-consent");
  result.signupState = signedUp.state;
  const tokens = await signup.completeAuthorizationCodeGrant(signedUp.code, REDIRECT);
  result.signupWhoami = await whoami(tokens.access_token);
  result.tokenType = tokens.token_type;
  result.scope = tokens.scope;

  // sync and send with a MatrixClient on the OAuth access token
  const client = sdk.createClient({ baseUrl: scenario.base, accessToken: tokens.access_token, userId: "@jsuser:localhost", deviceId: "JSDEVICE1" });
  const { room_id: roomId } = await client.createRoom({ name: "OAuth room" });
  await client.sendTextMessage(roomId, "hello over OAuth");
  const sync = await client.http.authedRequest("GET", "/sync", { timeout: "0" });
  const timeline = sync.rooms?.join?.[roomId]?.timeline?.events ?? [];
  result.syncedMessage = timeline.some((e) => e.content?.body === "hello over OAuth");

  // 2. refresh: a new pair, the old access token gone
  const refreshed = await signup.performRefreshTokenGrant(tokens.refresh_token);
  result.refreshedWhoami = (await whoami(refreshed.access_token)).status;
  result.oldAfterRefresh = (await whoami(tokens.access_token)).status;
  result.rotated = refreshed.refresh_token !== tokens.refresh_token;

  // 3. log in again from a fresh browser: the sign-in page, then consent
  const login = new OAuth2(metadata, { clientId, deviceId: "JSDEVICE2" });
  const context2 = await newContext(browser);
  const page2 = await context2.newPage();
  await page2.goto(await login.generateAuthorizationCodeGrantUrl("state-2", REDIRECT));
  await page2.fill("#username", "jsuser");
  await page2.fill("#password", scenario.password);
  await shot(page2, "3-login");
  await Promise.all([page2.waitForNavigation(), page2.click("#login button[type=submit]")]);
  const loggedIn = await consent(page2, "4-consent");
  const tokens2 = await login.completeAuthorizationCodeGrant(loggedIn.code, REDIRECT);
  result.loginWhoami = await whoami(tokens2.access_token);

  // 4. the device authorization grant, approved in the signed-in browser
  const tv = new OAuth2(metadata, { clientId, deviceId: "JSDEVICE3" });
  const session = await tv.startDeviceAuthorizationGrant();
  result.userCode = session.user_code;
  const waiting = tv.waitForDeviceAuthorizationGrant(session);
  await page2.goto(session.verification_uri_complete);
  await page2.waitForSelector("#allow");
  await shot(page2, "5-device-consent");
  await Promise.all([page2.waitForNavigation(), page2.click("#allow")]);
  result.devicePage = (await page2.textContent("h1"))?.trim();
  const deviceTokens = await waiting;
  result.deviceWhoami = await whoami(deviceTokens.access_token);

  // 5. revoke: the session ends
  await login.revokeToken(tokens2.access_token, "access_token");
  result.afterRevoke = (await whoami(tokens2.access_token)).status;
  result.othersAfterRevoke = (await whoami(refreshed.access_token)).status;
} finally {
  await browser.close();
  app.close();
}
process.stdout.write(`@@RESULT@@ ${JSON.stringify(result)}\n`);
process.exit(0);
