// The invite page in a real browser: Debian's Chromium driven by playwright-core (no browser download).
// Usage: node invite.mjs <scenario.json>   (written by tests/e2e/test_invite_page.py)
// The scenario names the invite links, the accounts to create and where screenshots go; the script
// prints one JSON object with what it saw, which the Python test asserts on.
import { readFileSync } from "node:fs";
import path from "node:path";
import { chromium } from "playwright-core";

const scenario = JSON.parse(readFileSync(process.argv[2], "utf8"));
const FLAGS = [
  "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
  "--disable-background-networking", "--disable-component-update", "--disable-sync",
];
const VIEWPORTS = {
  phone: {
    viewport: { width: 390, height: 844 }, isMobile: true, hasTouch: true, deviceScaleFactor: 2,
    userAgent: "Mozilla/5.0 (Linux; Android 14; Pixel 8) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/150.0 Mobile Safari/537.36",
  },
  desktop: { viewport: { width: 1280, height: 800 } },
};

// launch() gives Chromium a fresh temporary profile (--user-data-dir) and removes it on close
const browser = await chromium.launch({ executablePath: scenario.chromium, args: FLAGS, headless: true });
const result = { signups: [], statuses: [] };

async function shot(page, name) {
  await page.screenshot({ path: path.join(scenario.artifacts, `${name}.png`), fullPage: true });
}

async function layout(page) {
  // nothing wider than the window (no sideways scrolling on a phone); every input has a label
  return page.evaluate(() => ({
    overflow: document.documentElement.scrollWidth - window.innerWidth,
    unlabelled: [...document.querySelectorAll("input:not([type=hidden])")]
      .filter(i => !(i.labels && i.labels.length)).map(i => i.name),
    lang: document.documentElement.lang,
    h1: document.querySelector("h1")?.textContent.trim(),
  }));
}

try {
  for (const signup of scenario.signups) {
    // pages must work without JavaScript: the contexts have it switched off
    const context = await chromiumContext(signup.device);
    const page = await context.newPage();
    const response = await page.goto(signup.link);
    const before = { status: response.status(), ...(await layout(page)) };
    before.platform = await page.getAttribute("ul.apps", "data-platform");
    before.hasQr = await page.locator("svg.qr").count();
    await shot(page, `${signup.device}-1-invite`);
    await page.getByLabel("Username").fill(signup.username);
    await page.getByLabel("Password", { exact: true }).fill(signup.password);
    await page.getByLabel("Password again").fill(signup.password);
    await shot(page, `${signup.device}-2-filled`);
    const [done] = await Promise.all([
      page.waitForNavigation(),
      page.getByRole("button", { name: "Create account" }).click(),
    ]);
    const after = {
      status: done.status(),
      ...(await layout(page)),
      homeserverUrl: (await page.textContent("#homeserver-url"))?.trim(),
      text: (await page.textContent("main"))?.replace(/\s+/g, " ").trim(),
    };
    await shot(page, `${signup.device}-3-signed-up`);
    result.signups.push({ device: signup.device, before, after });
    await context.close();
  }
  for (const visit of scenario.visits) {
    const context = await chromiumContext(visit.device);
    const page = await context.newPage();
    const response = await page.goto(visit.link);
    const status = await page.getAttribute("h1", "data-status");
    result.statuses.push({ name: visit.name, http: response.status(), status, ...(await layout(page)) });
    await shot(page, `${visit.device}-${visit.name}`);
    await context.close();
  }
} finally {
  await browser.close();
}
console.log(JSON.stringify(result));

async function chromiumContext(device) {
  return browser.newContext({ javaScriptEnabled: false, ...VIEWPORTS[device] });
}
