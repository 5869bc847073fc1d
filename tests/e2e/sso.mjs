// Single sign-on in a real browser: our /login/sso/redirect -> oidc-provider's login and consent
// pages -> our callback -> our confirmation page -> the client's redirectUrl with a loginToken.
// Usage: node sso.mjs <scenario.json> ; prints one JSON object per login, in order.
import { readFileSync } from "node:fs";
import path from "node:path";
import { chromium } from "playwright-core";

const scenario = JSON.parse(readFileSync(process.argv[2], "utf8"));
const FLAGS = [
  "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync",
];
const browser = await chromium.launch({ executablePath: scenario.chromium, args: FLAGS, headless: true });
const results = [];
try {
  for (const [i, login] of scenario.logins.entries()) {
    const context = await browser.newContext({ viewport: { width: 390, height: 844 }, isMobile: true });
    // the client: nothing listens there; the browser's arrival is what we want to see
    await context.route(`${scenario.clientUrl}**`, route => route.fulfill({ body: "client", contentType: "text/plain" }));
    const page = await context.newPage();
    await page.goto(scenario.loginUrl);
    await page.fill("input[name=login]", login.subject);
    await page.fill("input[name=password]", "anything");
    await page.screenshot({ path: path.join(scenario.artifacts, `${i}-provider-login.png`) });
    await Promise.all([page.waitForNavigation(), page.click("button[type=submit]")]);
    if (await page.locator("button[type=submit]").count()) {  // the provider's consent page
      await Promise.all([page.waitForNavigation(), page.click("button[type=submit]")]);
    }
    const confirm = { url: page.url(), h1: (await page.textContent("h1"))?.trim(), text: (await page.textContent("main"))?.replace(/\s+/g, " ").trim() };
    await page.screenshot({ path: path.join(scenario.artifacts, `${i}-confirm.png`), fullPage: true });
    await Promise.all([page.waitForURL(`${scenario.clientUrl}**`), page.click("#continue")]);
    const arrived = new URL(page.url());
    results.push({ subject: login.subject, confirm, loginToken: arrived.searchParams.get("loginToken") });
    await context.close();
  }
} finally {
  await browser.close();
}
console.log(JSON.stringify(results));
