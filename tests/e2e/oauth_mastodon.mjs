// Sign-in through the OAuth 2.0 authorize page with a Mastodon server, in Chromium: our sign-in page's
// Mastodon button -> the Mastodon server's authorize page (log in, "Authorize") -> our SSO callback ->
// our consent page naming the client -> the client's redirect URI with the code. A refused Mastodon
// account ends on our page saying why, with a way back to the sign-in page. One browser, a fresh
// context (no cookies) per sign-in.
// Usage: node oauth_mastodon.mjs <scenario.json> ; prints one JSON array, an object per sign-in:
// {signIn, mastodon, consent and redirect | refused and back}.
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
  for (const [i, flow] of scenario.flows.entries()) {
    const shot = (name) => page.screenshot({ path: path.join(scenario.artifacts, `${i}-${name}.png`), fullPage: true });
    const context = await browser.newContext({ viewport: { width: 390, height: 844 }, isMobile: true });
    const page = await context.newPage();
    const out = { username: flow.username };
    await page.goto(flow.authorizeUrl);
    out.signIn = { h1: await text(page, "h1"), buttons: await page.locator("p.sso a").allTextContents() };
    await shot("sign-in");
    await Promise.all([page.waitForNavigation(), page.click(`p.sso a:has-text("${scenario.providerName}")`)]);
    out.mastodon = { url: page.url(), h1: await text(page, "h1") };
    await page.fill("input[name=username]", flow.username);
    await page.fill("input[name=password]", "anything");
    await shot("mastodon-authorize");
    await Promise.all([page.waitForNavigation(), page.click("button[value=allow]")]);
    if (await page.locator("#allow").count()) {
      out.consent = { url: page.url(), h1: await text(page, "h1"), text: await text(page, "main") };
      await shot("consent");
      // the browser goes on to the app's private-use scheme (nothing handles it here): that URL carries the code
      const opened = page.waitForEvent("request", (r) => r.url().startsWith(scenario.redirectPrefix));
      await page.click("#allow");
      out.redirect = (await opened).url();
    } else {
      out.refused = { url: page.url(), h1: await text(page, "h1"), text: await text(page, "main") };
      await shot("refused");
      if (await page.locator("#back").count()) {  // the way back to our sign-in page, to try another way
        await Promise.all([page.waitForNavigation(), page.click("#back")]);
        out.back = { h1: await text(page, "h1"), text: await text(page, "main") };
        await shot("back-to-sign-in");
      }
    }
    results.push(out);
    await context.close();
  }
} finally {
  await browser.close();
}
console.log(JSON.stringify(results));
