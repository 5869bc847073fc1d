// Sign-in through the OAuth 2.0 authorize page with an upstream provider, in Chromium: our sign-in
// page's provider button -> oidc-provider's login and consent pages -> our SSO callback -> our consent
// page naming the client -> the client's loopback redirect with the code.
// Usage: node oauth_sso.mjs <scenario.json> ; prints one JSON line: {signIn, consent, redirect}.
import { readFileSync } from "node:fs";
import path from "node:path";
import { chromium } from "playwright-core";

const scenario = JSON.parse(readFileSync(process.argv[2], "utf8"));
const FLAGS = [
  "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync",
];
const browser = await chromium.launch({ executablePath: scenario.chromium, args: FLAGS, headless: true });
const out = {};
try {
  const context = await browser.newContext({ viewport: { width: 390, height: 844 }, isMobile: true });
  const page = await context.newPage();
  await page.goto(scenario.authorizeUrl);
  out.signIn = { h1: (await page.textContent("h1"))?.trim(), buttons: await page.locator("p.sso a").allTextContents() };
  await page.screenshot({ path: path.join(scenario.artifacts, "1-sign-in.png"), fullPage: true });
  await Promise.all([page.waitForNavigation(), page.click(`text=${scenario.providerName}`)]);
  await page.fill("input[name=login]", scenario.subject);
  await page.fill("input[name=password]", "anything");
  await Promise.all([page.waitForNavigation(), page.click("button[type=submit]")]);
  if (!(await page.locator("#allow").count())) {  // the provider's own consent page
    await Promise.all([page.waitForNavigation(), page.click("button[type=submit]")]);
  }
  await page.waitForSelector("#allow");
  out.consent = { h1: (await page.textContent("h1"))?.trim(), text: (await page.textContent("main"))?.replace(/\s+/g, " ").trim() };
  await page.screenshot({ path: path.join(scenario.artifacts, "2-consent.png"), fullPage: true });
  // the loopback client is not listening: the attempted navigation carries the code
  const failed = page.waitForEvent("requestfailed", (r) => r.url().startsWith(scenario.redirectPrefix));
  await page.click("#allow");
  out.redirect = (await failed).url();
  await context.close();
} finally {
  await browser.close();
}
console.log(JSON.stringify(out));
