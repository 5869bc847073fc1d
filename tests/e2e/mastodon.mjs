// Log in with Mastodon in a real browser: our /login/sso/redirect/{idpId} (the client's Mastodon
// button) -> the Mastodon server's authorize page (log in, press "Authorize") -> our callback ->
// our confirmation page -> the client's redirectUrl with a loginToken.
// Usage: node mastodon.mjs <scenario.json> ; prints one JSON array with an object per login, in order.
import { readFileSync } from "node:fs";
import path from "node:path";
import { chromium } from "playwright-core";

const scenario = JSON.parse(readFileSync(process.argv[2], "utf8"));
const FLAGS = [
  "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync",
];
const text = async (page, selector) => (await page.textContent(selector))?.replace(/\s+/g, " ").trim();
const browser = await chromium.launch({ executablePath: scenario.chromium, args: FLAGS, headless: true });
const results = [];
try {
  for (const [i, login] of scenario.logins.entries()) {
    const context = await browser.newContext({ viewport: { width: 390, height: 844 }, isMobile: true });
    // the client: nothing listens there; the browser's arrival is what we want to see
    await context.route(`${scenario.clientUrl}**`, route => route.fulfill({ body: "client", contentType: "text/plain" }));
    const page = await context.newPage();
    await page.goto(scenario.loginUrl);
    const authorize = { url: page.url(), h1: await text(page, "h1"), text: await text(page, "main") };
    await page.fill("input[name=username]", login.username);
    await page.fill("input[name=password]", "anything");
    await page.screenshot({ path: path.join(scenario.artifacts, `${i}-mastodon-authorize.png`) });
    await Promise.all([page.waitForNavigation(), page.click(`button[value=${login.decision ?? "allow"}]`)]);
    const landed = { url: page.url(), h1: await text(page, "h1"), text: await text(page, "main") };
    await page.screenshot({ path: path.join(scenario.artifacts, `${i}-landed.png`), fullPage: true });
    let loginToken = null;
    if (await page.locator("#continue").count()) {
      await Promise.all([page.waitForURL(`${scenario.clientUrl}**`), page.click("#continue")]);
      loginToken = new URL(page.url()).searchParams.get("loginToken");
    }
    results.push({ username: login.username, authorize, landed, loginToken });
    await context.close();
  }
} finally {
  await browser.close();
}
console.log(JSON.stringify(results));
