// User-interactive auth by single sign-on in a real browser, the way a web client does it (spec: UIA
// "Fallback"): the client's page opens our /auth/m.login.sso/fallback/web in a popup and listens for
// "authDone"; in the popup, our confirmation page -> oidc-provider's login (and consent) pages -> our
// callback -> the done page, whose script posts "authDone" to the opener.
// Usage: node uia_sso.mjs <scenario.json> ; prints one JSON object.
import { readFileSync } from "node:fs";
import path from "node:path";
import { chromium } from "playwright-core";

const scenario = JSON.parse(readFileSync(process.argv[2], "utf8"));
const FLAGS = [
  "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync",
];
const shot = (page, name) => page.screenshot({ path: path.join(scenario.artifacts, `${name}.png`), fullPage: true });
const text = async page => (await page.textContent("main"))?.replace(/\s+/g, " ").trim();

const browser = await chromium.launch({ executablePath: scenario.chromium, args: FLAGS, headless: true });
let result;
try {
  const context = await browser.newContext({ viewport: { width: 390, height: 844 }, isMobile: true });
  // the client: a page of its own origin that opens the fallback and waits for the message
  const client = `${scenario.clientUrl}`;
  await context.route(`${client}**`, route => route.fulfill({
    contentType: "text/html",
    body: "<!doctype html><title>client</title><script>window.messages = [];"
      + "addEventListener('message', e => window.messages.push({ data: e.data, origin: e.origin }));</script>",
  }));
  const app = await context.newPage();
  await app.goto(client);
  const [popup] = await Promise.all([
    context.waitForEvent("page"),
    app.evaluate(url => { window.open(url, "uia"); }, scenario.fallbackUrl),
  ]);
  await popup.waitForLoadState();
  const confirm = { h1: (await popup.textContent("h1"))?.trim(), text: await text(popup) };
  await shot(popup, "0-confirm");
  await Promise.all([popup.waitForNavigation(), popup.click(`text=${scenario.continueText}`)]);
  await popup.fill("input[name=login]", scenario.subject);
  await popup.fill("input[name=password]", "anything");
  await shot(popup, "1-provider-login");
  await Promise.all([popup.waitForNavigation(), popup.click("button[type=submit]")]);
  if (await popup.locator("button[type=submit]").count()) {  // the provider's consent page
    await shot(popup, "2-provider-consent");
    await Promise.all([popup.waitForNavigation(), popup.click("button[type=submit]")]);
  }
  const done = { url: popup.url(), h1: (await popup.textContent("h1"))?.trim(), text: await text(popup) };
  await shot(popup, "3-done");
  await app.waitForFunction(() => window.messages.length > 0, null, { timeout: 10000 }).catch(() => {});
  const messages = await app.evaluate(() => window.messages);
  result = { confirm, done, messages };
  await context.close();
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));
